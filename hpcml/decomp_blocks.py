"""Block layouts: the cut points of any decomposition, and decompositions with explicit block sizes.

:class:`~hpcml.decomp.CartDecomp` splits every dimension evenly
(:func:`~hpcml.decomp.block_range`).  Multigrid coarse levels must keep each
coarse cell on the rank that owns its fine children, and redistribution must
describe both sides of a move; both need *explicit* blocks.
:class:`BlockDecomp` is a ``CartDecomp`` whose block sizes per dimension are
given (PETSc DMDA's ``lx, ly, lz``); :func:`cuts` returns the cut points of
either kind, which are global facts every rank knows without communicating.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.decomp import CartDecomp, block_range
from hpcml.runtime import comm_or_world

__all__ = ["BlockDecomp", "cuts", "layout_key"]


def cuts(decomp: CartDecomp) -> tuple[tuple[int, ...], ...]:
    """Per dimension, the ``dims[d] + 1`` cut points of the blocks (first 0, last ``shape[d]``)."""
    own = getattr(decomp, "cuts", None)
    if own is not None:
        return own
    out = []
    for n, p in zip(decomp.shape, decomp.dims):
        out.append((*(block_range(n, p, k)[0] for k in range(p)), n))
    return tuple(out)


def layout_key(decomp: CartDecomp) -> tuple[Any, ...]:
    """What makes two decompositions hold the same cells on the same ranks (global facts only)."""
    return (decomp.shape, decomp.dims, decomp.size, cuts(decomp))


class BlockDecomp(CartDecomp):
    """A :class:`~hpcml.decomp.CartDecomp` with explicit block sizes per dimension.

    Parameters
    ----------
    sizes
        One sequence per dimension: the block sizes along it, in process-grid
        order (``len(sizes[d])`` is ``dims[d]``; every size >= 1).  The global
        shape is their sums.
    comm
        Communicator with exactly ``prod(dims)`` ranks.
    periodic, halo
        As for ``CartDecomp``; every block must be at least as wide as the halo.

    Attributes
    ----------
    cuts : tuple of tuple of int
        Per dimension the cut points (block ``k`` is ``cuts[d][k]:cuts[d][k+1]``).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[int]],
        comm: MPI.Comm | None = None,
        periodic: bool | Sequence[bool] = False,
        halo: int | Sequence[int] = 1,
    ) -> None:
        sizes_t = tuple(tuple(int(s) for s in per) for per in sizes)
        if not sizes_t or any(not per or min(per) < 1 for per in sizes_t):
            raise ValueError(f"every block size must be >= 1, got {sizes_t}")
        ndim = len(sizes_t)
        halo_t = (int(halo),) * ndim if np.ndim(halo) == 0 else tuple(int(h) for h in halo)
        if len(halo_t) != ndim or min(halo_t) < 0:
            raise ValueError(f"halo must be one width >= 0 or one per dimension, got {halo!r}")
        for d, per in enumerate(sizes_t):
            if min(per) < halo_t[d]:
                raise ValueError(f"dimension {d}: block of {min(per)} cells is narrower than the halo {halo_t[d]}")
        shape = tuple(sum(per) for per in sizes_t)
        dims = tuple(len(per) for per in sizes_t)
        comm = comm_or_world(comm)
        # The base class checks shape, dims and periodicity across ranks; the sizes are checked here.
        super().__init__(shape, comm, dims=dims, periodic=periodic, halo=0)
        everyone = comm.allgather(sizes_t)
        if any(e != everyone[0] for e in everyone):
            raise ValueError("BlockDecomp block sizes differ between ranks")
        self.cuts = tuple(tuple(int(c) for c in np.cumsum((0, *per))) for per in sizes_t)
        self.halo = halo_t
        self.start, self.local_shape = self.block(self.coords)
        self.slices = tuple(slice(s, s + n) for s, n in zip(self.start, self.local_shape))
        self.ghosted_shape = tuple(n + 2 * h for n, h in zip(self.local_shape, self.halo))
        self.interior = tuple(slice(h, h + n) for h, n in zip(self.halo, self.local_shape))

    def block(self, coords: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(start, local_shape)`` of the block at process-grid ``coords``."""
        c = [int(x) for x in coords]
        start = tuple(self.cuts[d][c[d]] for d in range(self.ndim))
        shape = tuple(self.cuts[d][c[d] + 1] - self.cuts[d][c[d]] for d in range(self.ndim))
        return start, shape

    def owner(self, global_index: Sequence[int]) -> int:
        """Rank (in ``cart``) owning the cell at ``global_index``; no communication."""
        idx = tuple(int(i) for i in global_index)
        if len(idx) != self.ndim:
            raise ValueError(f"index {idx} has {len(idx)} entries for a {self.ndim}-D grid")
        coords = []
        for d, i in enumerate(idx):
            if not 0 <= i < self.shape[d]:
                raise IndexError(f"index {i} out of range [0, {self.shape[d]}) in dimension {d}")
            coords.append(int(np.searchsorted(self.cuts[d], i, side="right")) - 1)
        return self.cart.Get_cart_rank(coords)

    def __repr__(self) -> str:
        return (
            f"BlockDecomp(shape={self.shape}, dims={self.dims}, cuts={self.cuts}, periodic={self.periodic}, "
            f"halo={self.halo}, rank={self.rank})"
        )
