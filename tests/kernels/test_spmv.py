"""SpMV (CSR and SELL-C-sigma) against SciPy and a dense loop reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps
from hpcml.kernels.spmv import SellMatrix, sell_from_csr, spmv
from hypothesis import given
from hypothesis import strategies as st
from kernels_helpers import csr_parts, csr_reference, tol, vectors


def _close(got, expect, parts, x, dtype):
    indptr, indices, data, shape = parts
    absA = sps.csr_matrix((np.abs(data.astype(np.float64)), indices, indptr), shape=shape)
    scale = absA @ np.abs(x.astype(np.float64)) + 1.0
    assert np.all(np.abs(got.astype(np.float64) - expect) <= tol(dtype) * scale * 4)


@given(
    parts=csr_parts(),
    form=st.sampled_from(["tuple", "scipy", "sell"]),
    method=st.sampled_from(["auto", "csr", "library"]),
    with_y=st.booleans(),
    data=st.data(),
)
def test_spmv_matches_reference(parts, form, method, with_y, data):
    indptr, indices, data_, shape = parts
    dtype = data_.dtype
    (x,) = data.draw(vectors(shape[1], dtype))
    (y,) = data.draw(vectors(shape[0], dtype))
    alpha = data.draw(st.sampled_from([1.0, -2.0]))
    beta = data.draw(st.sampled_from([0.0, 0.5])) if with_y else 0.0
    expect = alpha * csr_reference(indptr, indices, data_, shape, x) + (beta * y.astype(np.float64) if beta else 0)
    if form == "tuple":
        A = parts
    elif form == "scipy":
        A = sps.csr_matrix((data_, indices, indptr), shape=shape)
    else:
        C = data.draw(st.sampled_from([1, 2, 4, 8]))
        A = sell_from_csr(parts, C=C, sigma=data.draw(st.sampled_from([1, C, 4 * C])))
        assert A.nnz == len(indices)
        assert A.fill_ratio >= 1.0 or A.nnz == 0
    if with_y and beta == 0:
        y[...] = np.nan
    got = spmv(A, x, y if with_y else None, alpha, beta, method=method, check=True)
    assert got.shape == (shape[0],) and got.dtype == dtype
    _close(got, expect, parts, x, dtype)


def test_duplicates_and_unsorted_sum_like_scipy():
    indptr = np.array([0, 3, 3, 5], dtype=np.int64)
    indices = np.array([2, 0, 2, 1, 1], dtype=np.int32)
    data = np.arange(1.0, 6.0)
    x = np.array([1.0, 10.0, 100.0])
    M = sps.csr_matrix((data, indices, indptr), shape=(3, 3))
    expect = M @ x
    np.testing.assert_allclose(expect, [402.0, 0.0, 90.0])
    for A in ((indptr, indices, data, (3, 3)), M, sell_from_csr(M, C=2, sigma=2)):
        np.testing.assert_array_equal(spmv(A, x), expect)


def test_poisson_matrix_large_enough_for_every_thread_block():
    n = 40
    T = sps.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    A = (sps.kron(sps.eye(n), T) + sps.kron(T, sps.eye(n))).tocsr()
    x = np.random.default_rng(0).standard_normal(n * n)
    np.testing.assert_allclose(spmv(A, x), A @ x, rtol=1e-13, atol=1e-13)


def test_sell_layout():
    M = sps.csr_matrix(np.array([[1.0, 0, 0], [2, 3, 4], [0, 0, 0], [5, 6, 0], [7, 0, 0]]))
    S = sell_from_csr(M, C=2, sigma=4)
    assert isinstance(S, SellMatrix)
    # window of 4 rows sorted by length: rows 1 (3), 3 (2), 0 (1), 2 (0); then row 4 and a pad lane
    np.testing.assert_array_equal(S.perm, [1, 3, 0, 2, 4, -1])
    np.testing.assert_array_equal(S.row_len, [3, 2, 1, 0, 1, 0])
    np.testing.assert_array_equal(S.slice_ptr, [0, 6, 8, 10])
    assert S.fill_ratio == 10 / 7


def test_spmv_errors():
    A = sps.random(5, 4, density=0.5, format="csr", random_state=0)
    with pytest.raises(TypeError, match="tocsr"):
        spmv(A.tocoo(), np.ones(4))
    with pytest.raises(ValueError, match="x has shape"):
        spmv(A, np.ones(5))
    with pytest.raises(TypeError, match="dtype mismatch"):
        spmv(A, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="indptr has length"):
        spmv((A.indptr[:-1], A.indices, A.data, A.shape), np.ones(4))
    with pytest.raises(TypeError, match="int32 or int64"):
        spmv((A.indptr.astype(np.float64), A.indices, A.data, A.shape), np.ones(4))
    bad_cols = A.indices.copy()
    bad_cols[0] = 4
    with pytest.raises(IndexError, match="column indices"):
        spmv((A.indptr, bad_cols, A.data, A.shape), np.ones(4), check=True)
    bad_ptr = A.indptr.copy()
    bad_ptr[-1] = len(A.indices) + 3
    with pytest.raises(IndexError, match="indptr"):
        spmv((bad_ptr, A.indices, A.data, A.shape), np.ones(4))
    with pytest.raises(ValueError, match="sigma"):
        sell_from_csr(A, C=4, sigma=6)


def test_plan_cached_per_matrix_and_rebuilt_when_the_pattern_changes():
    from hpcml.kernels.spmv import csr_plan

    A = sps.random(300, 200, density=0.05, format="csr", random_state=3)
    x = np.random.default_rng(4).standard_normal(200)
    plan = csr_plan(A.indptr, A.indices, A.shape[0])
    np.testing.assert_allclose(spmv(A, x), A @ x, rtol=1e-13, atol=1e-13)
    assert csr_plan(A.indptr, A.indices, A.shape[0]) is plan  # reused, not rebuilt
    # new values, same pattern: the same plan serves, and the product follows the values
    A.data *= -3.0
    A.data[::7] = 0.0
    np.testing.assert_allclose(spmv(A, x), A @ x, rtol=1e-13, atol=1e-13)
    assert csr_plan(A.indptr, A.indices, A.shape[0]) is plan
    # the pattern changes in place (fewer nonzeros, same arrays): a new plan
    A.eliminate_zeros()
    np.testing.assert_allclose(spmv(A, x), A @ x, rtol=1e-13, atol=1e-13)
    rebuilt = csr_plan(A.indptr, A.indices, A.shape[0])
    assert rebuilt is not plan and rebuilt.last == A.nnz
    # another matrix: its own plan
    B = sps.random(300, 200, density=0.1, format="csr", random_state=5)
    np.testing.assert_allclose(spmv(B, x), B @ x, rtol=1e-13, atol=1e-13)
    assert csr_plan(B.indptr, B.indices, B.shape[0]) is not rebuilt


def test_fused_dot_and_thread_blocks():
    """The trusted row kernel returns sum(xd * y) when asked; block plans cover every row once."""
    from hpcml.kernels.spmv import CsrPlan, _row_blocks, csr_rows

    A = sps.random(1000, 1000, density=0.01, format="csr", random_state=6)
    A.indices = A.indices.astype(np.int32)
    x = np.random.default_rng(7).standard_normal(1000)
    for threads in (1, 3):
        bounds = _row_blocks(A.indptr, 1000, threads)
        assert bounds[0] == 0 and bounds[-1] == 1000 and np.all(np.diff(bounds) >= 0)
        plan = CsrPlan(bounds, threads, 4, 0, A.nnz)
        y = np.full(1000, np.nan)
        dot = csr_rows(plan, A.indptr, A.indices, A.data, x, y, xd=x)
        np.testing.assert_allclose(y, A @ x, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(dot, x @ (A @ x), rtol=1e-12)
        y2 = np.ones(1000)
        csr_rows(plan, A.indptr, A.indices, A.data, x, y2, alpha=2.0, beta=-1.0)
        np.testing.assert_allclose(y2, 2 * (A @ x) - 1, rtol=1e-13, atol=1e-13)
