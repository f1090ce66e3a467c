"""Pack and unpack strided byte regions into contiguous buffers (CPU, Numba).

A region is described in the canonical strided-block form of
:class:`hpcml.datatypes.StridedBlock`, converted to *words*: ``counts[0]`` words
form one dense run, and dimension ``d >= 1`` repeats the lower dimensions
``counts[d]`` times at a distance of ``strides[d]`` words.  The caller picks the
widest word (8, 4, 2 or 1 bytes) dividing start, run length and strides, so the
inner copy moves machine words, not bytes.  Offsets are 64-bit throughout.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["ADD_COPY", "ADD_UNPACK", "COPY", "PACK", "UNPACK", "ZERO", "pack_words", "run_table", "unpack_words"]


@njit(cache=True, nogil=True)
def _pack(src, dst, start, counts, strides):  # pragma: no cover - compiled
    ndim = counts.shape[0]
    run = counts[0]
    inner = counts[1] if ndim > 1 else 1
    step = strides[1] if ndim > 1 else 0
    nouter = 1
    for d in range(2, ndim):
        nouter *= counts[d]
    pos = 0
    for k in range(nouter):
        off = start
        rem = k
        for d in range(2, ndim):
            off += (rem % counts[d]) * strides[d]
            rem //= counts[d]
        for j in range(inner):
            base = off + j * step
            for i in range(run):
                dst[pos + i] = src[base + i]
            pos += run


@njit(cache=True, nogil=True)
def _unpack(src, dst, start, counts, strides, accumulate):  # pragma: no cover - compiled
    ndim = counts.shape[0]
    run = counts[0]
    inner = counts[1] if ndim > 1 else 1
    step = strides[1] if ndim > 1 else 0
    nouter = 1
    for d in range(2, ndim):
        nouter *= counts[d]
    pos = 0
    for k in range(nouter):
        off = start
        rem = k
        for d in range(2, ndim):
            off += (rem % counts[d]) * strides[d]
            rem //= counts[d]
        for j in range(inner):
            base = off + j * step
            if accumulate:
                for i in range(run):
                    dst[base + i] += src[pos + i]
            else:
                for i in range(run):
                    dst[base + i] = src[pos + i]
            pos += run


def pack_words(src: np.ndarray, dst: np.ndarray, start: int, counts: np.ndarray, strides: np.ndarray) -> None:
    """Gather the region of 1-D word array ``src`` into contiguous ``dst``.

    ``start``, ``counts`` and ``strides`` are in words (``counts[0]`` is the dense
    run length, ``strides[0]`` is unused); ``counts``/``strides`` are int64 arrays.
    """
    _pack(src, dst, np.int64(start), counts, strides)


def unpack_words(
    src: np.ndarray,
    dst: np.ndarray,
    start: int,
    counts: np.ndarray,
    strides: np.ndarray,
    accumulate: bool = False,
) -> None:
    """Scatter contiguous ``src`` into the region of 1-D word array ``dst``.

    With ``accumulate`` the values are added (``+=``), as the adjoint of a halo
    exchange needs; ``src``/``dst`` must then be typed by the element dtype, not
    by raw words.
    """
    _unpack(src, dst, np.int64(start), counts, strides, bool(accumulate))


# -- region tables: every copy of one halo-exchange stage in one compiled call -----------------
#
# A table row describes one strided region of a flat array ``arr`` and what to do with it:
#
#   [op, a, b, run, count_1, stride_1, count_2, stride_2, ...]
#
# in elements of the arrays passed (words for plain copies, the array's dtype for sums).  The
# region starts at ``arr[a]``; ``run`` elements are dense; dimension ``d >= 1`` repeats the lower
# dimensions ``count_d`` times, ``stride_d`` apart.  ``b`` is the region's packed offset in
# ``buf`` (PACK, UNPACK, ADD_UNPACK) or the start of a second region of ``arr`` with the same
# shape (COPY, ADD_COPY).  Rows run in order.

#: ``buf[b:] <- arr[region a]``
PACK = 0
#: ``arr[region a] <- buf[b:]``
UNPACK = 1
#: ``arr[region b] <- arr[region a]``
COPY = 2
#: ``arr[region a] += buf[b:]``
ADD_UNPACK = 3
#: ``arr[region b] += arr[region a]``
ADD_COPY = 4
#: ``arr[region a] <- 0``
ZERO = 5

#: columns before the (count, stride) pairs
TABLE_HEAD = 4


#: runs of at least this many elements are copied with ``memmove`` (LLVM cannot vectorise a
#: copy between arrays that may alias; measured 2.5x slower than ``memmove`` on a 600 KB slab)
_MEMMOVE_MIN = 16


@intrinsic
def _memmove(typingctx, dst, dst_off, src, src_off, count):  # pragma: no cover - compiled
    """``dst[dst_off : dst_off + count] = src[src_off : src_off + count]`` as one ``llvm.memmove``."""
    sig = types.void(dst, types.intp, src, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dval, doff, sval, soff, n = args
        darr = context.make_array(signature.args[0])(context, builder, dval)
        sarr = context.make_array(signature.args[2])(context, builder, sval)
        item = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        cgutils.raw_memmove(builder, builder.gep(darr.data, [doff]), builder.gep(sarr.data, [soff]), n, item)

    return sig, codegen


@njit(cache=True, nogil=True)
def _copy_region(dst, d0, ds1, ds2, src, s0, ss1, ss2, run, c1, c2):  # pragma: no cover - compiled
    # Copy a (c2, c1, run) block between two strided layouts.  The loop nests keep every
    # test out of the inner loops: long runs go to memmove, single elements (a strided
    # column) to one load/store each.
    if run >= _MEMMOVE_MIN:
        for j2 in range(c2):
            for j1 in range(c1):
                _memmove(dst, d0 + j2 * ds2 + j1 * ds1, src, s0 + j2 * ss2 + j1 * ss1, run)
    elif run == 1:
        for j2 in range(c2):
            dd = d0 + j2 * ds2
            ss = s0 + j2 * ss2
            for j1 in range(c1):
                dst[dd + j1 * ds1] = src[ss + j1 * ss1]
    else:
        # Short runs: the element loop outside, so LLVM does not turn each run into a
        # memmove call; one plane's lines stay in L1 between the passes.
        for j2 in range(c2):
            for i in range(run):
                dd = d0 + j2 * ds2 + i
                ss = s0 + j2 * ss2 + i
                for j1 in range(c1):
                    dst[dd + j1 * ds1] = src[ss + j1 * ss1]


@njit(cache=True, nogil=True)
def _sum_region(arr, buf, op, a, b, run, c1, s1, c2, s2):  # pragma: no cover - compiled
    # ADD_UNPACK, ADD_COPY, ZERO on a (c2, c1, run) block (the adjoint's rarer operations).
    pos = b
    for j2 in range(c2):
        for j1 in range(c1):
            src = a + j2 * s2 + j1 * s1
            if op == ADD_UNPACK:
                for i in range(run):
                    arr[src + i] += buf[pos + i]
            elif op == ADD_COPY:
                dst = src - a + b
                for i in range(run):
                    arr[dst + i] += arr[src + i]
            else:
                for i in range(run):
                    arr[src + i] = 0
            pos += run


@njit(cache=True, nogil=True)
def _run_table(arr, buf, table):  # pragma: no cover - compiled
    ndims = (table.shape[1] - TABLE_HEAD) // 2
    for r in range(table.shape[0]):
        op = table[r, 0]
        a = table[r, 1]
        b = table[r, 2]
        run = table[r, 3]
        c1 = table[r, 4] if ndims > 0 else 1
        s1 = table[r, 5] if ndims > 0 else 0
        c2 = table[r, 6] if ndims > 1 else 1
        s2 = table[r, 7] if ndims > 1 else 0
        nouter = 1
        for d in range(2, ndims):
            nouter *= table[r, TABLE_HEAD + 2 * d]
        block = run * c1 * c2  # elements per outer step, packed
        for k in range(nouter):
            off = a
            rem = k
            for d in range(2, ndims):
                c = table[r, TABLE_HEAD + 2 * d]
                off += (rem % c) * table[r, TABLE_HEAD + 2 * d + 1]
                rem //= c
            pos = b + k * block
            if op == PACK:
                _copy_region(buf, pos, run, run * c1, arr, off, s1, s2, run, c1, c2)
            elif op == UNPACK:
                _copy_region(arr, off, s1, s2, buf, pos, run, run * c1, run, c1, c2)
            elif op == COPY:
                _copy_region(arr, off - a + b, s1, s2, arr, off, s1, s2, run, c1, c2)
            else:
                _sum_region(arr, buf, op, off, pos if op == ADD_UNPACK else off - a + b, run, c1, s1, c2, s2)


def run_table(arr: np.ndarray, buf: np.ndarray, table: np.ndarray) -> None:
    """Run every row of a region ``table`` (see the comment above) on flat ``arr`` and ``buf``.

    ``arr`` and ``buf`` are 1-D arrays of one type: machine words for copies, the
    element dtype when a row adds.  ``table`` is a C-contiguous int64 array; an
    empty table does nothing.
    """
    if table.shape[0]:
        _run_table(arr, buf, table)
