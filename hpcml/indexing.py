"""Global indexing of a :class:`~hpcml.distarray.DistArray`: ``u[key]`` and ``u[key] = value``.

``key`` is NumPy *basic* indexing on the global shape: integers (negative ones
count from the end), slices with any step (negative too), ``...`` and
``None``.  Every selected index set along a dimension is an arithmetic
progression, so its intersection with a rank's block is one contiguous range
of result positions: each rank's share of the result is a box, computed on
every rank from the decomposition alone (no communication).

* ``u[key]`` is collective and returns the NumPy array of the region (a NumPy
  scalar for a single cell) on every rank: one ``Bcast`` from the owner when
  one rank owns the whole region, else one ``Allgatherv`` in which only owners
  contribute.  Only the region is allocated.
* ``u[key] = value`` writes the owned part of the region on each rank; ``value``
  is a scalar or an array broadcastable to the region's shape (NumPy's rule),
  the same on every rank.  No communication; the halos become stale.

Advanced indexing (integer or boolean arrays) is a ``TypeError``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py.util.dtlib import from_numpy_dtype

from hpcml.decomp_blocks import cuts

if TYPE_CHECKING:
    from hpcml.distarray import DistArray

__all__ = ["getitem", "setitem"]


class _Dim:
    """The progression ``start + step * k, k < count`` selected along one dimension."""

    __slots__ = ("count", "drop", "start", "step")

    def __init__(self, start: int, step: int, count: int, drop: bool) -> None:
        self.start, self.step, self.count, self.drop = start, step, count, drop

    def positions(self, lo: int, hi: int) -> tuple[int, int]:
        """Result positions ``[k0, k1)`` whose index lies in ``[lo, hi)``."""
        s, t, n = self.start, self.step, self.count
        if t > 0:
            k0, k1 = -(-(lo - s) // t), -(-(hi - s) // t)
        else:
            k0, k1 = (s - hi) // -t + 1, (s - lo) // -t + 1
        k0, k1 = max(k0, 0), min(k1, n)
        return (k0, k1) if k1 > k0 else (0, 0)


def _parse(key: Any, shape: tuple[int, ...]) -> tuple[list[_Dim], tuple[int, ...]]:
    """Per-dimension progressions and the NumPy result shape of a basic-indexing ``key``."""
    items = key if isinstance(key, tuple) else (key,)
    ndim = len(shape)
    for it in items:
        if not (it is None or it is Ellipsis or isinstance(it, slice) or _is_int(it)):
            raise TypeError(
                f"DistArray supports basic indexing (integers, slices, ..., None); got {type(it).__name__} "
                "(advanced indexing with arrays is not supported)"
            )
    if sum(it is Ellipsis for it in items) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(1 for it in items if it is not None and it is not Ellipsis)
    if used > ndim:
        raise IndexError(f"too many indices for array: array is {ndim}-dimensional, but {used} were indexed")
    if Ellipsis in items:
        i = next(k for k, it in enumerate(items) if it is Ellipsis)
        items = items[:i] + (slice(None),) * (ndim - used) + items[i + 1 :]
    else:
        items = items + (slice(None),) * (ndim - used)
    dims: list[_Dim] = []
    out_shape: list[int] = []
    for it in items:
        if it is None:
            out_shape.append(1)
            continue
        d, n = len(dims), shape[len(dims)]
        if isinstance(it, slice):
            start, stop, step = it.indices(n)
            count = len(range(start, stop, step))
            dims.append(_Dim(start, step, count, False))
            out_shape.append(count)
        else:
            i = int(it)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {d} with size {n}")
            dims.append(_Dim(i % n, 1, 1, True))
    return dims, tuple(out_shape)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _box(dims: list[_Dim], start: tuple[int, ...], shape: tuple[int, ...]) -> tuple[tuple[int, int], ...] | None:
    """Result positions owned by the block at ``start`` of ``shape`` (``None`` if none)."""
    box = tuple(dm.positions(s, s + n) for dm, s, n in zip(dims, start, shape))
    return None if any(k1 == k0 for k0, k1 in box) else box


def _local_slices(
    dims: list[_Dim], box: tuple[tuple[int, int], ...], start: tuple[int, ...], halo: tuple[int, ...]
) -> tuple[slice, ...]:
    """Slices of the ghosted local array holding the result positions ``box``."""
    out = []
    for dm, (k0, k1), s, h in zip(dims, box, start, halo):
        first = dm.start + dm.step * k0 - s + h
        last = dm.start + dm.step * (k1 - 1) - s + h
        stop = last + (1 if dm.step > 0 else -1)
        out.append(slice(first, stop if stop >= 0 else None, dm.step))
    return tuple(out)


def _blocks(u: DistArray) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(start, shape)`` of every rank's block, from the cut points (no communication)."""
    d = u.decomp
    c = cuts(d)
    out = []
    for r in range(d.size):
        coords = d.cart.Get_coords(r)
        out.append(
            (
                tuple(c[k][coords[k]] for k in range(d.ndim)),
                tuple(c[k][coords[k] + 1] - c[k][coords[k]] for k in range(d.ndim)),
            )
        )
    return out


def _host(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a if isinstance(a, np.ndarray) else a.get())


def getitem(u: DistArray, key: Any) -> Any:
    """``u[key]`` as a NumPy array (or scalar) on every rank (collective)."""
    dims, out_shape = _parse(key, u.shape)
    full = tuple(dm.count for dm in dims)
    result = np.empty(full, dtype=u.dtype)
    comm, me = u.decomp.cart, u.decomp.rank
    boxes = [_box(dims, s, n) for s, n in _blocks(u)]
    owners = [r for r, b in enumerate(boxes) if b is not None]
    mpitype = from_numpy_dtype(u.dtype)
    mine = boxes[me]
    piece = None
    if mine is not None:
        piece = _host(u.data[_local_slices(dims, mine, u.decomp.start, u.decomp.halo)])
    if len(owners) == 1:
        root = owners[0]
        if me == root:
            result[...] = piece
        comm.Bcast([result, mpitype], root=root)
    elif owners:
        counts = [0 if b is None else math.prod(k1 - k0 for k0, k1 in b) for b in boxes]
        displs = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
        flat = np.empty(sum(counts), dtype=u.dtype)
        send = piece.reshape(-1) if piece is not None else np.empty(0, dtype=u.dtype)
        comm.Allgatherv([send, mpitype], [flat, counts, displs, mpitype])
        for r in owners:
            b = boxes[r]
            shape = tuple(k1 - k0 for k0, k1 in b)
            result[tuple(slice(k0, k1) for k0, k1 in b)] = flat[displs[r] : displs[r] + counts[r]].reshape(shape)
    result = result.reshape(out_shape)
    # NumPy: a single cell is a scalar, unless the key holds an Ellipsis (then a 0-d array)
    keys = key if isinstance(key, tuple) else (key,)
    return result[()] if result.ndim == 0 and not any(k is Ellipsis for k in keys) else result


def setitem(u: DistArray, key: Any, value: Any) -> None:
    """``u[key] = value``: each rank writes the part of the region it owns (no communication)."""
    from hpcml.distarray import DistArray

    dims, out_shape = _parse(key, u.shape)
    if isinstance(value, DistArray):
        whole = all(not dm.drop and dm.step == 1 and dm.count == n for dm, n in zip(dims, u.shape))
        if not whole or out_shape != u.shape:
            raise TypeError(
                "a DistArray can only be assigned to the whole array (u[...] = v); for a region, assign "
                "v[region] (a NumPy array on every rank) or use v.redistribute()"
            )
        u.copy_from(value)
        return
    vals = np.asarray(value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else value)
    try:
        vals = np.broadcast_to(vals, out_shape)
    except ValueError:
        raise ValueError(f"could not broadcast input array from shape {vals.shape} into shape {out_shape}") from None
    vals = vals.reshape(tuple(dm.count for dm in dims))
    mine = _box(dims, u.decomp.start, u.decomp.local_shape)
    if mine is not None:
        part = vals[tuple(slice(k0, k1) for k0, k1 in mine)]
        target = _local_slices(dims, mine, u.decomp.start, u.decomp.halo)
        u.data[target] = part if u.xp is np else u.xp.asarray(part)
    u.stale_halos = True
