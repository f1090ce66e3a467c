"""Applications: configuration -> run -> output (``hpcml run``).

Each application module exposes ``run(config: dict, comm) -> dict`` (a summary of
the run) and ``validate_config(config) -> None`` (raises
:class:`~hpcml.config.ConfigError` naming the option; no MPI, no files written), and
ships its defaults as ``hpcml/defaults/<app>.toml``.  This package imports no MPI, so
``hpcml run --help`` and ``hpcml config show`` work on a login node.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing hpcml.apps (e.g. for the plot registry) needs no MPI
    from mpi4py import MPI

    from hpcml.decomp import CartDecomp

__all__ = ["APPS", "PLOTS", "SUMMARIES", "app_comm", "check_grid", "grid_decomp", "plotter"]


def app_comm(comm: MPI.Comm | None) -> MPI.Comm:
    """The communicator of an app's ``run()`` (default ``COMM_WORLD``), set up as ``hpcml run`` does.

    The setup is :func:`hpcml.init` (collective the first time).  A script that calls
    ``run()`` under ``mpiexec`` without ``hpcml.init()`` would otherwise keep Numba's
    default pool of one thread per core on every rank: 2 ranks on 2 cores ran the flux
    app 20x slower.  ``NUMBA_NUM_THREADS`` and an earlier ``hpcml.init(threads=...)``
    still win.
    """
    from hpcml.runtime import comm_or_world, init

    comm = comm_or_world(comm)
    init(comm)
    return comm


def check_grid(grid: Mapping[str, Any], ranks: int | None, halo: int = 1, of: str = "ranks") -> None:
    """Refuse a ``[grid]`` section that cannot be split over ``ranks`` (a configuration error).

    The checks :class:`CartDecomp` would make on every rank (``dims`` multiplying to
    the rank count, blocks at least ``halo`` wide), made once by rank 0 before the
    run starts, so the error is printed once and every rank exits 2.  Nothing is
    checked when ``ranks`` is ``None`` (no launch to check against).  ``of`` names
    what ``ranks`` counts in the message.
    """
    if ranks is None:
        return
    from hpcml.config import ConfigError
    from hpcml.decomp import CartDecomp

    shape, dims = tuple(grid["shape"]), tuple(grid["dims"])
    try:
        CartDecomp.validate_arguments(shape, ranks, None if not any(dims) else dims, tuple(grid["periodic"]), halo)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"grid.shape = {list(shape)}, grid.dims = {list(dims)} on {ranks} {of}: {exc}") from None


def grid_decomp(grid: Mapping[str, Any], comm: MPI.Comm, halo: int = 1) -> CartDecomp:
    """The :class:`CartDecomp` of a ``[grid]`` config section (``shape``, ``periodic``, ``dims``).

    ``dims`` entries of 0 (all of them: the default) let hpcml choose the process grid.
    """
    from hpcml.decomp import CartDecomp

    shape = tuple(grid["shape"])
    dims = None if all(x == 0 for x in grid["dims"]) else tuple(grid["dims"])
    decomp = CartDecomp(shape, comm, dims=dims, periodic=tuple(grid["periodic"]), halo=halo)
    if decomp.rank == 0:
        logging.getLogger("hpcml.apps").info("%s", decomp.describe())
    return decomp


APPS: dict[str, str] = {
    "heat": "hpcml.apps.heat",
    "flux": "hpcml.apps.flux",
    "train": "hpcml.apps.train",
    "poisson": "hpcml.apps.poisson",
}

#: One line per app for ``hpcml run --help``.
SUMMARIES: dict[str, str] = {
    "flux": "surface flux transport on the sphere, HipFT's model (the default job)",
    "heat": "heat diffusion on a periodic 2-D grid, checked against its exact discrete solution",
    "poisson": "matrix-free Poisson solve (CG, pipelined CG, Jacobi) with a manufactured solution",
    "train": "halo-parallel CNN surrogate of the heat equation (data x spatial parallel)",
}

#: Apps that draw their own figures in ``hpcml analyze``: module with ``plot(ctx) -> list[Path]``
#: (see :class:`hpcml.io.analyze.PlotContext`); the others get the generic figures only.
PLOTS: dict[str, str] = {
    "flux": "hpcml.apps.flux.plots",
}


def plotter(app: str) -> Callable[[Any], list[Any]] | None:
    """The ``plot`` function an app registered in :data:`PLOTS` (``None`` if none)."""
    name = PLOTS.get(app)
    return importlib.import_module(name).plot if name else None
