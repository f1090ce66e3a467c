"""BLAS-1 kernels against NumPy on random lengths, strides and dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from hpcml.kernels import blas1
from hypothesis import given
from hypothesis import strategies as st
from kernels_helpers import DTYPES, tol, vectors

METHODS = ["auto", "numba", "library"]


@given(n=st.integers(0, 300), dtype=DTYPES, data=st.data(), method=st.sampled_from(METHODS))
def test_axpy_scal_copy_match_numpy(n, dtype, data, method):
    x, y = data.draw(vectors(n, dtype, count=2))
    a = data.draw(st.floats(-3, 3, width=32))
    expect = y.astype(np.float64) + np.float64(dtype(a)) * x.astype(np.float64)
    got = blas1.axpy(a, x, y, method=method)
    assert got is y
    np.testing.assert_allclose(y, expect, rtol=tol(dtype), atol=tol(dtype))

    z = x.copy()
    assert blas1.scal(a, z, method=method) is z
    np.testing.assert_allclose(z, x.astype(np.float64) * np.float64(dtype(a)), rtol=tol(dtype), atol=0)

    w = np.full_like(y, np.nan)
    blas1.copy(x, w, method=method)
    np.testing.assert_array_equal(w, x)


@given(n=st.integers(0, 300), dtype=DTYPES, data=st.data(), method=st.sampled_from(METHODS))
def test_dot_nrm2_match_numpy(n, dtype, data, method):
    x, y = data.draw(vectors(n, dtype, count=2))
    d = blas1.dot(x, y, method=method)
    ref = float(np.dot(x.astype(np.float64), y.astype(np.float64)))
    scale = float(np.abs(x.astype(np.float64) * y).sum()) + 1e-30
    assert d.dtype == np.dtype(dtype)
    assert abs(float(d) - ref) <= tol(dtype) * scale
    nr = blas1.nrm2(x, method=method)
    assert nr.dtype == np.dtype(dtype)
    np.testing.assert_allclose(float(nr), np.linalg.norm(x.astype(np.float64)), rtol=tol(dtype))


@pytest.mark.parametrize(
    "values, expect",
    [
        ([1e200, 1e200, -1e200], np.sqrt(3.0) * 1e200),  # squares overflow
        ([3e-200, 4e-200], 5e-200),  # squares underflow
        ([np.inf, 1.0], np.inf),
        ([-np.inf, np.nan], np.nan),
        ([0.0, 0.0], 0.0),
        ([], 0.0),
    ],
)
def test_nrm2_no_spurious_overflow(values, expect):
    got = float(blas1.nrm2(np.array(values, dtype=np.float64)))
    if np.isnan(expect):
        assert np.isnan(got)
    else:
        np.testing.assert_allclose(got, expect, rtol=1e-14)


@pytest.mark.parametrize("a", [np.inf, -np.inf, np.nan, 0.0])
def test_axpy_non_finite_alpha_is_ieee(a):
    x = np.array([0.0, 1.0, -2.0, np.inf])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    with np.errstate(invalid="ignore"):
        expect = y + a * x
    blas1.axpy(a, x, y)
    np.testing.assert_array_equal(y, expect)


def test_errors():
    x = np.ones(4)
    with pytest.raises(TypeError, match="dtype mismatch"):
        blas1.axpy(1.0, x, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="length"):
        blas1.dot(x, np.ones(5))
    with pytest.raises(ValueError, match="1-D"):
        blas1.nrm2(np.ones((2, 2)))
    with pytest.raises(TypeError, match="float32 or float64"):
        blas1.dot(np.ones(3, np.int64), np.ones(3, np.int64))
    with pytest.raises(TypeError, match="scalar"):
        blas1.axpy(np.ones(2), x, x.copy())
    ro = np.ones(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        blas1.scal(2.0, ro)
    with pytest.raises(TypeError, match="host"):
        blas1.dot(x, x, backend="gpu")
    with pytest.raises(ValueError, match="unknown method"):
        blas1.dot(x, x, method="fast")
