"""Decomposition independence: ensemble x theta x phi splits reproduce the serial histories.

Run as ``mpiexec -n N python -m pytest --with-mpi -m mpi tests/flux`` for N = 1..4.
Each case runs serially on rank 0 (``COMM_SELF``), then on all ranks with every
split this rank count allows; the histories must agree to 1e-10 relative
(sums: to 1e-13 of the unsigned flux, their rounding scale), and the numerics
histories (time steps, stages, cycles) must be equal.
"""

from __future__ import annotations

import pytest
from flux_helpers import assert_all, case_config, compare_histories, n_real, suite
from mpi4py import MPI

from hpcml.apps.flux import run

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(600)]

# (ensemble groups, theta ranks, phi ranks) per world size
SPLITS = {
    1: [(1, 1, 1)],
    2: [(1, 2, 1), (1, 1, 2), (2, 1, 1)],
    3: [(1, 3, 1), (1, 1, 3), (3, 1, 1)],
    4: [(1, 2, 2), (2, 1, 2), (4, 1, 1), (1, 1, 4)],
}
# short runs that still take many steps, subcycles, attenuated flows and cap reductions
CASES = [
    ("diffuse_advect_soccer", 6.0),
    ("diffuse_advect_atten_map_1cr", 3.0),
    ("advect_gaussians_phi_theta", 12.0),
    ("diffuse_dipole", 3.0),
]
# coarser grids where the case's own resolution only makes the split test slow
COARSE = {"advect_gaussians_phi_theta": (90, 180)}


@pytest.mark.parametrize(("case", "tend"), CASES)
def test_splits_match_serial(case, tend, comm, shared_tmp):
    suite()
    size = comm.Get_size()
    nreal = n_real(case)
    ref_dir = shared_tmp / "serial"

    def config(outdir, **decomp):
        cfg = case_config(case, outdir, tend, **decomp)
        if case in COARSE:
            cfg["grid"]["res_nt"], cfg["grid"]["res_np"] = COARSE[case]
        return cfg

    if comm.Get_rank() == 0:
        run(config(ref_dir), MPI.COMM_SELF)
    comm.Barrier()
    splits = [s for s in SPLITS.get(size, []) if s[0] <= nreal]
    if not splits:
        pytest.skip(f"no split of {size} ranks for {nreal} realization(s)")
    for e, pt, pp in splits:
        out = shared_tmp / f"split-{e}x{pt}x{pp}"
        summary = run(config(out, ensemble=e, dims=[pt, pp]), comm)
        assert summary["ensemble_groups"] == e and summary["dims"] == [pt, pp]
        bad = compare_histories(out, ref_dir, nreal) if comm.Get_rank() == 0 else []
        bad = comm.bcast(bad, root=0)
        assert_all(comm, not bad, f"{case} split {e}x{pt}x{pp}: {bad[:5]}")


def test_bad_input_raises_everywhere(comm, shared_tmp):
    """Inconsistent input fails on every rank with the same message, before any collective."""
    from hpcml.config import ConfigError, load_config

    cfg = load_config(None, ["app=flux", "realizations.n=3", "flow.mf_p1=[22.0]", "diffusion.coef=[1.0, 2.0]"])
    cfg["output"]["directory"] = str(shared_tmp)
    with pytest.raises(ConfigError, match=r"diffusion.coef has 2 values but realizations.n = 3"):
        run(cfg, comm)
    cfg = load_config(None, ["app=flux", f"grid.map={shared_tmp / 'missing.h5'}", 'initial.kind="map"'])
    with pytest.raises(ConfigError, match="does not exist"):
        run(cfg, comm)
    comm.Barrier()
