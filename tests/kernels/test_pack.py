"""hpcml.kernels.pack.run_table: every region operation against NumPy on strided views."""

from __future__ import annotations

import numpy as np
import pytest
from hpcml.kernels.pack import (
    _PREFETCH_AHEAD,
    ADD_COPY,
    ADD_UNPACK,
    COPY,
    PACK,
    UNPACK,
    ZERO,
    _pairs_with_next,
    run_table,
)
from hypothesis import given
from hypothesis import strategies as st

from hpcml.datatypes import StridedBlock
from hpcml.halo_layout import region_table


@st.composite
def two_regions(draw):
    """A C-ordered array and two same-shape, disjoint regions of it (slices along axis 0 apart)."""
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 7)) for _ in range(ndim)]
    shape[0] = draw(st.integers(2, 12))
    # region extents: axis 0 disjoint halves, other axes any sub-range (long and short runs)
    h = draw(st.integers(1, shape[0] // 2))
    lo_a, lo_b = draw(st.integers(0, shape[0] // 2 - h)), draw(st.integers(shape[0] // 2, shape[0] - h))
    rest = []
    for n in shape[1:]:
        start = draw(st.integers(0, n - 1))
        rest.append(slice(start, draw(st.integers(start + 1, n))))
    a = (slice(lo_a, lo_a + h), *rest)
    b = (slice(lo_b, lo_b + h), *rest)
    if draw(st.booleans()):
        shape[-1] *= 20  # long runs: the memmove path
        a, b = (*a[:-1], slice(0, shape[-1])), (*b[:-1], slice(0, shape[-1]))
    dtype = draw(st.sampled_from(["f8", "f4", "i8", "c16"]))
    seed = draw(st.integers(0, 2**31 - 1))
    arr = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return arr, a, b


@given(two_regions())
def test_run_table_matches_numpy(case):
    arr, ra, rb = case
    blk_a, blk_b = StridedBlock.from_view(arr, ra), StridedBlock.from_view(arr, rb)
    item = arr.dtype.itemsize
    n = blk_a.nbytes // item
    flat = arr.ravel()

    work, buf = arr.copy(), np.zeros(2 * n, arr.dtype)
    run_table(work.ravel(), buf, region_table([(PACK, blk_a, n * item)], item))
    assert np.array_equal(buf[n:], arr[ra].ravel()) and not buf[:n].any()

    work = arr.copy()
    src = np.arange(n).astype(arr.dtype)
    run_table(work.ravel(), src, region_table([(UNPACK, blk_b, 0)], item))
    expect = arr.copy()
    expect[rb] = src.reshape(expect[rb].shape)
    assert np.array_equal(work, expect)

    work = arr.copy()
    run_table(work.ravel(), flat[:0], region_table([(COPY, blk_a, blk_b.start)], item))
    expect = arr.copy()
    expect[rb] = arr[ra]
    assert np.array_equal(work, expect)

    work = arr.copy()
    rows = [(ADD_COPY, blk_b, blk_a.start), (ZERO, blk_b, 0), (ADD_UNPACK, blk_a, 0)]
    run_table(work.ravel(), src, region_table(rows, item))
    expect = arr.copy()
    expect[ra] += arr[rb] + src.reshape(expect[ra].shape)
    expect[rb] = 0
    assert np.allclose(work, expect, rtol=1e-6 if arr.dtype == np.float32 else 1e-14)


def test_word_tables_move_any_element_type():
    """Plain copies run on machine words: a complex array packed as uint64 words."""
    arr = (np.arange(60.0) + 1j).reshape(5, 12)
    blk = StridedBlock.from_view(arr, (slice(1, 4), slice(2, 5)))
    buf = np.empty(blk.nbytes // 8, np.uint64)
    run_table(arr.ravel().view(np.uint64), buf, region_table([(PACK, blk, 0)], 8))
    assert np.array_equal(buf.view(arr.dtype), arr[1:4, 2:5].ravel())
    run_table(arr.ravel().view(np.uint64), buf, np.zeros((0, 6), np.int64))  # empty table: nothing


@given(two_regions())
def test_same_shape_rows_copied_as_a_pair(case):
    """Two rows of one op and shape (the two faces of a periodic dimension) run in lockstep.

    Short runs take the paired kernel; the result must equal the rows run one at a
    time, for PACK, UNPACK and COPY, in any dimension count.
    """
    arr, ra, rb = case
    blk_a, blk_b = StridedBlock.from_view(arr, ra), StridedBlock.from_view(arr, rb)
    item = arr.dtype.itemsize
    n = blk_a.nbytes // item

    buf = np.zeros(2 * n, arr.dtype)
    run_table(arr.copy().ravel(), buf, region_table([(PACK, blk_a, 0), (PACK, blk_b, n * item)], item))
    assert np.array_equal(buf, np.concatenate([arr[ra].ravel(), arr[rb].ravel()]))

    work, src = arr.copy(), np.arange(2 * n).astype(arr.dtype)
    run_table(work.ravel(), src, region_table([(UNPACK, blk_b, 0), (UNPACK, blk_a, n * item)], item))
    expect = arr.copy()
    expect[rb] = src[:n].reshape(expect[rb].shape)
    expect[ra] = src[n:].reshape(expect[ra].shape)
    assert np.array_equal(work, expect)

    # a pair of copies in which the second reads what the first wrote: still in row order
    work = arr.copy()
    rows = [(COPY, blk_a, blk_b.start), (COPY, blk_b, blk_a.start)]
    run_table(work.ravel(), arr.ravel()[:0], region_table(rows, item))
    expect = arr.copy()
    expect[rb], expect[ra] = arr[ra], arr[ra]  # rows run in order: b <- a, then a <- (new) b
    assert np.array_equal(work, expect)


@pytest.mark.parametrize("run", [1, 2, 3, 4])
@pytest.mark.parametrize("planes", [1, 3])
@pytest.mark.parametrize("rows", [_PREFETCH_AHEAD + 37, 37])
def test_paired_strided_faces_longer_than_the_prefetch_distance(run, planes, rows):
    """Two same-shape strided faces (a pair, copied in lockstep) in planes longer and shorter
    than the prefetch distance, one or more planes: pack, unpack and local copy against NumPy."""
    arr = np.random.default_rng(run).standard_normal((planes, rows, 2 * run + 9))
    lo = (slice(None), slice(None), slice(1, 1 + run))
    hi = (slice(None), slice(None), slice(run + 5, 2 * run + 5))
    blk_lo, blk_hi = StridedBlock.from_view(arr, lo), StridedBlock.from_view(arr, hi)
    n = blk_lo.nbytes // 8
    table = region_table([(PACK, blk_lo, 0), (PACK, blk_hi, n * 8)], 8)
    assert _pairs_with_next(table, 0, 2)
    assert not _pairs_with_next(table, 0, 1)  # a pair never reaches past the rows asked for
    buf = np.zeros(2 * n)
    run_table(arr.ravel(), buf, table)
    assert np.array_equal(buf, np.concatenate([arr[lo].ravel(), arr[hi].ravel()]))

    work = arr.copy()
    src = np.arange(2.0 * n)
    run_table(work.ravel(), src, region_table([(UNPACK, blk_lo, 0), (UNPACK, blk_hi, n * 8)], 8))
    expect = arr.copy()
    expect[lo], expect[hi] = src[:n].reshape(expect[lo].shape), src[n:].reshape(expect[hi].shape)
    assert np.array_equal(work, expect)

    # local copies: lo -> the columns after it, hi -> the columns after it
    to_lo = (slice(None), slice(None), slice(1 + run, 1 + 2 * run))
    to_hi = (slice(None), slice(None), slice(2 * run + 5, 3 * run + 5))
    work = arr.copy()
    dest_lo, dest_hi = StridedBlock.from_view(arr, to_lo).start, StridedBlock.from_view(arr, to_hi).start
    run_table(work.ravel(), work.ravel()[:0], region_table([(COPY, blk_lo, dest_lo), (COPY, blk_hi, dest_hi)], 8))
    expect = arr.copy()
    expect[to_lo], expect[to_hi] = arr[lo], arr[hi]
    assert np.array_equal(work, expect)
