"""SUMMA and DistMatrix: products equal numpy.matmul for any shapes and grids; errors on every rank."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from linalg_helpers import raises_everywhere
from mpi4py import MPI

from hpcml.linalg import DistMatrix, summa
from hpcml.linalg.summa import _panels
from hpcml.testing import assert_all

PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]


def _grids(p):
    return [(a, p // a) for a in range(1, p + 1) if p % a == 0]


def _close(c, ref, k, dtype):
    eps = np.finfo(dtype).eps
    scale = max(float(np.abs(ref).max()), 1.0)
    return float(np.abs(c - ref).max()) <= 4 * k * eps * scale


@pytest.mark.mpi
@settings(max_examples=25)
@given(data=st.data())
def test_summa_equals_numpy(comm, data):
    grid = data.draw(st.sampled_from(_grids(comm.size)), label="grid")
    lo_r, lo_c = grid
    dim = st.one_of(st.sampled_from(PRIMES), st.integers(1, 40))
    m = max(data.draw(dim, label="m"), lo_r)
    k = max(data.draw(dim, label="k"), lo_r, lo_c)
    n = max(data.draw(dim, label="n"), lo_c)
    panel = data.draw(st.sampled_from([None, 1, 3, 8]), label="panel")
    dtype = data.draw(st.sampled_from(["f8", "f4"]), label="dtype")
    rng = np.random.default_rng(m * 10000 + k * 100 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    A = DistMatrix.from_global(a if comm.rank == 0 else None, comm, grid)
    B = DistMatrix.from_global(b if comm.rank == 0 else None, comm, grid)
    C = summa(A, B, panel=panel)
    c = C.allgather()
    ok = C.shape == (m, n) and C.grid == grid and C.dtype == np.dtype(dtype)
    ok &= _close(c, a.astype("f8") @ b.astype("f8"), k, dtype)
    assert_all(comm, ok, f"m={m} k={k} n={n} grid={grid} panel={panel} {dtype}")
    for mat in (A, B, C):
        mat.free()


@pytest.mark.mpi
def test_summa_independent_of_rank_count(comm):
    """The same product on every rank count, and against one process, to 1e-12 relative."""
    m, k, n = 37, 29, 23
    f = lambda i, j: np.sin(0.1 * i + 0.37 * j)  # noqa: E731
    g = lambda i, j: np.cos(0.21 * i - 0.13 * j)  # noqa: E731
    got = []
    for c in (comm, MPI.COMM_SELF):
        A = DistMatrix.from_global(f, c, shape=(m, k))
        B = DistMatrix.from_global(g, c, shape=(k, n))
        got.append(summa(A, B).allgather())
    ref = np.fromfunction(f, (m, k)) @ np.fromfunction(g, (k, n))
    ok = np.abs(got[0] - got[1]).max() <= 1e-12 * np.abs(got[1]).max()
    ok &= np.abs(got[0] - ref).max() <= 1e-12 * np.abs(ref).max()
    assert_all(comm, ok)


@pytest.mark.mpi
def test_distmatrix_round_trip(comm):
    a = np.arange(7 * 5 * comm.size, dtype="f8").reshape(7, 5 * comm.size)
    A = DistMatrix.from_global(a if comm.rank == comm.size - 1 else None, comm, root=comm.size - 1)
    back = A.gather(root=0)
    ok = np.array_equal(
        A.local, a[A.start[0] : A.start[0] + A.local.shape[0], A.start[1] : A.start[1] + A.local.shape[1]]
    )
    ok &= np.array_equal(back, a) if comm.rank == 0 else back is None
    Z = DistMatrix.zeros((4, 3 * comm.size), comm, (1, comm.size), dtype="f4")
    ok &= Z.dtype == np.dtype("f4") and Z.grid == (1, comm.size) and not Z.allgather().any()
    assert_all(comm, ok)


def test_panels_cover_k_once_with_single_owners():
    for k, pr, pc, width in [(10, 3, 2, None), (17, 4, 3, 2), (5, 1, 5, None), (9, 2, 2, 100)]:
        plan = _panels(k, pr, pc, width)
        assert [p[0] for p in plan] == sorted(p[0] for p in plan)
        assert plan[0][0] == 0 and plan[-1][1] == k
        assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
        if width is not None:
            assert all(p[1] - p[0] <= width for p in plan)


@pytest.mark.mpi
def test_summa_errors(comm):
    p = comm.size
    A = DistMatrix.zeros((2 * p, 3 * p), comm)
    B = DistMatrix.zeros((3 * p + 1, 2 * p), comm)
    ok = raises_everywhere(comm, ValueError, lambda: summa(A, B), "inner dimensions")
    C32 = DistMatrix.zeros((3 * p, 2 * p), comm, dtype="f4")
    ok &= raises_everywhere(comm, TypeError, lambda: summa(A, C32), "float")
    ok &= raises_everywhere(comm, TypeError, lambda: summa(A, np.zeros((3, 3))), "DistMatrix")
    C = DistMatrix.zeros((3 * p, 2 * p), comm)
    ok &= raises_everywhere(comm, ValueError, lambda: summa(A, C, panel=0), "panel")
    if p in (2, 4):
        D = DistMatrix.zeros((3 * p, 2 * p), comm, grid=(1, p))
        E = DistMatrix.zeros((2 * p, 3 * p), comm, grid=(p, 1))
        ok &= raises_everywhere(comm, ValueError, lambda: summa(E, D), "same grid")
    ok &= raises_everywhere(comm, ValueError, lambda: DistMatrix.from_global(None, comm), "2-D numpy array")
    ok &= raises_everywhere(comm, ValueError, lambda: DistMatrix.from_global(lambda i, j: i, comm), "shape=")
    assert_all(comm, ok)
