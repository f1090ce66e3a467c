"""The field's own readers open what hpcml writes: xarray (h5netcdf) and VTK's XDMF reader.

Run under ``mpiexec -n 1..4`` (``--with-mpi``): the file is written by every rank
(both write paths where available, uneven splits), then rank 0 opens it as a
user would and compares coordinates and every value with the global arrays.
Layouts: as written, consolidated into one file, and appended to by a second
session on another process grid.
"""

from __future__ import annotations

import numpy as np
import pytest
from io_helpers import assert_all, drivers, field_value, global_value

from hpcml import CartDecomp, DistArray
from hpcml.io import Output, consolidate

pytestmark = pytest.mark.mpi

SHAPE = (7, 6)  # (y, x): uneven on 2, 3 and 4 ranks
MAP = (2, 5, 8)  # (realization, lat, lon)
LAT = np.array([84.0, 60.0, 10.0, -36.0, -82.0])  # not uniform, north first
LON = np.arange(8) * 45.0 + 22.5
X = (np.arange(6) + 0.5) / 6
Y = (np.arange(7) + 0.5) / 7


def _write(path, comm, driver, steps, mode, dims=None, iterations=range(3)):
    from mpi4py import MPI

    d = CartDecomp(SHAPE, comm, dims=dims)
    dm = CartDecomp(MAP, comm, dims=(1, *MPI.Compute_dims(comm.Get_size(), 2)))  # realizations on every rank
    coords = {"y": (Y, {"units": "m"}), "x": (X, {"units": "m"})}
    geo = {
        "realization": np.array([1, 2]),
        "lat": (LAT, {"units": "degrees_north", "axis": "Y"}),
        "lon": (LON, {"units": "degrees_east", "axis": "X"}),
    }
    with Output(path, comm, mode=mode, driver=driver, time_units="hours") as out:
        for s in steps:
            u = DistArray.from_global(d, field_value(SHAPE, s))
            out.write("u", u, step=s, time=1.5 * s, units="K", long_name="temperature", coords=coords)
            out.write_scalar("norm", float(s), step=s, time=1.5 * s, units="K")
            b = DistArray.from_global(dm, field_value(MAP, s))
            out.write("br", b, step=s, time=1.5 * s, units="G", dims=("realization", "lat", "lon"), coords=geo)
        out.write("mask", DistArray.from_global(d, field_value(SHAPE, 99)), coords=coords)  # static
        for it in iterations:
            out.write_scalar("residual", 10.0**-it, step=it, axis="iteration")
    d.free()
    dm.free()


def _check_xarray(path, steps):
    import xarray as xr

    problems = []
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        want_dims = {"time": len(steps), "y": 7, "x": 6, "realization": 2, "lat": 5, "lon": 8, "iteration": 3}
        if dict(ds.sizes) != want_dims:
            problems.append(f"dims {dict(ds.sizes)}")
        if ds.u.dims != ("time", "y", "x") or ds.br.dims != ("time", "realization", "lat", "lon"):
            problems.append(f"u {ds.u.dims}, br {ds.br.dims}")
        if ds.mask.dims != ("y", "x") or ds.residual.dims != ("iteration",) or ds.norm.dims != ("time",):
            problems.append("static / iteration / scalar dims")
        if list(ds.step.values) != list(steps) or not np.allclose(ds.time.values, 1.5 * np.array(steps)):
            problems.append(f"time axis {ds.time.values} steps {ds.step.values}")
        checks = [
            (ds.time.attrs.get("units"), "hours"),
            (ds.u.attrs.get("units"), "K"),
            (ds.u.attrs.get("long_name"), "temperature"),
            (ds.lat.attrs.get("units"), "degrees_north"),
            (ds.x.attrs.get("units"), "m"),
            (ds.attrs.get("Conventions"), "CF-1.8"),
        ]
        problems += [f"attribute {got!r} != {want!r}" for got, want in checks if got != want]
        if not (np.allclose(ds.x, X) and np.allclose(ds.lat, LAT) and np.allclose(ds.lon, LON)):
            problems.append("coordinate values")
        if "step" not in ds.coords or any(str(d).startswith("phony") for d in ds.dims):
            problems.append(f"coords {list(ds.coords)}")
        for i, s in enumerate(steps):
            if not np.array_equal(ds.u.isel(time=i).values, global_value(SHAPE, s)):
                problems.append(f"u at step {s}")
            if not np.array_equal(ds.br.sel(time=1.5 * s).values, global_value(MAP, s)):
                problems.append(f"br at step {s}")
        if not np.array_equal(ds.mask.values, global_value(SHAPE, 99)) or list(ds.residual.values) != [1, 0.1, 0.01]:
            problems.append("static field or iteration series")
    return problems


def _check_vtk(xmf, steps):
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline
    from vtkmodules.vtkIOXdmf2 import vtkXdmfReader

    problems = []
    reader = vtkXdmfReader()
    reader.SetFileName(str(xmf))
    reader.UpdateInformation()
    times = reader.GetOutputInformation(0).Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS())
    if not times or not np.allclose(times, 1.5 * np.array(steps)):
        return [f"time steps {times}"]
    for i, t in enumerate(times):
        reader.UpdateTimeStep(t)
        out = reader.GetOutputDataObject(0)
        blocks = {out.GetMetaData(b).Get(out.NAME()): out.GetBlock(b) for b in range(out.GetNumberOfBlocks())}
        u = blocks.get("u")
        if u is None or u.GetDimensions() != (6, 7, 1):
            problems.append(f"u grid at t={t}: blocks {sorted(blocks)}")
            continue
        if not (np.allclose(u.GetOrigin()[:2], (X[0], Y[0])) and np.allclose(u.GetSpacing()[:2], (1 / 6, 1 / 7))):
            problems.append(f"u geometry {u.GetOrigin()} {u.GetSpacing()}")
        values = vtk_to_numpy(u.GetPointData().GetArray("u")).reshape(7, 6)  # x fastest
        if not np.array_equal(values, global_value(SHAPE, steps[i])):
            problems.append(f"u values at t={t}")
        for r in (1, 2):
            g = blocks.get(f"br realization {r}")
            if g is None:
                problems.append(f"no grid for realization {r}: {sorted(blocks)}")
                continue
            gx, gy = vtk_to_numpy(g.GetXCoordinates()), vtk_to_numpy(g.GetYCoordinates())
            if not (np.allclose(gx, LON) and np.allclose(gy, LAT)):
                problems.append(f"br geometry realization {r}")
            v = vtk_to_numpy(g.GetPointData().GetArray("br")).reshape(5, 8)
            if not np.array_equal(v, global_value(MAP, steps[i])[r - 1]):
                problems.append(f"br values realization {r} at t={t}")
    return problems


@pytest.mark.parametrize("driver", drivers())
@pytest.mark.parametrize("layout", ["written", "consolidated", "appended"])
def test_xarray_and_vtk_read_what_was_written(io_dir, comm, driver, layout):
    path = io_dir / "out.h5"
    steps = [0, 2, 4]
    if layout == "appended":  # a second session on another process grid extends the series
        _write(path, comm, driver, steps[:2], "w", dims=(comm.Get_size(), 1), iterations=range(2))
        _write(path, comm, driver, steps[2:], "a", dims=(1, comm.Get_size()), iterations=range(2, 3))
    else:
        _write(path, comm, driver, steps, "w")
    if layout == "consolidated":
        consolidate(path, comm=comm)
    problems = []
    if comm.Get_rank() == 0:
        problems = _check_xarray(path, steps)
        problems += _check_vtk(path.with_suffix(".xmf"), steps)
    assert_all(comm, not problems, f"{layout}/{driver}: {problems}")
