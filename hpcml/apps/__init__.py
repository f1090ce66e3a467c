"""Applications: configuration -> run -> output (``hpcml run``).

Each application module exposes ``run(config: dict, comm) -> dict`` (a summary of
the run) and ships its defaults as ``hpcml/defaults/<app>.toml``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing hpcml.apps (e.g. for the plot registry) needs no MPI
    from mpi4py import MPI

    from hpcml.decomp import CartDecomp

__all__ = ["APPS", "PLOTS", "grid_decomp", "plotter"]


def grid_decomp(grid: Mapping[str, Any], comm: MPI.Comm, halo: int = 1) -> CartDecomp:
    """The :class:`CartDecomp` of a ``[grid]`` config section (``shape``, ``periodic``, ``dims``).

    ``dims`` entries of 0 (all of them: the default) let MPI choose the process grid.
    """
    from hpcml.decomp import CartDecomp

    shape = tuple(grid["shape"])
    dims = None if all(x == 0 for x in grid["dims"]) else tuple(grid["dims"])
    return CartDecomp(shape, comm, dims=dims, periodic=tuple(grid["periodic"]), halo=halo)


APPS: dict[str, str] = {
    "heat": "hpcml.apps.heat",
    "flux": "hpcml.apps.flux",
    "train": "hpcml.apps.train",
    "poisson": "hpcml.apps.poisson",
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
