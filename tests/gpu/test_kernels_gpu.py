"""hpcml.kernels on CuPy arrays: CuPy/cuBLAS/cuSPARSE paths and Numba-CUDA kernels.

Skipped without CuPy or without a CUDA device; run on a GPU machine by
``tests/gpu/run_device_checks.sh``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps

cp = pytest.importorskip("cupy")
try:
    _NDEV = cp.cuda.runtime.getDeviceCount()
except Exception:  # no driver
    _NDEV = 0
pytestmark = pytest.mark.skipif(_NDEV == 0, reason="no CUDA device")

import hpcml.kernels as hk  # noqa: E402

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def close(got, expect, dtype, scale=10):
    np.testing.assert_allclose(cp.asnumpy(got), expect, rtol=RTOL[dtype] * scale, atol=RTOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["auto", "library", "numba"])
def test_blas1(dtype, method):
    x, y = rand(100_003, dtype, 1), rand(100_003, dtype, 2)
    dx, dy = cp.asarray(x), cp.asarray(y)
    hk.axpy(0.5, dx, dy, method=method)
    close(dy, y + dtype(0.5) * x, dtype)
    d = hk.dot(dx[::2], dx[::2], method=method)
    assert isinstance(d, cp.ndarray) and d.ndim == 0  # no host synchronisation forced
    close(d, np.dot(x[::2].astype(float), x[::2]), dtype, 100)
    close(hk.nrm2(dx, method=method), np.linalg.norm(x.astype(float)), dtype, 100)
    hk.scal(2.0, dx, method=method)
    close(dx, 2 * x, dtype)
    hk.copy(dx, dy, method=method)
    close(dy, 2 * x, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["library", "numba"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("trans", [False, True])
def test_gemv(dtype, method, order, trans):
    A = np.asarray(rand((300, 517), dtype, 3), order=order)
    x = rand(300 if trans else 517, dtype, 4)
    y = rand(517 if trans else 300, dtype, 5)
    expect = 1.5 * ((A.T if trans else A).astype(float) @ x) - 2.0 * y
    got = hk.gemv(cp.asarray(A, order=order), cp.asarray(x), cp.asarray(y), 1.5, -2.0, trans, method=method)
    close(got, expect, dtype, 1000)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["auto", "blas", "tiled"])
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_gemm(dtype, method, activation):
    A, B, C = rand((129, 77), dtype, 6), rand((77, 65), dtype, 7), rand((129, 65), dtype, 8)
    bias = rand(65, dtype, 9)
    r = 2.0 * (A.astype(float) @ B) + 0.5 * C + bias
    r = {None: r, "relu": np.maximum(r, 0), "tanh": np.tanh(r)}[activation]
    dC = cp.asarray(C)
    got = hk.gemm(cp.asarray(A), cp.asfortranarray(cp.asarray(B)), dC, 2.0, 0.5, method,
                 bias=cp.asarray(bias), activation=activation)  # fmt: skip
    assert got is dC
    close(got, r, dtype, 1000)


@pytest.mark.parametrize("dtype", DTYPES)
def test_spmv_all_gpu_paths(dtype):
    rng = np.random.default_rng(10)
    lens = rng.integers(0, 9, 3000) * (rng.random(3000) > 0.1)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    indices = rng.integers(0, 2000, int(indptr[-1])).astype(np.int32)  # unsorted, duplicates
    data = rng.standard_normal(indices.size).astype(dtype)
    M = sps.csr_matrix((data, indices, indptr), shape=(3000, 2000))
    x, y = rand(2000, dtype, 11), rand(3000, dtype, 12)
    expect = 3.0 * (M.astype(float) @ x) - y
    dx = cp.asarray(x)
    parts = (cp.asarray(indptr), cp.asarray(indices), cp.asarray(data), M.shape)
    for A, method in ((parts, "auto"), (parts, "csr"), (hk.sell_from_csr(M).to_device(), "auto")):
        close(hk.spmv(A, dx, cp.asarray(y), 3.0, -1.0, method=method), expect, dtype, 1000)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "points"), [((130, 67), 5), ((66, 129), 9), ((20, 33, 18), 7)])
def test_stencils_match_cpu(dtype, shape, points):
    u, f = rand(shape, dtype, 13), rand(shape, dtype, 14)
    hs = 0.5 if points == 9 else tuple(0.5 + 0.25 * d for d in range(len(shape)))
    ref = hk.laplacian(u, np.zeros_like(u), hs, points=points)
    du = cp.asarray(u)
    dout = cp.zeros_like(du)
    for region in ("interior", "boundary"):
        hk.laplacian(du, dout, hs, points=points, region=region)
    close(dout, ref, dtype)
    if points != 9:
        ref = hk.jacobi_step(u, f, np.zeros_like(u), hs)
        close(hk.jacobi_step(du, cp.asarray(f), cp.zeros_like(du), hs), ref, dtype)
        coefs = tuple(0.05 * (d + 1) for d in range(len(shape)))
        ref = hk.diffusion_step(u, np.zeros_like(u), coefs)
        close(hk.diffusion_step(du, cp.zeros_like(du), coefs), ref, dtype)


def test_mixed_devices_raise():
    with pytest.raises(TypeError, match="mixed"):
        hk.axpy(1.0, np.ones(3), cp.ones(3))
    with pytest.raises(TypeError, match="GPU"):
        hk.dot(cp.ones(3), cp.ones(3), backend="cpu")
