"""Applications: configuration -> run -> output (``hpcml run``).

Each application module exposes ``run(config: dict, comm) -> dict`` (a summary of
the run) and ships its defaults as ``hpcml/defaults/<app>.toml``.
"""

from collections.abc import Mapping
from typing import Any

from mpi4py import MPI

from hpcml.decomp import CartDecomp

__all__ = ["APPS", "grid_decomp"]


def grid_decomp(grid: Mapping[str, Any], comm: MPI.Comm, halo: int = 1) -> CartDecomp:
    """The :class:`CartDecomp` of a ``[grid]`` config section (``shape``, ``periodic``, ``dims``).

    ``dims`` entries of 0 (all of them: the default) let MPI choose the process grid.
    """
    shape = tuple(grid["shape"])
    dims = None if all(x == 0 for x in grid["dims"]) else tuple(grid["dims"])
    return CartDecomp(shape, comm, dims=dims, periodic=tuple(grid["periodic"]), halo=halo)


APPS: dict[str, str] = {
    "heat": "hpcml.apps.heat",
    "flux": "hpcml.apps.flux",
    "train": "hpcml.apps.train",
    "poisson": "hpcml.apps.poisson",
}
