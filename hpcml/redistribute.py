"""Move a field between two block decompositions with one ``Alltoallv``.

A :class:`Redistribution` is a plan between a *source* and a *destination*
block layout of the same global shape over one communicator: a different
process grid, split axis, halo width, periodicity or memory order, or a
layout on a subset of the ranks (the multigrid agglomeration onto fewer
ranks).  At setup every rank learns every rank's two blocks (one
``allgather`` of a few integers); from then on each call intersects nothing:
the overlap of each source block with each destination block is a fixed box,
packed into one contiguous send buffer in peer order, exchanged with one
``Alltoallv``, and unpacked.  The part that stays on a rank is copied
directly, never through MPI.  No rank holds more than its own two blocks
plus the send and receive buffers, each at most one block.

:func:`redistribute` is ``DistArray.redistribute``: the plan is cached on the
source decomposition.  The destination's ghost layers are stale afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from hpcml.decomp import CartDecomp

if TYPE_CHECKING:
    from hpcml.distarray import DistArray

__all__ = ["Redistribution", "redistribute"]

Box = tuple[tuple[int, int], ...]


def _intersect(a: tuple[tuple[int, ...], tuple[int, ...]] | None, b: Any) -> Box | None:
    if a is None or b is None:
        return None
    box = tuple((max(s1, s2), min(s1 + n1, s2 + n2)) for s1, n1, s2, n2 in zip(a[0], a[1], b[0], b[1]))
    return None if any(hi <= lo for lo, hi in box) else box


def _local(box: Box, block: tuple[tuple[int, ...], tuple[int, ...]], halo: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(lo - s + h, hi - s + h) for (lo, hi), s, h in zip(box, block[0], halo))


def _size(box: Box | None) -> int:
    return 0 if box is None else int(np.prod([hi - lo for lo, hi in box]))


class Redistribution:
    """Plan that moves arrays from ``src`` blocks to ``dst`` blocks over ``comm`` (collective setup).

    Parameters
    ----------
    src, dst
        The decompositions on this rank, or ``None`` on a rank that holds no
        block of that side (a decomposition over a subset of ``comm``).  Both
        have the same global shape.
    comm
        A communicator containing every rank of both decompositions.
    dtype
        Element type of the arrays moved.

    Notes
    -----
    :meth:`forward` moves ``src -> dst``, :meth:`backward` ``dst -> src``; both are
    collective over ``comm`` (ranks without a block pass ``None``).
    """

    def __init__(self, src: CartDecomp | None, dst: CartDecomp | None, comm: MPI.Comm, dtype: Any) -> None:
        self.comm = comm
        self.dtype = np.dtype(dtype)
        self.mpitype = from_numpy_dtype(self.dtype)
        mine = (_describe(src), _describe(dst))
        everyone = comm.allgather(mine)
        shapes = {e[k][0] for e in everyone for k in (0, 1) if e[k] is not None}
        if len(shapes) != 1:
            raise ValueError(f"redistribution between different global shapes: {sorted(shapes)}")
        self.src_blocks = [e[0][1] if e[0] is not None else None for e in everyone]
        self.dst_blocks = [e[1][1] if e[1] is not None else None for e in everyone]
        self.src_halo = mine[0][2] if src is not None else None
        self.dst_halo = mine[1][2] if dst is not None else None
        me = comm.Get_rank()
        self.rank = me
        size = comm.Get_size()
        self.send = [_intersect(self.src_blocks[me], self.dst_blocks[q]) for q in range(size)]
        self.recv = [_intersect(self.src_blocks[q], self.dst_blocks[me]) for q in range(size)]
        self.scounts = np.array([0 if q == me else _size(b) for q, b in enumerate(self.send)], dtype=np.int64)
        self.rcounts = np.array([0 if q == me else _size(b) for q, b in enumerate(self.recv)], dtype=np.int64)
        self.sdispl = np.concatenate(([0], np.cumsum(self.scounts)[:-1])).astype(np.int64)
        self.rdispl = np.concatenate(([0], np.cumsum(self.rcounts)[:-1])).astype(np.int64)
        # Pairs with nothing to exchange still take part in the Alltoallv (with zero counts):
        # one collective call, whatever the layouts.
        self.moved = int(comm.allreduce(int(self.scounts.sum()), op=MPI.SUM))

    def _run(
        self,
        a: DistArray | None,
        b: DistArray | None,
        send: list[Box | None],
        recv: list[Box | None],
        counts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        blocks: tuple[Any, Any],
        halos: tuple[Any, Any],
    ) -> None:
        scounts, sdispl, rcounts, rdispl = counts
        me = self.rank
        sbuf = np.empty(int(scounts.sum()), dtype=self.dtype)
        rbuf = np.empty(int(rcounts.sum()), dtype=self.dtype)
        src_data = None if a is None else _host_view(a)
        for q, box in enumerate(send):
            if box is None or q == me:
                continue
            part = src_data[_local(box, blocks[0], halos[0])]
            sbuf[sdispl[q] : sdispl[q] + scounts[q]].reshape(part.shape)[...] = part
        if send[me] is not None:
            dst = b.data[_local(send[me], blocks[1], halos[1])]
            src = src_data[_local(send[me], blocks[0], halos[0])]
            dst[...] = src if b.xp is np else b.xp.asarray(src)
        if self.moved:
            self.comm.Alltoallv([sbuf, (scounts, sdispl), self.mpitype], [rbuf, (rcounts, rdispl), self.mpitype])
        for q, box in enumerate(recv):
            if box is None or q == me:
                continue
            shape = tuple(hi - lo for lo, hi in box)
            part = rbuf[rdispl[q] : rdispl[q] + rcounts[q]].reshape(shape)
            b.data[_local(box, blocks[1], halos[1])] = part if b.xp is np else b.xp.asarray(part)
        if b is not None:
            b.stale_halos = True

    def forward(self, a: DistArray | None, b: DistArray | None) -> None:
        """Fill ``b`` (destination layout) from ``a`` (source layout); collective over ``comm``."""
        me = self.rank
        self._run(
            a,
            b,
            self.send,
            self.recv,
            (self.scounts, self.sdispl, self.rcounts, self.rdispl),
            (self.src_blocks[me], self.dst_blocks[me]),
            (self.src_halo, self.dst_halo),
        )

    def backward(self, b: DistArray | None, a: DistArray | None) -> None:
        """Fill ``a`` (source layout) from ``b`` (destination layout); collective over ``comm``."""
        me = self.rank
        self._run(
            b,
            a,
            self.recv,
            self.send,
            (self.rcounts, self.rdispl, self.scounts, self.sdispl),
            (self.dst_blocks[me], self.src_blocks[me]),
            (self.dst_halo, self.src_halo),
        )


def _describe(decomp: CartDecomp | None) -> tuple[Any, ...] | None:
    if decomp is None:
        return None
    return (decomp.shape, (decomp.start, decomp.local_shape), decomp.halo)


def _host_view(a: DistArray) -> np.ndarray:
    return a.data if a.xp is np else a.xp.asnumpy(a.data)


def redistribute(u: DistArray, decomp: CartDecomp, order: str | None = None) -> DistArray:
    """``u`` moved onto ``decomp`` (same global shape, same communicator group); collective.

    Parameters
    ----------
    u
        The field to move (not modified).
    decomp
        Target decomposition: any process grid, halo widths and periodicity of
        the same global shape, over a communicator with the same group of ranks.
    order
        Memory order of the result, ``"C"`` or ``"F"``; ``u``'s by default.

    Raises
    ------
    ValueError
        On every rank, for another global shape or another group of ranks.
    """
    from hpcml.distarray import DistArray

    if not isinstance(decomp, CartDecomp):
        raise TypeError(f"redistribute needs a CartDecomp, got {type(decomp).__name__}")
    if decomp.shape != u.shape:
        raise ValueError(f"cannot redistribute global shape {u.shape} onto a decomposition of shape {decomp.shape}")
    if MPI.Comm.Compare(u.decomp.cart, decomp.cart) not in (MPI.IDENT, MPI.CONGRUENT):
        raise ValueError("the target decomposition is over another group of ranks than the array's")
    order = u.order if order is None else order
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    key = ("hpcml.redistribute", decomp, u.dtype.str)
    cache = u.decomp.plan_cache()
    plan = cache.get(key)
    if plan is None:
        plan = cache[key] = Redistribution(u.decomp, decomp, u.decomp.cart, u.dtype)
    out = DistArray.zeros(decomp, u.dtype, xp=u.xp, order=order)
    plan.forward(u, out)
    return out
