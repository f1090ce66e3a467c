"""DistCSR: construction paths, ghost plan, matvec against SciPy on 1-4 ranks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps
from hypothesis import given
from hypothesis import strategies as st
from linalg_helpers import poisson_scipy, raises_everywhere, random_sparse, rel_err

from hpcml import CartDecomp, DistArray
from hpcml.decomp import block_range
from hpcml.linalg import DistCSR, poisson_matrix
from hpcml.testing import assert_all


def _rows_of(a, comm):
    start, count = block_range(a.shape[0], comm.size, comm.rank)
    return a[start : start + count]


def _x(n, seed=7):
    return np.random.default_rng(seed).standard_normal(n)


@pytest.mark.mpi
@given(data=st.data())
def test_matvec_matches_scipy(comm, data):
    p = comm.size
    m = data.draw(st.integers(p, p + 23), label="m")
    n = data.draw(st.integers(p, p + 23), label="n")
    density = data.draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]), label="density")
    a = random_sparse(
        m,
        n,
        density,
        seed=data.draw(st.integers(0, 10**6), label="seed"),
        empty_rows=data.draw(st.integers(0, 3), label="empty_rows"),
        empty_cols=data.draw(st.integers(0, 3), label="empty_cols"),
        dense_rows=data.draw(st.integers(0, 2), label="dense_rows"),
    )
    scatter = data.draw(st.booleans(), label="from_scipy")
    A = (
        DistCSR.from_scipy(a if comm.rank == 0 else None, comm)
        if scatter
        else DistCSR.from_local_rows(_rows_of(a, comm), comm)
    )
    xg = _x(n)
    x = A.create_vector(xg if comm.rank == 0 else None, layout="cols")
    y = A.matvec(x)
    ok = A.shape == (m, n) and A.nnz == a.nnz
    ok &= rel_err(y.allgather(), a @ xg) <= 1e-13
    ok &= A.ghost_count == len(np.setdiff1d(np.unique(_rows_of(a, comm).indices), np.arange(*_own(A))))
    assert_all(comm, ok, f"m={m} n={n} density={density} scatter={scatter}")
    A.free()


def _own(mat):
    return mat.cstart, mat.cstart + mat.ncols_local


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["f8", "f4"])
def test_duplicates_unsorted_and_dtype(comm, dtype):
    """COO input with repeated and unsorted entries is summed like SciPy does."""
    m, n = 3 * comm.size + 2, 2 * comm.size + 3
    rng = np.random.default_rng(5)
    rows = rng.integers(0, m, 400)
    cols = rng.integers(0, n, 400)
    vals = rng.standard_normal(400).astype(dtype)
    a = sps.coo_array((vals, (rows, cols)), shape=(m, n))
    start, count = block_range(m, comm.size, comm.rank)
    mine = (rows >= start) & (rows < start + count)
    local = sps.coo_array((vals[mine], (rows[mine] - start, cols[mine])), shape=(count, n))
    A = DistCSR.from_local_rows(local, comm)
    xg = _x(n).astype(dtype)
    y = A.matvec(A.create_vector(xg if comm.rank == 0 else None, layout="cols"))
    tol = 1e-5 if dtype == "f4" else 1e-13
    ok = A.dtype == np.dtype(dtype) and y.dtype == np.dtype(dtype)
    ok &= rel_err(y.allgather(), a.tocsr() @ xg) <= tol
    ok &= A.nnz == a.tocsr().nnz
    assert_all(comm, ok, dtype)
    A.free()


@pytest.mark.mpi
@pytest.mark.parametrize(("shape", "periodic"), [((13, 9), False), ((8, 6, 5), (True, False, True)), ((7, 5), True)])
def test_poisson_matrix_and_products(comm, shape, periodic):
    ref = poisson_scipy(shape, periodic)
    A = poisson_matrix(shape, comm, periodic=periodic, spacing=1.0)
    x = A.create_vector(lambda i: np.sin(0.37 * i) + 0.1 * i)
    xg = np.sin(0.37 * np.arange(ref.shape[0])) + 0.1 * np.arange(ref.shape[0])
    y = A.create_vector()
    dot = comm.allreduce(A.matvec_dot(x, y))
    g = A.to_scipy(root=0)
    ok = rel_err(y.allgather(), ref @ xg) <= 1e-13
    ok &= abs(dot - xg @ (ref @ xg)) <= 1e-12 * abs(xg @ (ref @ xg))
    ok &= rel_err(A.diagonal().allgather(), ref.diagonal()) == 0
    if comm.rank == 0:
        ok &= abs(g - ref).max() == 0
    else:
        ok &= g is None
    ok &= A.stats["matvecs"] == 1
    assert_all(comm, ok, f"{shape} periodic={periodic}")
    A.free()


@pytest.mark.mpi
def test_explicit_column_layout_and_ghosted_x(comm):
    """A column layout given as a CartDecomp; x may carry ghosts (its interior is used)."""
    m, n = 4 * comm.size + 1, 3 * comm.size + 2
    a = random_sparse(m, n, 0.4, seed=11, dense_rows=1)
    cols = CartDecomp((n,), comm, halo=2)
    A = DistCSR.from_local_rows(_rows_of(a, comm), comm, col_decomp=cols)
    xg = _x(n, 3)
    x = DistArray.from_global(cols, xg if comm.rank == 0 else None)
    y = A.matvec(x)
    y2 = A.create_vector()
    A.matvec(x, y2)
    ok = rel_err(y.allgather(), a @ xg) <= 1e-13 and np.array_equal(y.interior, y2.interior)
    assert_all(comm, ok)
    A.free()
    cols.free()


@pytest.mark.mpi
def test_local_rows_round_trip(comm):
    a = random_sparse(5 * comm.size, 4 * comm.size, 0.3, seed=2, dense_rows=1)
    A = DistCSR.from_scipy(a if comm.rank == 0 else None, comm)
    ok = abs(A.local_rows() - _rows_of(a, comm)).max() == 0 if a.nnz else True
    ok &= set(A.neighbors) <= set(range(comm.size)) - {comm.rank}
    assert_all(comm, ok)
    A.free()


# -- errors: every rank raises, nobody hangs -----------------------------------------------


@pytest.mark.mpi
def test_x_with_wrong_layout(comm):
    a = random_sparse(3 * comm.size + 1, 2 * comm.size, 0.5, seed=1)
    A = DistCSR.from_scipy(a if comm.rank == 0 else None, comm)
    rows_vec = A.create_vector()  # length m, but matvec wants length n
    ok = raises_everywhere(comm, ValueError, lambda: A.matvec(rows_vec), "columns")
    ok &= raises_everywhere(comm, TypeError, lambda: A.matvec(np.zeros(3)), "DistArray")
    x32 = DistArray.zeros(A.col_decomp, "f4")
    ok &= raises_everywhere(comm, TypeError, lambda: A.matvec(x32), "dtype")
    ok &= raises_everywhere(comm, ValueError, lambda: A.matvec_dot(A.create_vector(layout="cols"), rows_vec), "square")
    ok &= raises_everywhere(comm, ValueError, lambda: A.create_vector(layout="diag"), "layout")
    assert_all(comm, ok)
    A.free()


@pytest.mark.mpi(min_size=2)
def test_rows_not_in_block_layout(comm):
    n = 4 * comm.size
    extra = 1 if comm.rank == comm.size - 1 else 0  # only the first ranks may hold one row more
    local = sps.csr_array(np.eye(4 + extra, n))
    ok = raises_everywhere(comm, ValueError, lambda: DistCSR.from_local_rows(local, comm), "block layout")
    assert_all(comm, ok)


@pytest.mark.mpi(min_size=2)
def test_bad_rows_on_one_rank(comm):
    n = 3 * comm.size
    ptr = np.array([0, 1, 2, 3])
    idx = np.array([0, 1, n + 5 if comm.rank == comm.size - 1 else 2])
    local = (ptr, idx, np.ones(3), (3, n))
    ok = raises_everywhere(comm, ValueError, lambda: DistCSR.from_local_rows(local, comm), "column indices")
    ok &= raises_everywhere(
        comm, ValueError, lambda: DistCSR.from_local_rows(sps.csr_array((3, n + comm.rank)), comm), "columns"
    )
    bad = "not a matrix" if comm.rank == 1 else sps.csr_array((3, n))
    ok &= raises_everywhere(comm, ValueError, lambda: DistCSR.from_local_rows(bad, comm), "scipy.sparse")
    assert_all(comm, ok)


@pytest.mark.mpi
def test_from_scipy_bad_root_input(comm):
    ok = raises_everywhere(comm, ValueError, lambda: DistCSR.from_scipy(None, comm), "no matrix")
    dense = np.eye(4 * comm.size) if comm.rank == 0 else None
    ok &= raises_everywhere(comm, ValueError, lambda: DistCSR.from_scipy(dense, comm), "scipy.sparse")
    if comm.size > 1:
        small = sps.csr_array(np.eye(comm.size - 1, 4 * comm.size)) if comm.rank == 0 else None
        ok &= raises_everywhere(comm, ValueError, lambda: DistCSR.from_scipy(small, comm), "cannot be split")
    cplx = sps.csr_array(np.eye(comm.size * 2, dtype=complex)) if comm.rank == 0 else None
    ok &= raises_everywhere(comm, ValueError, lambda: DistCSR.from_scipy(cplx, comm), "float32 or float64")
    ok &= raises_everywhere(comm, ValueError, lambda: DistCSR.from_scipy(None, comm, root=comm.size), "root")
    assert_all(comm, ok)


@pytest.mark.mpi
def test_column_layout_mismatch(comm):
    n = 2 * comm.size + 1
    wrong = CartDecomp((n + 1,), comm, halo=0)
    local = _rows_of(sps.csr_array(np.eye(n)), comm)
    ok = raises_everywhere(
        comm, ValueError, lambda: DistCSR.from_local_rows(local, comm, col_decomp=wrong), "col_decomp has"
    )
    assert_all(comm, ok)
    wrong.free()
