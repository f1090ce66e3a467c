"""Cartesian block decomposition of an N-D index space over an MPI communicator.

:class:`CartDecomp` owns the process grid, which block of the global index space
each rank holds, and who its neighbours are.  It holds no data: a
:class:`~hpcml.distarray.DistArray` is a ghosted buffer plus a reference to one
``CartDecomp`` (the split Devito's ``Distributor`` and mpi4py-fft's ``Subcomm``
use).  All validation that can be done from the arguments alone happens before
the first collective call, so bad input fails on every rank with the same
message instead of hanging in ``Create_cart``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

__all__ = ["CartDecomp", "block_range"]


def block_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """Return ``(start, size)`` of block ``index`` when ``n`` cells split into ``parts``.

    The first ``n % parts`` blocks get one extra cell, so sizes differ by at most one.
    """
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, base + (1 if index < extra else 0)


def _as_tuple(value: Any, ndim: int, name: str, kind: type) -> tuple:
    if isinstance(value, (bool, int, np.integer, np.bool_)) and not isinstance(value, Sequence):
        return (kind(value),) * ndim
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a {kind.__name__} or a sequence of {ndim}, got {value!r}") from None
    if len(items) != ndim:
        raise ValueError(f"{name} has {len(items)} entries but the grid has {ndim} dimensions: {value!r}")
    return tuple(kind(v) for v in items)


class CartDecomp:
    """Block decomposition of a global grid ``shape`` over the ranks of ``comm``.

    Parameters
    ----------
    shape
        Global number of cells per dimension (1-D, 2-D, 3-D or more).
    comm
        Communicator to decompose over (``MPI.COMM_WORLD`` by default).
    dims
        Ranks per dimension.  ``None`` (or zeros) lets ``MPI.Compute_dims`` choose;
        a full tuple must multiply to ``comm.size``.
    periodic
        One bool for all dimensions or one per dimension.
    halo
        Ghost-layer width: one int for all dimensions or one per dimension.

    Attributes
    ----------
    shape, dims, coords, local_shape, start, slices, neighbors, cart, halo, periodic
        ``neighbors[d] == (lo, hi)`` ranks in ``cart`` (``MPI.PROC_NULL`` at a
        non-periodic edge); ``slices`` locates the local block in the global array;
        ``halo`` is a tuple of widths per dimension.

    Raises
    ------
    ValueError
        On every rank, before any communication, for non-positive sizes, a wrong
        ``dims`` product, or a block narrower than the halo.  Arguments that differ
        between ranks are detected by one ``allgather`` and raise on every rank.
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        comm: MPI.Comm | None = None,
        dims: Sequence[int] | None = None,
        periodic: bool | Sequence[bool] = False,
        halo: int | Sequence[int] = 1,
    ) -> None:
        comm = MPI.COMM_WORLD if comm is None else comm
        shape_t = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        ndim = len(shape_t)
        if ndim == 0:
            raise ValueError("shape must have at least one dimension")
        if any(s <= 0 for s in shape_t):
            raise ValueError(f"grid sizes must be positive, got shape={shape_t}")
        size = comm.Get_size()
        dims_t = self._resolve_dims(dims, ndim, size)
        periodic_t = _as_tuple(periodic, ndim, "periodic", bool)
        halo_t = _as_tuple(halo, ndim, "halo", int)
        if any(h < 0 for h in halo_t):
            raise ValueError(f"halo widths must be >= 0, got {halo_t}")
        for d in range(ndim):
            smallest = shape_t[d] // dims_t[d]
            if smallest == 0:
                raise ValueError(
                    f"dimension {d}: {shape_t[d]} cells cannot be split over {dims_t[d]} ranks "
                    f"(dims={dims_t}); use fewer ranks or a larger grid"
                )
            if smallest < halo_t[d]:
                raise ValueError(
                    f"dimension {d}: smallest block has {smallest} cells, narrower than the halo "
                    f"width {halo_t[d]} (shape={shape_t}, dims={dims_t}); use fewer ranks along "
                    f"this dimension or a narrower halo"
                )
        # One cheap collective proves every rank passed the same arguments; a
        # mismatch would otherwise deadlock or corrupt data later.
        mine = (shape_t, dims_t, periodic_t, halo_t)
        everyone = comm.allgather(mine)
        bad = [r for r, other in enumerate(everyone) if other != everyone[0]]
        if bad:
            raise ValueError(
                f"CartDecomp arguments differ between ranks: rank 0 has (shape, dims, periodic, halo)="
                f"{everyone[0]}, rank {bad[0]} has {everyone[bad[0]]}"
            )
        self.comm = comm
        self.shape = shape_t
        self.ndim = ndim
        self.dims = dims_t
        self.periodic = periodic_t
        self.halo = halo_t
        self.cart = comm.Create_cart(list(dims_t), periods=list(periodic_t), reorder=False)
        self.rank = self.cart.Get_rank()
        self.size = size
        self.coords = tuple(self.cart.Get_coords(self.rank))
        starts, sizes = zip(*(block_range(shape_t[d], dims_t[d], self.coords[d]) for d in range(ndim)))
        self.start = tuple(starts)
        self.local_shape = tuple(sizes)
        self.slices = tuple(slice(s, s + n) for s, n in zip(self.start, self.local_shape))
        self.neighbors = tuple(tuple(self.cart.Shift(d, 1)) for d in range(ndim))
        self.ghosted_shape = tuple(n + 2 * h for n, h in zip(self.local_shape, self.halo))
        self.interior = tuple(slice(h, h + n) for h, n in zip(self.halo, self.local_shape))
        self._plans: dict[Any, Any] = {}

    @staticmethod
    def _resolve_dims(dims: Sequence[int] | None, ndim: int, size: int) -> tuple[int, ...]:
        if dims is None:
            return tuple(MPI.Compute_dims(size, ndim))
        dims_l = [int(x) for x in dims]
        if len(dims_l) != ndim:
            raise ValueError(f"dims={tuple(dims_l)} has {len(dims_l)} entries for a {ndim}-D grid")
        if any(x < 0 for x in dims_l):
            raise ValueError(f"dims entries must be >= 0 (0 = choose), got {tuple(dims_l)}")
        fixed = int(np.prod([x for x in dims_l if x > 0])) if any(dims_l) else 1
        if 0 in dims_l:
            if size % fixed:
                raise ValueError(f"dims={tuple(dims_l)}: fixed entries do not divide {size} ranks")
            return tuple(MPI.Compute_dims(size, dims_l))
        if fixed != size:
            raise ValueError(f"dims={tuple(dims_l)} multiplies to {fixed} but the communicator has {size} ranks")
        return tuple(dims_l)

    # -- queries -----------------------------------------------------------------------
    def block(self, coords: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(start, local_shape)`` of the block at process-grid ``coords``."""
        pairs = [block_range(self.shape[d], self.dims[d], int(coords[d])) for d in range(self.ndim)]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)

    def rank_block(self, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(start, local_shape)`` of the block owned by ``rank`` (a rank of ``cart``)."""
        return self.block(self.cart.Get_coords(rank))

    def rank_slices(self, rank: int) -> tuple[slice, ...]:
        """Global slices of the block owned by ``rank``."""
        start, shape = self.rank_block(rank)
        return tuple(slice(s, s + n) for s, n in zip(start, shape))

    def owner(self, global_index: Sequence[int]) -> int:
        """Rank (in ``cart``) that owns the cell at ``global_index``; no communication."""
        idx = tuple(int(i) for i in global_index)
        if len(idx) != self.ndim:
            raise ValueError(f"index {idx} has {len(idx)} entries for a {self.ndim}-D grid")
        coords = []
        for d, i in enumerate(idx):
            n, p = self.shape[d], self.dims[d]
            if not 0 <= i < n:
                raise IndexError(f"index {i} out of range [0, {n}) in dimension {d}")
            base, extra = divmod(n, p)
            cut = extra * (base + 1)  # cells held by the larger blocks
            coords.append(i // (base + 1) if i < cut else extra + (i - cut) // base)
        return self.cart.Get_cart_rank(coords)

    def global_indices(self, sparse: bool = True) -> tuple[np.ndarray, ...]:
        """Global index arrays of the local block (``np.ogrid``-style when ``sparse``)."""
        ranges = [np.arange(s, s + n) for s, n in zip(self.start, self.local_shape)]
        return tuple(np.meshgrid(*ranges, indexing="ij", sparse=sparse))

    def plan_cache(self) -> dict[Any, Any]:
        """Per-decomposition cache of halo-exchange plans (see :mod:`hpcml.halo`)."""
        return self._plans

    def free(self) -> None:
        """Release cached plans and the Cartesian communicator (collective)."""
        for plan in self._plans.values():
            if hasattr(plan, "free"):
                plan.free()
        self._plans.clear()
        if self.cart != MPI.COMM_NULL:
            self.cart.Free()

    def __repr__(self) -> str:
        return (
            f"CartDecomp(shape={self.shape}, dims={self.dims}, periodic={self.periodic}, "
            f"halo={self.halo}, rank={self.rank}, coords={self.coords}, local_shape={self.local_shape})"
        )
