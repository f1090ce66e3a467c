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
from numba import njit

from ._intrinsics import memmove, prefetch

__all__ = [
    "ADD_COPY",
    "ADD_UNPACK",
    "COPY",
    "PACK",
    "UNPACK",
    "ZERO",
    "pack_words",
    "run_rows",
    "run_table",
    "unpack_words",
]


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


#: elements ahead that :func:`_copy_pair` prefetches along a strided face.  Measured on the
#: Zen 5 VM, the two halo-1 faces of a 194^3 block packed with their lines in DRAM: 150 us
#: 16 ahead, 113 us 64 ahead, 88 us 128 ahead, 79-89 us 256-512 ahead (NumPy's strided copy
#: 176 us); with the lines in L2 or L3 every distance from 16 to 256 costs the same.
#: Planes shorter than that are prefetched into the next plane (see :func:`_pair_rows`): the
#: two halo-1 faces of a 194^3 block over interior rows only (192 rows x 192 planes, the
#: faces of a ``corners=False`` exchange) with their lines in DRAM 198-274 -> 115-167 us,
#: 5-15 % slower with every line in L2.
_PREFETCH_AHEAD = 128

#: runs of at least this many elements are copied with ``memmove`` (LLVM cannot vectorise a
#: copy between arrays that may alias; measured 2.5x slower than ``memmove`` on a 600 KB slab)
_MEMMOVE_MIN = 16


@njit(cache=True, nogil=True)
def _copy_region(dst, d0, ds1, ds2, src, s0, ss1, ss2, run, c1, c2):  # pragma: no cover - compiled
    # Copy a (c2, c1, run) block between two strided layouts.  The loop nests keep every
    # test out of the inner loops: long runs go to memmove, single elements (a strided
    # column) to one load/store each.
    if run >= _MEMMOVE_MIN:
        for j2 in range(c2):
            for j1 in range(c1):
                memmove(dst, d0 + j2 * ds2 + j1 * ds1, src, s0 + j2 * ss2 + j1 * ss1, run)
    elif run == 1:
        for j2 in range(c2):
            dd = d0 + j2 * ds2
            ss = s0 + j2 * ss2
            for j1 in range(c1):
                dst[dd + j1 * ds1] = src[ss + j1 * ss1]
    elif run <= 4:
        # Halo widths 2-4 of a strided face: each run's words stored one by one, so every
        # row (and its page) is visited once; a loop here would become a memmove call per run.
        for j2 in range(c2):
            for j1 in range(c1):
                dd = d0 + j2 * ds2 + j1 * ds1
                ss = s0 + j2 * ss2 + j1 * ss1
                dst[dd] = src[ss]
                dst[dd + 1] = src[ss + 1]
                if run > 2:
                    dst[dd + 2] = src[ss + 2]
                if run > 3:
                    dst[dd + 3] = src[ss + 3]
    else:
        # Other short runs: the element loop outside, so LLVM does not turn each run into a
        # memmove call; one plane's lines stay in L1 between the passes.
        for j2 in range(c2):
            for i in range(run):
                dd = d0 + j2 * ds2 + i
                ss = s0 + j2 * ss2 + i
                for j1 in range(c1):
                    dst[dd + j1 * ds1] = src[ss + j1 * ss1]


@njit(cache=True, nogil=True, inline="always")
def _prefetch_two(arr, a, b, off):  # pragma: no cover - compiled
    # The lines at ``off`` past both blocks' starts.
    prefetch(arr, a + off)
    prefetch(arr, b + off)


@njit(cache=True, nogil=True, inline="always")
def _copy_two(dst, da, db, d, src, sa, sb, s, run):  # pragma: no cover - compiled
    # One run of both blocks (``run`` a literal at the call sites: straight-line code).
    for i in range(run):
        dst[da + d + i] = src[sa + s + i]
    for i in range(run):
        dst[db + d + i] = src[sb + s + i]


@njit(cache=True, nogil=True, inline="always")
def _pair_rows(dst, da, db, ds1, ds2, src, sa, sb, ss1, ss2, run, c1, c2, pf_dst, pf_src):  # pragma: no cover
    # The body of _copy_pair for one run length; inlined at call sites that pass ``run``
    # as a literal, so the element copies are straight-line code (no per-element tests).
    # The prefetch runs _PREFETCH_AHEAD elements ahead in the same plane while there are
    # that many left, then into the next plane at the same distance (or one plane ahead
    # when planes are shorter than that: a face over interior rows only has c1 = its rows,
    # c2 = its planes); two loops with constant offsets, no per-element tests.
    ahead = min(_PREFETCH_AHEAD, c1)
    near = c1 - ahead  # elements whose target is in this plane
    s_near, d_near = ahead * ss1, ahead * ds1
    s_far, d_far = ss2 - near * ss1, ds2 - near * ds1  # (j2 + 1, j1 - near): the next plane
    for j2 in range(c2):
        for j1 in range(near):
            d = j2 * ds2 + j1 * ds1
            s = j2 * ss2 + j1 * ss1
            if pf_src:
                _prefetch_two(src, sa, sb, s + s_near)
            if pf_dst:
                _prefetch_two(dst, da, db, d + d_near)
            _copy_two(dst, da, db, d, src, sa, sb, s, run)
        nxt = j2 + 1 < c2
        for j1 in range(near, c1):
            d = j2 * ds2 + j1 * ds1
            s = j2 * ss2 + j1 * ss1
            if nxt and pf_src:
                _prefetch_two(src, sa, sb, s + s_far)
            if nxt and pf_dst:
                _prefetch_two(dst, da, db, d + d_far)
            _copy_two(dst, da, db, d, src, sa, sb, s, run)


@njit(cache=True, nogil=True)
def _copy_pair(dst, da, db, ds1, ds2, src, sa, sb, ss1, ss2, run, c1, c2):  # pragma: no cover - compiled
    # Two (c2, c1, run) blocks of one shape, run <= 4, copied in lockstep: element j1 of
    # both, then j1 + 1.  A strided column costs a cache line (often a page) per element
    # at memory latency; walking two blocks side by side keeps twice the independent
    # misses in flight.  Measured on the two halo-1 columns of a 4098x2050 block: 45 us
    # one after the other, 23 us as a pair (run 3: 55 -> 40 us).  A loop over more blocks
    # instead of the explicit pair was no faster than one after the other.  The lines
    # _PREFETCH_AHEAD elements ahead are prefetched on each strided side (the array, read
    # when packing and written when unpacking; both for a local copy): the 192x192x384
    # exchange split on its fastest axis, halo 3, 2 ranks, 1.30 -> 1.13 ms on the Zen 5
    # VM.  One loop per run length (the run a literal): the two halo-3 columns of a
    # 4098x2050 block 17.4 -> 15 us, halo 2 11.4 -> 10 us, halo 1 7.1 -> 6.6 us.
    pf_dst = ds1 > run
    pf_src = ss1 > run
    if run == 1:
        _pair_rows(dst, da, db, ds1, ds2, src, sa, sb, ss1, ss2, 1, c1, c2, pf_dst, pf_src)
    elif run == 2:
        _pair_rows(dst, da, db, ds1, ds2, src, sa, sb, ss1, ss2, 2, c1, c2, pf_dst, pf_src)
    elif run == 3:
        _pair_rows(dst, da, db, ds1, ds2, src, sa, sb, ss1, ss2, 3, c1, c2, pf_dst, pf_src)
    else:
        _pair_rows(dst, da, db, ds1, ds2, src, sa, sb, ss1, ss2, 4, c1, c2, pf_dst, pf_src)


@njit(cache=True, nogil=True)
def _pairs_with_next(table, r, stop):  # pragma: no cover - compiled
    # Whether rows r and r + 1 (< stop) can be copied as a pair (_copy_pair): the same plain
    # copy op (PACK, UNPACK, COPY), a run of at most 4 and the same counts and strides.
    if r + 1 >= stop or table[r, 0] > COPY or table[r, 3] > 4 or table[r + 1, 0] != table[r, 0]:
        return False
    for c in range(3, table.shape[1]):
        if table[r + 1, c] != table[r, c]:
            return False
    return True


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


@njit(cache=True, nogil=True, inline="always")
def _row_shape(table, r, ndims):  # pragma: no cover - compiled
    # (run, c1, s1, c2, s2, nouter) of table row r: the dense run, the first two repeat
    # dimensions and how many times the outer ones (d >= 2) repeat them.
    c1 = table[r, 4] if ndims > 0 else 1
    s1 = table[r, 5] if ndims > 0 else 0
    c2 = table[r, 6] if ndims > 1 else 1
    s2 = table[r, 7] if ndims > 1 else 0
    nouter = 1
    for d in range(2, ndims):
        nouter *= table[r, TABLE_HEAD + 2 * d]
    return table[r, 3], c1, s1, c2, s2, nouter


@njit(cache=True, nogil=True, inline="always")
def _outer_shift(table, r, k, ndims):  # pragma: no cover - compiled
    # Offset of row r's k-th outer step (dimensions d >= 2) from its start.
    shift = 0
    rem = k
    for d in range(2, ndims):
        c = table[r, TABLE_HEAD + 2 * d]
        shift += (rem % c) * table[r, TABLE_HEAD + 2 * d + 1]
        rem //= c
    return shift


@njit(cache=True, nogil=True)
def _run_table(arr, buf, table):  # pragma: no cover - compiled
    run_rows(arr, buf, table, 0, table.shape[0])


@njit(cache=True, nogil=True)
def run_rows(arr, buf, table, start, stop):  # pragma: no cover - compiled
    """Rows ``start`` to ``stop`` of a region table (compiled; for other compiled callers)."""
    ndims = (table.shape[1] - TABLE_HEAD) // 2
    r = start
    while r < stop:
        if _pairs_with_next(table, r, stop):
            _run_pair(arr, buf, table, r, ndims)
            r += 2
            continue
        op = table[r, 0]
        a = table[r, 1]
        b = table[r, 2]
        run, c1, s1, c2, s2, nouter = _row_shape(table, r, ndims)
        block = run * c1 * c2  # elements per outer step, packed
        for k in range(nouter):
            off = a + _outer_shift(table, r, k, ndims)
            pos = b + k * block
            if op == PACK:
                _copy_region(buf, pos, run, run * c1, arr, off, s1, s2, run, c1, c2)
            elif op == UNPACK:
                _copy_region(arr, off, s1, s2, buf, pos, run, run * c1, run, c1, c2)
            elif op == COPY:
                _copy_region(arr, off - a + b, s1, s2, arr, off, s1, s2, run, c1, c2)
            else:
                _sum_region(arr, buf, op, off, pos if op == ADD_UNPACK else off - a + b, run, c1, s1, c2, s2)
        r += 1


@njit(cache=True, nogil=True)
def _run_pair(arr, buf, table, r0, ndims):  # pragma: no cover - compiled
    # Rows r0 and r0 + 1 (see _pairs_with_next) as a pair, outer dimensions (d >= 2) one at a time.
    op = table[r0, 0]
    run, c1, s1, c2, s2, nouter = _row_shape(table, r0, ndims)
    block = run * c1 * c2
    a0, a1 = table[r0, 1], table[r0 + 1, 1]
    b0, b1 = table[r0, 2], table[r0 + 1, 2]
    for k in range(nouter):
        shift = _outer_shift(table, r0, k, ndims)
        # PACK/UNPACK: b is the packed offset; COPY: the second region, shifted alike
        other = k * block if op != COPY else shift
        if op == PACK:
            _copy_pair(buf, b0 + other, b1 + other, run, run * c1, arr, a0 + shift, a1 + shift, s1, s2, run, c1, c2)
        elif op == UNPACK:
            _copy_pair(arr, a0 + shift, a1 + shift, s1, s2, buf, b0 + other, b1 + other, run, run * c1, run, c1, c2)
        else:
            _copy_pair(arr, b0 + other, b1 + other, s1, s2, arr, a0 + shift, a1 + shift, s1, s2, run, c1, c2)


def run_table(arr: np.ndarray, buf: np.ndarray, table: np.ndarray) -> None:
    """Run every row of a region ``table`` (see the comment above) on flat ``arr`` and ``buf``.

    ``arr`` and ``buf`` are 1-D arrays of one type: machine words for copies, the
    element dtype when a row adds.  ``table`` is a C-contiguous int64 array; an
    empty table does nothing.
    """
    if table.shape[0]:
        _run_table(arr, buf, table)
