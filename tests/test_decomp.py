"""CartDecomp: block sizes, ownership, neighbours and validation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_all
from hypothesis import given
from hypothesis import strategies as st
from mpi4py import MPI

from hpcml.decomp import CartDecomp, block_range


@given(n=st.integers(1, 500), parts=st.integers(1, 40))
def test_block_range_partitions(n, parts):
    parts = min(parts, n)
    blocks = [block_range(n, parts, i) for i in range(parts)]
    sizes = [s for _, s in blocks]
    assert sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1
    assert [b[0] for b in blocks] == list(np.cumsum([0, *sizes[:-1]]))


@pytest.mark.mpi
@given(data=st.data())
def test_owner_matches_slices(comm, data):
    ndim = data.draw(st.integers(1, 3))
    dims = MPI.Compute_dims(comm.size, ndim)
    shape = tuple(data.draw(st.integers(d, d + 9)) for d in dims)
    d = CartDecomp(shape, comm)
    ok = True
    for r in range(comm.size):
        sl = d.rank_slices(r)
        corner_lo = tuple(s.start for s in sl)
        corner_hi = tuple(s.stop - 1 for s in sl)
        ok &= d.owner(corner_lo) == r and d.owner(corner_hi) == r
    ok &= d.slices == d.rank_slices(d.rank)
    cover = np.zeros(shape, dtype=int)
    for r in range(comm.size):
        cover[d.rank_slices(r)] += 1
    ok &= bool((cover == 1).all())
    assert_all(comm, ok, f"shape={shape}")
    d.free()


@pytest.mark.mpi
def test_attributes_and_neighbors(comm):
    d = CartDecomp((10, 7), comm, periodic=(True, False), halo=1)
    assert d.dims[0] * d.dims[1] == comm.size
    assert d.ghosted_shape == tuple(n + 2 for n in d.local_shape)
    lo, hi = d.neighbors[1]
    if d.coords[1] == 0:
        assert lo == MPI.PROC_NULL
    if d.coords[1] == d.dims[1] - 1:
        assert hi == MPI.PROC_NULL
    lo0, hi0 = d.neighbors[0]
    assert MPI.PROC_NULL not in (lo0, hi0)
    assert d.halo == (1, 1) and d.periodic == (True, False)
    d.free()


@pytest.mark.mpi
def test_bad_arguments_raise_everywhere(comm):
    with pytest.raises(ValueError, match="positive"):
        CartDecomp((0, 4), comm)
    with pytest.raises(ValueError, match="multiplies to"):
        CartDecomp((8, 8), comm, dims=(comm.size + 1, 1))
    with pytest.raises(ValueError, match="narrower than the halo"):
        CartDecomp((4 * comm.size,), comm, halo=5)
    with pytest.raises(ValueError, match="entries"):
        CartDecomp((8, 8), comm, periodic=(True,))


@pytest.mark.mpi(min_size=2)
def test_rank_dependent_shape_detected(comm):
    with pytest.raises(ValueError, match="differ between ranks"):
        CartDecomp((16 + (comm.rank == 1), 8), comm)


def test_owner_out_of_range():
    d = CartDecomp((5, 5), MPI.COMM_SELF)
    with pytest.raises(IndexError):
        d.owner((5, 0))
    assert d.owner((4, 4)) == 0
