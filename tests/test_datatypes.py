"""StridedBlock: canonical form, pack/unpack vs NumPy slicing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcml.datatypes import StridedBlock


@st.composite
def array_and_region(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 7)) for _ in range(ndim))
    dtype = draw(st.sampled_from(["u1", "i2", "f4", "f8", "c16"]))
    order = draw(st.sampled_from("CF"))
    region = []
    for n in shape:
        lo = draw(st.integers(0, n - 1))
        hi = draw(st.integers(lo + 1, n))
        region.append(slice(lo, hi))
    a = np.asarray(np.arange(int(np.prod(shape))).reshape(shape), dtype=dtype, order=order)
    return a, tuple(region)


@given(array_and_region())
def test_pack_unpack_matches_slicing(case):
    a, region = case
    sb = StridedBlock.from_view(a, region)
    assert sb.nbytes == a[region].nbytes
    packed = sb.pack(a)
    assert np.array_equal(packed.view(a.dtype), a[region].ravel(order="K"))
    b = np.zeros_like(a)
    sb.unpack(packed, b)
    assert np.array_equal(b[region], a[region])
    mask = np.ones(a.shape, bool)
    mask[region] = False
    assert not b[mask].any()
    if a.dtype.kind in "fc":
        sb.unpack(packed, b, accumulate=True)
        assert np.array_equal(b[region], 2 * a[region])
    # the module-generic strided path (used for CuPy) agrees with the Numba kernel
    assert np.array_equal(sb._pack_xp(np, a, None), packed)


def test_folding_and_word_size():
    a = np.zeros((4, 5, 6))
    whole = StridedBlock.from_view(a)
    assert whole.contiguous and whole.nbytes == a.nbytes
    slab = StridedBlock.from_view(a, (slice(1, 3), slice(None), slice(None)))
    assert slab.contiguous and slab.start == 1 * 5 * 6 * 8
    col = StridedBlock.from_view(a, (slice(None), slice(None), slice(2, 3)))
    assert col.counts == (8, 20) and col.strides == (1, 48) and col.word_size() == 8
    b = np.zeros(10, dtype="u1")
    odd = StridedBlock.from_view(b, (slice(1, 4),))
    assert odd.word_size() == 1


def test_bounds_checked():
    sb = StridedBlock(0, (16, 4), (1, 32))
    with pytest.raises(ValueError, match="buffer has"):
        sb.pack(np.zeros(8))
    with pytest.raises(ValueError, match="at least"):
        sb.pack(np.zeros(32), out=np.zeros(3, dtype="u1"))
