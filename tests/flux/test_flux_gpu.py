"""The flux solver's GPU path against its CPU path, on reduced HipFT cases, on 1-4 ranks.

Runs in Numba's CUDA simulator (``make test-sim``: ``NUMBA_ENABLE_CUDASIM=1``, the fields
are Numba-CUDA device arrays in host memory, ``run.backend = "sim"``) and, on a GPU
machine, on CuPy arrays (``run.backend = "gpu"``, ``tests/gpu/run_device_checks.sh``).
Each case runs twice on the same ranks and split -- CPU kernels, then GPU kernels with
the halos through the ``staged``/``device`` paths -- and every history row of every
realization must agree to 1e-12 relative (sums to 1e-13 of the unsigned flux).  The
cases are the HipFT cases shrunk to a few steps on grids of 8-20 cells a side (the
simulator runs a Python thread per GPU thread), plus one case with every input file
option (flow files, a diffusivity map with the grid term, a static source, Strang
splitting) and random flux emergence.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from flux_helpers import SUITE, assert_all, compare_histories, write_field

from hpcml.apps.flux import config_from_hipft, run
from hpcml.backend import simulator_enabled

pytestmark = [pytest.mark.mpi, pytest.mark.numba_cuda, pytest.mark.timeout(1200)]

BACKEND = "sim" if simulator_enabled() else "gpu"
# The simulator runs the kernels' arithmetic in Python, operation for operation as the CPU
# kernels; a real GPU contracts multiply-adds into FMAs and has its own exp: 1e-10 there.
RTOL, FLOOR = (1e-12, 1e-13) if BACKEND == "sim" else (1e-10, 1e-12)


def _coarse_map(src: Path, dst: Path, shape: tuple[int, int]) -> Path:
    """``shape`` nodes picked evenly from a HipFT map (both poles and both seam columns kept)."""
    with h5py.File(src) as fh:
        data, p, t = fh["Data"][...], fh["dim1"][...], fh["dim2"][...]
    rows = np.round(np.linspace(0, len(t) - 1, shape[0])).astype(int)
    cols = np.round(np.linspace(0, len(p) - 1, shape[1])).astype(int)
    return write_field(dst, np.ascontiguousarray(data[np.ix_(rows, cols)]), t[rows], p[cols])


def _suite_case(case: str, folder: Path, end: float, res: tuple[int, int] | None = None, coarse: bool = False) -> dict:
    cfg = config_from_hipft(SUITE / case / "input" / "hipft.in")
    if res:
        cfg["grid"].update(res_nt=res[0], res_np=res[1])
    if coarse:
        cfg["grid"]["map"] = str(_coarse_map(Path(cfg["grid"]["map"]), folder / "coarse.h5", (14, 25)))
    cfg["time"]["end"] = end
    return cfg


def _all_inputs(folder: Path) -> dict:
    """8 x 16 grid, 2 realizations: flow files, diffusivity map + grid term, static source, emergence, Strang."""
    from hpcml.apps.flux.grid import SphereGrid

    nt, nf = 8, 16
    g = SphereGrid.uniform(nt, nf)
    th, ph, t, p = g.th[1 : g.nt + 1], g.ph[1 : g.M + 1], g.t[1 : nt + 1], g.p[1 : nf + 1]
    rows = ["TIME VT VP"]
    for n in range(3):
        vt = 300.0 * (1 + n) * np.sin(2 * th)[:, None] * np.cos(p - 0.5 * n)[None, :]
        vp = 400.0 * np.sin(t)[:, None] * np.cos(2 * ph + n)[None, :]
        vt[:, -1] = vt[:, 0]
        vp[:, 0], vp[:, -1] = vp[:, -2], vp[:, 1]
        write_field(folder / f"vt{n}.h5", vt, th, p)
        write_field(folder / f"vp{n}.h5", vp, t, ph)
        rows.append(f"{0.02 * n:.5f} vt{n}.h5 vp{n}.h5")
    (folder / "flows.csv").write_text("\n".join(rows) + "\n")
    tf, pf = np.linspace(0, math.pi, 7), np.linspace(0, 2 * math.pi, 13)
    write_field(folder / "d.h5", 100.0 + 50.0 * np.outer(np.sin(tf), np.cos(pf)), tf, pf)
    write_field(folder / "s.h5", 2.0 * np.outer(np.sin(tf) ** 2, np.sin(pf)), tf, pf)
    tt, pp = np.meshgrid(t, p, indexing="ij")
    br = 50.0 * np.cos(tt) + 200.0 * np.exp(-(((tt - 1.2) / 0.4) ** 2 + ((pp - 2.0) / 0.6) ** 2))
    br[:, -1] = br[:, 0]
    write_field(folder / "br.h5", br, t, p)
    nml = folder / "hipft.in"
    nml.write_text(
        "&hipft_input_parameters\n initial_map_filename = 'br.h5'\n n_realizations = 2\n"
        " time_end = 0.8\n dt_max = 0.4\n strang_splitting = .true.\n advance_flow = .true.\n"
        " use_flow_from_files = .true.\n flow_list_filename = 'flows.csv'\n flow_mf_model = 1\n"
        " flow_attenuate = .true.\n flow_attenuate_values = 300.0, 600.0\n advance_diffusion = .true.\n"
        " diffusion_coef_constants = 20.0, 60.0\n diffusion_coef_filename = 'd.h5'\n diffusion_coef_grid = .true.\n"
        " advance_source = .true.\n source_from_file = .true.\n source_filename = 's.h5'\n"
        " source_rfe_model = 1\n source_rfe_total_unsigned_flux_per_hour = 5.0\n"
        " source_rfe_lifetime = 0.5\n source_rfe_seed = 7\n/\n"
    )
    return config_from_hipft(nml)


CASES = {
    "advect_gaussians_phi_theta": lambda d: _suite_case("advect_gaussians_phi_theta", d, 1.0, (8, 16)),
    "diffuse_advect_soccer": lambda d: _suite_case("diffuse_advect_soccer", d, 1.0, (10, 20)),
    "diffuse_advect_atten_map_1cr": lambda d: _suite_case("diffuse_advect_atten_map_1cr", d, 0.25, coarse=True),
    "all_inputs": _all_inputs,
}


@pytest.mark.parametrize("case", list(CASES))
def test_gpu_path_equals_cpu_path(case, comm, shared_tmp):
    size = comm.Get_size()
    # one rank: the whole grid; more: a split of the pole rows along phi (the automatic split puts
    # ranks on realizations first, which the one-rank run already covers per realization)
    splits = [{}] if size == 1 else [{"ensemble": 1, "dims": [1, size]}]
    cfg0 = None
    if comm.Get_rank() == 0:
        cfg0 = CASES[case](shared_tmp)
    cfg0 = comm.bcast(cfg0, root=0)
    for n, decomp in enumerate(splits):
        outs = {}
        for backend in ("cpu", BACKEND):
            cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg0.items()}
            out = shared_tmp / f"{n}-{backend}"
            cfg["run"] = {"backend": backend}
            cfg["output"].update(directory=str(out), maps="", hipft_maps=False, subcycle_rows=True)
            cfg["decomposition"].update(decomp)
            summary = run(cfg, comm)
            outs[backend] = out
        nreal = summary["realizations"]
        bad = compare_histories(outs[BACKEND], outs["cpu"], nreal, rtol=RTOL, floor=FLOOR) if comm.rank == 0 else []
        bad = comm.bcast(bad, root=0)
        assert_all(comm, not bad, f"{case} split {decomp or 'auto'} on {size} rank(s): {bad[:5]}")
    assert summary["steps"] > 0
