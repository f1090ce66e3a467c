"""GEMM (blas and the own tiled kernel) against NumPy, with the fused epilogue."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hpcml.kernels.gemm import gemm
from hypothesis import given
from hypothesis import strategies as st
from kernels_helpers import DTYPES, matrices, tol

# the module itself (hpcml.kernels.gemm as an attribute is the re-exported function)
gemm_mod = importlib.import_module("hpcml.kernels.gemm")


def reference(a, b, c, alpha, beta, bias, activation):
    r = alpha * (a.astype(np.float64) @ b.astype(np.float64))
    if beta:
        r = r + beta * c.astype(np.float64)
    if bias is not None:
        r = r + bias
    if activation == "relu":
        r = np.maximum(r, 0)
    elif activation == "tanh":
        r = np.tanh(r)
    return r


def check(a, b, got, expect, dtype):
    k = a.shape[1]
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)) + 1.0
    err = np.abs(got.astype(np.float64) - expect)
    assert np.all(err <= tol(dtype) * scale * max(1, k) ** 0.5 * 4), float(err.max())


@given(
    m=st.integers(0, 45),
    n=st.integers(0, 45),
    k=st.integers(0, 45),
    dtype=DTYPES,
    method=st.sampled_from(["auto", "blas", "tiled"]),
    with_c=st.booleans(),
    use_bias=st.booleans(),
    activation=st.sampled_from([None, "relu", "tanh"]),
    data=st.data(),
)
def test_gemm_matches_numpy(m, n, k, dtype, method, with_c, use_bias, activation, data):
    A = data.draw(matrices(m, k, dtype))
    B = data.draw(matrices(k, n, dtype))
    C = data.draw(matrices(m, n, dtype)) if with_c else None
    alpha = data.draw(st.sampled_from([1.0, -1.5]))
    beta = data.draw(st.sampled_from([0.0, 0.5])) if with_c else 0.0
    bias = np.random.default_rng(m * 100 + n).standard_normal(n).astype(dtype) if use_bias else None
    expect = reference(A, B, C, alpha, beta, bias, activation)
    if with_c and beta == 0:
        C[...] = np.nan  # beta == 0 must not read C
    got = gemm(A, B, C, alpha, beta, method, bias=bias, activation=activation)
    assert got.shape == (m, n) and got.dtype == np.dtype(dtype)
    if with_c:
        assert got is C
    check(A, B, got, expect, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_crosses_every_block_edge(dtype):
    # k spans three KC panels, n two NC panels, m several MC blocks with a
    # ragged MR edge: every packing and edge path of the tiled kernel runs.
    rng = np.random.default_rng(7)
    m, k, n = 2 * gemm_mod.MC_MAX + 3, 2 * gemm_mod.KC + 5, gemm_mod.NC + 3
    A = rng.standard_normal((m, k)).astype(dtype)
    B = np.asfortranarray(rng.standard_normal((k, n)).astype(dtype))
    C = rng.standard_normal((m, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    expect = reference(A, B, C, 0.5, -1.0, bias, "tanh")
    got = gemm(A, B, C, 0.5, -1.0, "tiled", bias=bias, activation="tanh")
    check(A, B, got, expect, dtype)


def test_relu_keeps_nan_and_auto_is_blas():
    A = np.array([[np.nan], [-3.0], [2.0]])
    B = np.ones((1, 1))
    for method in ("blas", "tiled"):
        out = gemm(A, B, method=method, activation="relu")
        assert np.isnan(out[0, 0]) and out[1, 0] == 0.0 and out[2, 0] == 2.0
    A = np.random.default_rng(1).standard_normal((33, 17))
    np.testing.assert_array_equal(gemm(A, A.T), A @ A.T)  # the plain case is exactly matmul


def test_gemm_errors():
    A = np.ones((3, 4))
    with pytest.raises(ValueError, match="inner dimensions"):
        gemm(A, np.ones((3, 4)))
    with pytest.raises(ValueError, match="C has shape"):
        gemm(A, np.ones((4, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="bias"):
        gemm(A, np.ones((4, 2)), bias=np.ones(3))
    with pytest.raises(ValueError, match="activation"):
        gemm(A, np.ones((4, 2)), activation="gelu")
    with pytest.raises(ValueError, match="method"):
        gemm(A, np.ones((4, 2)), method="strassen")
    with pytest.raises(TypeError, match="dtype mismatch"):
        gemm(A, np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="sim"):
        gemm(A, np.ones((4, 2)), backend="sim")
