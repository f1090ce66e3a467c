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

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.runtime import comm_or_world

__all__ = ["CartDecomp", "block_range", "choose_dims", "halo_cells_per_step", "largest_valid_size"]


def block_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """Return ``(start, size)`` of block ``index`` when ``n`` cells split into ``parts``.

    The first ``n % parts`` blocks get one extra cell, so sizes differ by at most one.
    """
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, base + (1 if index < extra else 0)


def halo_cells_per_step(
    shape: Sequence[int], dims: Sequence[int], halo: Sequence[int], periodic: Sequence[bool]
) -> int:
    """Ghost cells the busiest rank receives from other ranks per exchange on process grid ``dims``.

    Per split dimension ``d``: ``halo[d]`` layers across the largest block's extent in
    the other dimensions, on one side (two ranks, not periodic) or both.  Dimensions
    held whole by one rank cost nothing here (a periodic one is a local copy).
    """
    big = [-(-n // p) for n, p in zip(shape, dims)]
    total = 0
    for d, p in enumerate(dims):
        if p == 1 or halo[d] == 0:
            continue
        sides = 2 if (periodic[d] or p > 2) else 1
        total += sides * halo[d] * math.prod(big[:d] + big[d + 1 :])
    return total


def _factorizations(size: int, caps: Sequence[int], fixed: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Ordered factorizations of ``size`` with ``p[d] <= caps[d]`` and ``p[d] == fixed[d]`` where fixed is non-zero."""
    if not caps:
        if size == 1:
            yield ()
        return
    options = [fixed[0]] if fixed[0] else [p for p in range(1, min(size, caps[0]) + 1) if size % p == 0]
    for p in options:
        if p <= caps[0] and size % p == 0:
            for rest in _factorizations(size // p, caps[1:], fixed[1:]):
                yield (p, *rest)


def _caps(shape: Sequence[int], halo: Sequence[int]) -> list[int]:
    """Most ranks along each dimension: every block at least ``max(halo, 1)`` cells wide."""
    return [n // max(h, 1) for n, h in zip(shape, halo)]


def choose_dims(
    shape: Sequence[int],
    size: int,
    halo: int | Sequence[int] = 1,
    periodic: bool | Sequence[bool] = False,
    dims: Sequence[int] | None = None,
) -> tuple[int, ...] | None:
    """The process grid for ``size`` ranks that exchanges the fewest halo cells, as PETSc's DMDA does.

    Among the factorisations of ``size`` (keeping the non-zero entries of ``dims``)
    whose every block is at least as wide as the halo (and one cell), the one with the
    least :func:`halo_cells_per_step`; ties go to the grid that splits slower (C-order
    outer) dimensions, whose faces are contiguous.  ``None`` when no grid is valid.
    A halo of width 0 is scored as width 1, so ghost-free and one-cell layouts of a shape agree.
    Unlike ``MPI.Compute_dims`` this looks at the shape: a (9, 11, 6) field with halo 2
    on 5 ranks gets (1, 5, 1), and a 4096 x 256 field on 8 ranks gets (8, 1).
    """
    ndim = len(shape)
    halo_t = _as_tuple(halo, ndim, "halo", int)
    periodic_t = _as_tuple(periodic, ndim, "periodic", bool)
    fixed = [0] * ndim if dims is None else [int(x) for x in dims]
    # Widths of 0 are scored as 1: a ghost-free layout (output, solver vectors) gets the process
    # grid of the ghosted fields of the same shape that it is copied to and from.
    scored = tuple(max(h, 1) for h in halo_t)
    best: tuple[tuple[int, tuple[int, ...]], tuple[int, ...]] | None = None
    for cand in _factorizations(size, _caps(shape, halo_t), fixed):
        key = (halo_cells_per_step(shape, cand, scored, periodic_t), tuple(-p for p in cand))
        if best is None or key < best[0]:
            best = (key, cand)
    return None if best is None else best[1]


def largest_valid_size(
    shape: Sequence[int], size: int, halo: int | Sequence[int] = 1
) -> tuple[int, tuple[int, ...]] | None:
    """The largest rank count ``<= size`` with a valid process grid for ``shape``, and that grid (or ``None``)."""
    halo_t = _as_tuple(halo, len(shape), "halo", int)
    if any(n < h for n, h in zip(shape, halo_t)):
        return None
    for n in range(min(size, math.prod(_caps(shape, halo_t))), 0, -1):
        dims = choose_dims(shape, n, halo_t)
        if dims is not None:
            return n, dims
    return None  # pragma: no cover - one rank always fits once the shape covers the halo


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


def _advice(shape: tuple[int, ...], size: int, halo: tuple[int, ...], periodic: tuple[bool, ...]) -> str:
    """What would work: a valid grid for these ranks, or the largest rank count that has one."""
    dims = choose_dims(shape, size, halo, periodic)
    if dims is not None:
        return f"dims={dims} works on {size} ranks (or pass dims=None to let hpcml choose)"
    best = largest_valid_size(shape, size, halo)
    if best is None:
        return "the grid is narrower than the halo even on one rank"
    return (
        f"at most {best[0]} ranks can hold this grid (dims={best[1]}); "
        "use fewer ranks, a larger grid or a narrower halo"
    )


class CartDecomp:
    """Block decomposition of a global grid ``shape`` over the ranks of ``comm``.

    Parameters
    ----------
    shape
        Global number of cells per dimension (1-D, 2-D, 3-D or more).
    comm
        Communicator to decompose over (``MPI.COMM_WORLD`` by default).
    dims
        Ranks per dimension.  ``None`` (or zeros) lets :func:`choose_dims` choose from
        the shape: the grid exchanging the fewest halo cells per step with every block
        at least the halo wide (PETSc DMDA's rule); a full tuple must multiply to
        ``comm.size``.
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
        On every rank, for non-positive sizes, a wrong ``dims`` product, or a block
        narrower than the halo (naming a grid that works, or the largest rank count
        that has one).  Each rank checks its own arguments and one ``allgather``
        shares the verdicts and compares the arguments, so arguments that are
        invalid on some ranks only, or differ between ranks, raise on every rank
        instead of leaving the others waiting.
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        comm: MPI.Comm | None = None,
        dims: Sequence[int] | None = None,
        periodic: bool | Sequence[bool] = False,
        halo: int | Sequence[int] = 1,
    ) -> None:
        comm = comm_or_world(comm)
        size = comm.Get_size()
        # Validated on every rank, then compared in one cheap collective: a rank
        # whose own arguments are invalid (or differ from rank 0's) makes every
        # rank raise, where raising alone would leave the others in the allgather.
        error: ValueError | TypeError | None = None
        try:
            mine = self.validate_arguments(shape, size, dims, periodic, halo)
        except (ValueError, TypeError) as exc:
            mine, error = None, exc
        problem = None if error is None else (type(error), str(error))
        everyone = comm.allgather((mine, problem))
        failed = [r for r, (_, p) in enumerate(everyone) if p is not None]
        if failed:
            if error is not None:
                raise error
            r = failed[0]
            raise everyone[r][1][0](f"{everyone[r][1][1]} (the CartDecomp arguments of rank {r})")
        bad = [r for r, (other, _) in enumerate(everyone) if other != everyone[0][0]]
        if bad:
            raise ValueError(
                f"CartDecomp arguments differ between ranks: rank 0 has (shape, dims, periodic, halo)="
                f"{everyone[0][0]}, rank {bad[0]} has {everyone[bad[0]][0]}"
            )
        shape_t, dims_t, periodic_t, halo_t = mine
        ndim = len(shape_t)
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

    @classmethod
    def validate_arguments(
        cls,
        shape: int | Sequence[int],
        size: int,
        dims: Sequence[int] | None,
        periodic: bool | Sequence[bool],
        halo: int | Sequence[int],
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...], tuple[int, ...]]:
        """(shape, dims, periodic, halo) as tuples, checked against ``size`` ranks; no MPI call.

        What the constructor checks on each rank, for callers that must refuse a
        layout before any communicator exists (an app's configuration check).
        Raises ``ValueError`` (``TypeError`` for wrongly typed entries).
        """
        shape_t = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        ndim = len(shape_t)
        if ndim == 0:
            raise ValueError("shape must have at least one dimension")
        if any(s <= 0 for s in shape_t):
            raise ValueError(f"grid sizes must be positive, got shape={shape_t}")
        periodic_t = _as_tuple(periodic, ndim, "periodic", bool)
        halo_t = _as_tuple(halo, ndim, "halo", int)
        if any(h < 0 for h in halo_t):
            raise ValueError(f"halo widths must be >= 0, got {halo_t}")
        dims_t = cls._resolve_dims(dims, shape_t, size, halo_t, periodic_t)
        for d in range(ndim):
            smallest = shape_t[d] // dims_t[d]
            if smallest == 0:
                raise ValueError(
                    f"dimension {d}: {shape_t[d]} cells cannot be split over {dims_t[d]} ranks "
                    f"(dims={dims_t}); {_advice(shape_t, size, halo_t, periodic_t)}"
                )
            if smallest < halo_t[d]:
                raise ValueError(
                    f"dimension {d}: smallest block has {smallest} cells, narrower than the halo "
                    f"width {halo_t[d]} (shape={shape_t}, dims={dims_t}); {_advice(shape_t, size, halo_t, periodic_t)}"
                )
        return shape_t, dims_t, periodic_t, halo_t

    @staticmethod
    def _resolve_dims(
        dims: Sequence[int] | None,
        shape: tuple[int, ...],
        size: int,
        halo: tuple[int, ...],
        periodic: tuple[bool, ...],
    ) -> tuple[int, ...]:
        ndim = len(shape)
        dims_l = [0] * ndim if dims is None else [int(x) for x in dims]
        if len(dims_l) != ndim:
            raise ValueError(f"dims={tuple(dims_l)} has {len(dims_l)} entries for a {ndim}-D grid")
        if any(x < 0 for x in dims_l):
            raise ValueError(f"dims entries must be >= 0 (0 = choose), got {tuple(dims_l)}")
        fixed = math.prod(x for x in dims_l if x > 0)
        if 0 not in dims_l:
            if fixed != size:
                raise ValueError(f"dims={tuple(dims_l)} multiplies to {fixed} but the communicator has {size} ranks")
            return tuple(dims_l)
        if size % fixed:
            raise ValueError(f"dims={tuple(dims_l)}: fixed entries do not divide {size} ranks")
        chosen = choose_dims(shape, size, halo, periodic, dims_l)
        if chosen is None:
            raise ValueError(
                f"every process grid of {size} ranks{'' if dims is None else f' with dims={tuple(dims_l)}'} has "
                f"blocks narrower than the halo or empty (shape={shape}, halo={halo}); "
                f"{_advice(shape, size, halo, periodic)}"
            )
        return chosen

    # -- queries -----------------------------------------------------------------------
    def describe(self) -> str:
        """One line for logs: global shape, process grid, largest block, halo cells per step."""
        big = tuple(-(-n // p) for n, p in zip(self.shape, self.dims))
        cells = halo_cells_per_step(self.shape, self.dims, self.halo, self.periodic)
        return (
            f"grid {'x'.join(map(str, self.shape))} on {self.size} rank(s): process grid "
            f"{'x'.join(map(str, self.dims))}, blocks up to {'x'.join(map(str, big))}, halo {self.halo}, "
            f"{cells} ghost cells received per exchange by the busiest rank"
        )

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
