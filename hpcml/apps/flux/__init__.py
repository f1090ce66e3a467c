"""Surface flux transport on the sphere (HipFT numerics) for ensembles of realizations.

``run(config, comm)`` is the ``hpcml run`` entry point of the ``flux`` app;
``config_from_hipft(path)`` turns a HipFT ``hipft.in`` namelist into a full
``flux`` configuration.  See ``docs/flux-transport.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcml.apps import app_comm
from hpcml.apps.flux.namelist import config_from_hipft
from hpcml.config import ConfigError

if TYPE_CHECKING:  # the solver (MPI, Numba) loads on first use: hpcml.apps.flux.plots needs neither
    from mpi4py import MPI

    from hpcml.apps.flux.solver import FluxSolver

__all__ = ["FluxSolver", "config_from_hipft", "run", "validate_config"]

log = logging.getLogger("hpcml.apps.flux")


def validate_config(config: dict[str, Any], ranks: int | None = None) -> None:
    """Check every flux option (names in the message) without MPI, before the first collective.

    The map file and the rank layout are checked again, with their data, when the solver
    is built (still before any collective).
    """
    from hpcml.apps.flux.params import Params
    from hpcml.config import check_choice, check_output_path
    from hpcml.settings import CHOICES

    prm = Params(config)
    check_choice(config, "decomposition.halo_method", CHOICES["halo_method"])
    check_output_path(config, "output.directory", folder=True)
    grid = config["grid"]
    if grid["map"] and not Path(grid["map"]).is_file():
        raise ConfigError(f"grid.map file {grid['map']!r} does not exist")
    if ranks is not None:  # the split of the launch's ranks into ensemble groups x (theta, phi) blocks
        from hpcml.apps.flux.layout import choose_split

        dec = config["decomposition"]
        choose_split(ranks, prm.n_real, dec["ensemble"], tuple(dec["dims"]))


def __getattr__(name: str) -> Any:
    if name == "FluxSolver":
        from hpcml.apps.flux.solver import FluxSolver

        return FluxSolver
    raise AttributeError(f"module 'hpcml.apps.flux' has no attribute {name!r}")


def run(config: dict[str, Any], comm: MPI.Comm | None = None) -> dict[str, Any]:
    """Run the ``flux`` job described by ``config``; return a summary (same on every rank).

    All input checks (config values, per-realization lists, the map file and its
    grid) run on every rank before the first collective call, so bad input raises
    the same :class:`~hpcml.config.ConfigError` everywhere.
    """
    from hpcml.apps.flux.solver import FluxSolver
    from hpcml.io.lock import hold

    comm = app_comm(comm)
    solver = FluxSolver(config, comm)
    # The output folder (maps, histories, checkpoints) is this job's until it ends.
    lock = hold(comm, folders=[config["output"]["directory"]])
    if comm.Get_rank() == 0:
        g, lay = solver.grid, solver.lay
        log.info(
            "flux: %d x %d grid, %d realization(s), t = %g..%g h, %d rank(s) = %d ensemble group(s) x %s (theta x phi)",
            g.Nt, g.Nf, solver.prm.n_real, solver.prm.t_start, solver.prm.t_end, comm.Get_size(), lay.ensemble,
            list(lay.dims),
        )  # fmt: skip
    try:
        summary = solver.run()
    finally:
        solver.lay.free()
        lock.release()
    if comm.Get_rank() == 0:
        log.info(
            "flux: %d steps to t = %.6g h in %.2f s (advection %.2f s, diffusion %.2f s, analysis %.2f s)",
            summary["steps"], summary["time"], summary["seconds"], summary["timers"]["advection"],
            summary["timers"]["diffusion"], summary["timers"]["analysis"],
        )  # fmt: skip
        where = [summary["output_dir"]] + [summary[k] for k in ("maps", "history", "checkpoint") if k in summary]
        log.info("flux: outputs in %s", ", ".join(where))
    return summary
