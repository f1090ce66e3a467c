"""CartDecomp: block sizes, ownership, neighbours and validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mpi4py import MPI

from hpcml.decomp import CartDecomp, block_range
from hpcml.testing import assert_all


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


def _brute_force_best(shape, size, halo, periodic):
    """Every ordered factorisation, scored independently of hpcml's enumeration."""
    import itertools

    best = None
    for dims in itertools.product(range(1, size + 1), repeat=len(shape)):
        if int(np.prod(dims)) != size or any(n // p < max(h, 1) for n, p, h in zip(shape, dims, halo)):
            continue
        big = [-(-n // p) for n, p in zip(shape, dims)]
        cost = 0
        for d, p in enumerate(dims):
            if p > 1:  # a width of 0 is scored as 1 (ghost-free layouts match one-cell ones)
                other = int(np.prod([b for e, b in enumerate(big) if e != d]))
                cost += (2 if periodic[d] or p > 2 else 1) * max(halo[d], 1) * other
        key = (cost, tuple(-p for p in dims))
        if best is None or key < best[0]:
            best = (key, dims)
    return None if best is None else best[1]


@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    size=st.integers(1, 24),
    halo=st.integers(0, 3),
    periodic=st.booleans(),
)
def test_choose_dims_is_the_least_halo_grid(shape, size, halo, periodic):
    from hpcml.decomp import choose_dims

    nd = len(shape)
    assert choose_dims(shape, size, halo, periodic) == _brute_force_best(shape, size, (halo,) * nd, (periodic,) * nd)


def test_choose_dims_looks_at_the_shape():
    from hpcml.decomp import choose_dims, largest_valid_size

    assert choose_dims((9, 11, 6), 5, halo=2) == (1, 5, 1)  # MPI.Compute_dims gives the invalid (5, 1, 1)
    assert choose_dims((4096, 256), 8) == (8, 1)  # an elongated field is cut across its long side
    assert choose_dims((4096, 4096), 2) == (2, 1)  # ties: contiguous faces (split the slowest axis)
    assert choose_dims((512, 512, 512), 8) == (2, 2, 2)
    assert choose_dims((12, 12), 6, dims=(3, 0)) == (3, 2)  # fixed entries are kept
    assert choose_dims((3, 3), 4, halo=2) is None
    assert largest_valid_size((3, 3), 4, halo=2) == (1, (1, 1))
    assert largest_valid_size((8, 3), 7, halo=2) == (4, (4, 1))
    assert largest_valid_size((1, 5), 4, halo=2) is None
    # a ghost-free layout gets the grid of the one-cell layout it is copied to (solver vectors, output)
    assert choose_dims((14, 11), 4, halo=0) == choose_dims((14, 11), 4, halo=1) == (2, 2)


@pytest.mark.mpi
def test_default_grid_fits_the_shape(comm):
    """Shapes where MPI.Compute_dims's grid is refused get a valid grid; a hopeless one names the limit."""
    n = comm.size
    d = CartDecomp((2 * n + 1, 2, 3), comm, halo=2)  # only dimension 0 can be split
    assert d.dims == (n, 1, 1)
    assert "process grid" in d.describe() and f"on {n} rank(s)" in d.describe()
    assert all(b >= 2 for b in d.local_shape)
    d.free()
    if n > 1:
        with pytest.raises(ValueError, match=r"at most 1 ranks can hold this grid \(dims=\(1, 1\)\)"):
            CartDecomp((3, 3), comm, halo=2)
        with pytest.raises(ValueError, match=r"dims=\(1, .*\) works on"):
            CartDecomp((1, 4 * n), comm, dims=(n, 1), halo=1)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize(
    "kwargs",
    [
        lambda rank: {"dims": (2, 1) if rank == 0 else (4, 1)},  # invalid on rank 1 only
        lambda rank: {"halo": 1 if rank == 0 else 9},
        lambda rank: {"shape": (8, 8) if rank == 0 else (0, 8)},
    ],
    ids=["dims", "halo", "shape"],
)
def test_arguments_invalid_on_some_ranks_raise_everywhere(comm, kwargs):
    # a rank whose own arguments fail the local checks must not leave the others
    # waiting in the allgather: every rank raises (the test would hang otherwise)
    kw = kwargs(comm.rank)
    shape = kw.pop("shape", (8, 8))
    if "dims" in kw:
        kw["dims"] = (comm.size, 1) if comm.rank == 0 else (comm.size + 2, 1)
    with pytest.raises(ValueError, match=r"rank 1|multiplies to|narrower than|positive") as info:
        CartDecomp(shape, comm, **kw)
    if comm.rank == 0:
        assert "rank 1" in str(info.value)
