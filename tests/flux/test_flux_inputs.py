"""Inputs of the flux app: namelists, configs, maps, and clear errors for bad ones."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from flux_helpers import SUITE, reference, suite
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from hpcml.apps.flux import config_from_hipft, run
from hpcml.apps.flux.grid import SphereGrid
from hpcml.apps.flux.history import NUM_COLUMNS, SOL_COLUMNS, fortran_e, num_line, sol_line
from hpcml.config import ConfigError, load_config


def flux_config(tmp_path, *overrides):
    cfg = load_config(None, ["app=flux", *overrides])
    cfg["output"].update(directory=str(tmp_path), maps="")
    return cfg


def write_map(path, data, t=None, p=None):
    nt, nf = data.shape[-2:]
    t = np.linspace(0, math.pi, nt) if t is None else t
    p = np.linspace(0, 2 * math.pi, nf) if p is None else p
    with h5py.File(path, "w") as fh:
        fh["Data"] = data
        fh["dim1"] = p
        fh["dim2"] = t
    return path


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["realizations.n=3", "flow.mf_p1=[22.0]", "diffusion.coef=[1.0, 2.0]"], r"diffusion.coef has 2 values"),
        (["realizations.n=2", "flow.dr_p0=[1.0, 2.0, 3.0]", "flow.mf_p1=[22.0]"], r"flow.dr_p0 has 3 values"),
        (["diffusion.coef=[-5.0]"], r"diffusion.coef must be >= 0 km\^2/s; realization 1 has -5.0"),
        (['initial.kind="map"'], r"needs grid.map"),
        (['flow.scheme="weno5"'], r"flow.scheme = 'weno5' is not one of"),
        (["time.end=-1.0"], r"time.end .* must be after time.start"),
        (["grid.res_nt=2"], r"grid.res_nt >= 3"),
        (["decomposition.dims=[3, 0]"], r"decomposition.dims"),
        (["run.backend='tpu'"], r"run.backend = 'tpu' is not one of auto, cpu, gpu, sim"),
        (["run.backend='sim'"], r"run.backend = 'sim' needs NUMBA_ENABLE_CUDASIM=1"),
        (["run.backend='gpu'"], r"run.backend = 'gpu' but CuPy sees no CUDA device"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run(flux_config(tmp_path, *overrides), MPI.COMM_SELF)


def test_unknown_key_rejected_by_schema():
    with pytest.raises(ConfigError, match=r"unknown key 'flow\.atenuate'"):
        load_config(None, ["app=flux", "flow.atenuate=true"])


def test_bad_maps(tmp_path):
    good = np.ones((30, 61))
    cases = {
        "missing": (None, "does not exist"),
        "garbage": (b"not an hdf5 file", "not a readable HDF5 file"),
        "short_theta": (
            write_map(tmp_path / "st.h5", good, t=np.linspace(0, 3.0, 30)),
            "theta scale must run from 0 to pi",
        ),
        "scales": (write_map(tmp_path / "sc.h5", good, t=np.linspace(0, math.pi, 29)), "scales have 29 theta"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.h5"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path = content
        cfg = flux_config(tmp_path, f"grid.map={path}", 'initial.kind="map"', "grid.res_nt=0", "grid.res_np=0")
        with pytest.raises(ConfigError, match=message):
            run(cfg, MPI.COMM_SELF)


def test_map_grid_must_match_res(tmp_path):
    path = write_map(tmp_path / "m.h5", np.ones((30, 61)))
    cfg = flux_config(tmp_path, f"grid.map={path}", 'initial.kind="map"', "grid.res_nt=31", "grid.res_np=61")
    with pytest.raises(ConfigError, match=r"is 30 x 61 .* but grid.res_nt x res_np = 31 x 61"):
        run(cfg, MPI.COMM_SELF)


def test_3d_map_needs_one_slice_per_realization(tmp_path):
    path = write_map(tmp_path / "m3.h5", np.ones((3, 30, 61)))
    cfg = flux_config(tmp_path, f"grid.map={path}", 'initial.kind="map"', "grid.res_nt=0", "grid.res_np=0")
    with pytest.raises(ConfigError, match=r"holds 3 realizations but realizations\.n = 2"):
        run(cfg, MPI.COMM_SELF)


def test_nonfinite_map_values(tmp_path):
    data = np.ones((30, 61))
    data[5, 7] = np.nan
    path = write_map(tmp_path / "nan.h5", data)
    cfg = flux_config(tmp_path, f"grid.map={path}", 'initial.kind="map"', "grid.res_nt=0", "grid.res_np=0")
    with pytest.raises(ValueError, match="non-finite"):
        run(cfg, MPI.COMM_SELF)


def _namelist(tmp_path, body):
    p = tmp_path / "hipft.in"
    p.write_text("&hipft_input_parameters\n" + body + "\n/\n")
    return p


def test_namelist_errors_name_the_options(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown HipFT option.*: flow_wobble"):
        config_from_hipft(_namelist(tmp_path, "res_nt=10\nres_np=20\nvalidation_run=1\nflow_wobble = 3"))
    with pytest.raises(ConfigError, match=r"output_map_time_cadence and output_map_idx_cadence cannot both be set"):
        config_from_hipft(
            _namelist(tmp_path, "validation_run=1\noutput_map_time_cadence=2.0\noutput_map_idx_cadence=3")
        )
    with pytest.raises(ConfigError, match="does not exist"):
        config_from_hipft(tmp_path / "nope.in")
    with pytest.raises(ConfigError, match=r"flow_dr_coef_p0_values has 3 values but n_realizations = 2"):
        config_from_hipft(_namelist(tmp_path, "validation_run=1\nn_realizations=2\nflow_dr_coef_p0_values=1,2,3"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('advance_flow = "false"', r"advance_flow = 'false' must be a logical"),
        ("n_realizations = 2.7", r"n_realizations = 2.7 must be an integer"),
        ('res_nt = "abc"', r"res_nt = 'abc' must be an integer"),
        ("time_end = .true.", r"time_end = True must be a real number"),
        ("initial_map_filename = 5", r"initial_map_filename = 5 must be a string in quotes"),
        ("flow_attenuate_values = 1., 'x'", r"flow_attenuate_values = \[1.0, 'x'\] must be a real number or a list"),
        ("time_end = 1., 2.", r"time_end = \[1.0, 2.0\] must be a real number, not a list"),
        ("verbose = .true.", r"verbose = True must be an integer"),
    ],
)
def test_namelist_types_are_checked(tmp_path, line, message):
    """f90nml reads anything; HipFT's Fortran reader would refuse these: so do we, naming the option."""
    with pytest.raises(ConfigError, match=message):
        config_from_hipft(_namelist(tmp_path, f"validation_run=1\nres_nt=20\nres_np=40\n{line}"))


def test_namelist_type_errors_are_all_listed(tmp_path):
    body = 'validation_run=1\nadvance_flow="false"\nn_realizations=2.7\nres_nt="abc"'
    with pytest.raises(ConfigError) as err:
        config_from_hipft(_namelist(tmp_path, body))
    assert all(name in str(err.value) for name in ("advance_flow", "n_realizations", "res_nt"))


def test_namelist_reals_accept_integers(tmp_path):
    cfg = config_from_hipft(_namelist(tmp_path, "validation_run=1\nres_nt=20\nres_np=40\ntime_end=3\ndt_max=1"))
    assert cfg["time"]["end"] == 3.0 and isinstance(cfg["time"]["end"], float)


def test_namelist_per_realization_defaults(tmp_path):
    cfg = config_from_hipft(
        _namelist(
            tmp_path,
            "validation_run=1\nres_nt=20\nres_np=40\nn_realizations=3\nflow_attenuate_value=300.\n"
            "flow_attenuate_values=100.,-1.\ndiffusion_coef_constant=7.\ndiffusion_coef_constants(3)=9.\n"
            "flow_dr_coef_p2_values=-5.,-200000.\nflow_num_method=2\ndiffusion_num_method=2\nverbose=2\ndt_max=0.5",
        )
    )
    assert cfg["flow"]["attenuate_values"] == [100.0, 300.0, 300.0]
    assert cfg["diffusion"]["coef"] == [7.0, 7.0, 9.0]
    assert cfg["flow"]["dr_p2"] == [-5.0, -262.0, -262.0]  # DR/MF fall back only below -100000
    assert (cfg["flow"]["time_scheme"], cfg["flow"]["scheme"], cfg["diffusion"]["method"]) == (
        "ssprk33",
        "upwind",
        "rkl2",
    )
    assert cfg["output"]["subcycle_rows"] and cfg["time"]["dt_max"] == 0.5
    assert cfg["initial"]["kind"] == "soccer"


def test_suite_namelists_map_to_configs():
    suite()
    cfg = config_from_hipft(SUITE / "diffuse_advect_atten_map_1cr" / "input" / "hipft.in")
    assert cfg["realizations"]["n"] == 5
    assert cfg["flow"]["dr_p0"] == [41.4, 46.0, 50.6, 46.0, 46.0]
    assert cfg["flow"]["mf_p5"] == [-28.0, -28.0, -28.0, -30.8, -25.2]
    assert cfg["flow"]["attenuate_values"] == [300.0] * 5
    assert cfg["diffusion"]["coef"] == [25.0] * 5
    assert cfg["output"]["history_cadence"] == 0.5 and cfg["output"]["map_cadence"] == 100.0
    assert cfg["grid"]["map"].endswith("cr2252_pslt_flxbal_remeshed_small.h5")
    dip = config_from_hipft(SUITE / "diffuse_dipole" / "input" / "hipft.in")
    assert dip["time"]["dt_max"] == 0.0 and dip["flow"]["advance"] is False


# -- formats and grid -------------------------------------------------------------------
def test_history_lines_reproduce_hipft_text():
    """Re-formatting the reference numbers gives HipFT's lines byte for byte."""
    suite()
    for case, kind in (("diffuse_dipole", "sol"), ("diffuse_advect_atten_map_1cr", "num")):
        path = SUITE / case / "reference" / f"hipft_history_{kind}_r000001.out"
        lines = path.read_text().splitlines(keepends=True)
        header = f"{'STEP':>10}" + "".join(f"{n:>23}" for n in (SOL_COLUMNS if kind == "sol" else NUM_COLUMNS)[1:])
        assert lines[0] == header + " \n"
        _, rows = reference(case, 1, kind)
        for line, row in zip(lines[1:40], rows):
            if kind == "sol":
                assert sol_line(int(row[0]), row[1], row[2:]) == line
            else:
                assert num_line(int(row[0]), row[1], row[2:6], [int(v) for v in row[6:]]) == line
    assert fortran_e(-1.378037984328386) == "-1.378037984328386E+000"
    assert fortran_e(1.320775901413687e-215) == " 1.320775901413687E-215"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -0.0, 1e-99, -1e-100, 9.999999999999999e99, 1e100, 5e-324]),
        ),
        min_size=1,
        max_size=16,
    )
)
def test_history_fast_formatting_equals_fortran_e(values):
    """A row formatted in one pass is the row of per-value ``fortran_e`` fields (3-digit exponents, NaN, inf)."""
    want = "".join(" " + fortran_e(v) for v in values)
    assert sol_line(3, values[0], values[1:]) == f"{3:10d}{want}\n"
    assert sol_line(3, values[0], np.array(values[1:])) == f"{3:10d}{want}\n"
    assert num_line(3, values[0], values[1:], [7, 8]) == f"{3:10d}{want}{7:16d}{8:16d}\n"


def test_generated_grid_follows_hipft():
    g = SphereGrid.uniform(180, 360)
    assert g.p[360] == 359 * (6.2831853071795864 / 359) and g.p[360] != 2 * math.pi
    assert g.M == 361 and g.Np == 359
    assert g.p[g.M] == g.p[2] + 6.2831853071795864
    assert g.ct[g.Nt] == 1.0 and g.st[1] == 0.0 and g.sth[g.nt] < 0
    # dA sums to 4 pi (trapezoid in phi, cap quarter-cells at the poles)
    area = math.fsum(g.w_t[1 : g.Nt + 1]) * math.fsum(g.w_p[2 : g.M])
    assert area == pytest.approx(4 * math.pi, rel=1e-4)
