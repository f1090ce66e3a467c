"""GEMV against NumPy for C/F/strided matrices, both transposes and BLAS beta semantics."""

from __future__ import annotations

import numpy as np
import pytest
from hpcml.kernels.gemv import gemv
from hypothesis import given
from hypothesis import strategies as st
from kernels_helpers import DTYPES, matrices, tol, vectors


@given(
    m=st.integers(0, 40),
    n=st.integers(0, 40),
    dtype=DTYPES,
    trans=st.booleans(),
    with_y=st.booleans(),
    method=st.sampled_from(["auto", "numba", "library"]),
    data=st.data(),
)
def test_gemv_matches_numpy(m, n, dtype, trans, with_y, method, data):
    A = data.draw(matrices(m, n, dtype))
    nin, nout = (m, n) if trans else (n, m)
    (x,) = data.draw(vectors(nin, dtype))
    (y,) = data.draw(vectors(nout, dtype))
    alpha = data.draw(st.sampled_from([1.0, -0.5, 2.0]))
    beta = data.draw(st.sampled_from([0.0, 1.0, 0.25])) if with_y else 0.0
    opA = (A.T if trans else A).astype(np.float64)
    expect = alpha * (opA @ x.astype(np.float64)) + (beta * y.astype(np.float64) if beta else 0)
    if with_y and beta == 0:
        y[...] = np.nan  # beta == 0 must not read y
    got = gemv(A, x, y if with_y else None, alpha, beta, trans, method=method)
    assert got.shape == (nout,) and got.dtype == np.dtype(dtype)
    if with_y:
        assert got is y
    scale = np.abs(opA) @ np.abs(x.astype(np.float64)) + 1.0
    assert np.all(np.abs(got - expect) <= tol(dtype) * scale * 4)


def test_gemv_errors():
    A = np.ones((3, 4))
    with pytest.raises(ValueError, match="x has length"):
        gemv(A, np.ones(3))
    with pytest.raises(ValueError, match="y has length"):
        gemv(A, np.ones(4), np.ones(4))
    with pytest.raises(TypeError, match="dtype mismatch"):
        gemv(A, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        gemv(np.ones(3), np.ones(3))
