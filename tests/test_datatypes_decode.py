"""StridedBlock.from_datatype: byte-for-byte equal to MPI_Pack for nested datatypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from hpcml.datatypes import StridedBlock, UnsupportedDatatypeError, mpi_pack, pack_datatype

LEAVES = [MPI.DOUBLE, MPI.FLOAT, MPI.INT, MPI.SHORT, MPI.BYTE]


@st.composite
def datatypes(draw, depth=3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(LEAVES))
    child = draw(datatypes(depth=depth - 1))
    ext = child.Get_extent()[1]
    kind = draw(st.sampled_from(["contiguous", "vector", "hvector", "subarray", "resized", "dup"]))
    if kind == "contiguous":
        return child.Create_contiguous(draw(st.integers(1, 3)))
    if kind == "vector":
        block = draw(st.integers(1, 3))
        return child.Create_vector(draw(st.integers(1, 3)), block, block + draw(st.integers(0, 3)))
    if kind == "hvector":
        block = draw(st.integers(1, 2))
        return child.Create_hvector(draw(st.integers(1, 3)), block, block * ext + draw(st.integers(0, 3)) * 4)
    if kind == "subarray":
        ndim = draw(st.integers(1, 3))
        sizes = [draw(st.integers(1, 5)) for _ in range(ndim)]
        subsizes = [draw(st.integers(1, n)) for n in sizes]
        starts = [draw(st.integers(0, n - m)) for n, m in zip(sizes, subsizes)]
        order = draw(st.sampled_from([MPI.ORDER_C, MPI.ORDER_FORTRAN]))
        return child.Create_subarray(sizes, subsizes, starts, order=order)
    if kind == "resized":
        return child.Create_resized(0, ext + draw(st.integers(0, 4)) * 8)
    return child.Dup()


def _buffer(dt):
    lb, extent = dt.Get_true_extent()
    n = max(lb + extent, dt.Get_extent()[1], 1) + 64
    return np.random.default_rng(n).integers(0, 255, size=n, dtype=np.uint8)


@settings(max_examples=200)
@given(datatypes())
def test_from_datatype_matches_mpi_pack(dt):
    dt = dt.Dup().Commit()
    try:
        buf = _buffer(dt)
        ref = mpi_pack(buf, dt)
        sb = StridedBlock.from_datatype(dt)
        assert sb.nbytes == dt.Get_size()
        for engine in ("numpy", "numba"):
            assert np.array_equal(sb.pack(buf, engine=engine), ref), (sb, engine)
        # unpack is the inverse on the described bytes
        back = np.zeros_like(buf)
        sb.unpack(ref, back)
        assert np.array_equal(sb.pack(back), ref)
    finally:
        dt.Free()


def test_one_thick_plane_at_offset():
    # TEMPI's elision bug: a count-1 dimension with a nonzero start must keep its offset.
    a = np.arange(4 * 5 * 6, dtype="f8").reshape(4, 5, 6)
    dt = MPI.DOUBLE.Create_subarray([4, 5, 6], [1, 5, 6], [3, 0, 0]).Commit()
    sb = StridedBlock.from_datatype(dt)
    assert sb.start == 3 * 5 * 6 * 8 and sb.contiguous
    assert np.array_equal(sb.pack(a).view("f8"), a[3].ravel())
    assert np.array_equal(sb.pack(a), mpi_pack(a, dt))
    dt.Free()


@pytest.mark.parametrize("order", ["C", "F"])
def test_from_view_agrees_with_from_datatype(order):
    a = np.asarray(np.arange(6 * 7 * 5, dtype="f4").reshape(6, 7, 5), order=order)
    region = (slice(1, 4), slice(2, 3), slice(0, 5))
    mpi_order = MPI.ORDER_C if order == "C" else MPI.ORDER_FORTRAN
    dt = MPI.FLOAT.Create_subarray(list(a.shape), [3, 1, 5], [1, 2, 0], order=mpi_order).Commit()
    assert StridedBlock.from_view(a, region) == StridedBlock.from_datatype(dt)
    dt.Free()


def test_unsupported_falls_back_to_mpi():
    dt = MPI.DOUBLE.Create_indexed([1, 2], [0, 4]).Commit()
    with pytest.raises(UnsupportedDatatypeError, match="INDEXED"):
        StridedBlock.from_datatype(dt)
    buf = np.arange(10.0)
    packed, engine = pack_datatype(buf, dt)
    assert engine == "mpi" and np.array_equal(packed.view("f8"), [0.0, 4.0, 5.0])
    dt.Free()
