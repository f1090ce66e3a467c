"""Every Numba-CUDA kernel in the CUDA simulator, on small sizes, against NumPy.

Runs only with ``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported;
``tests/kernels/test_cuda_simulator.py`` starts it in such a subprocess.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps
from hpcml.kernels import blas1, gemm, gemv, jacobi_step, laplacian, sell_from_csr, spmv

from hpcml.backend import simulator_enabled

pytestmark = pytest.mark.skipif(
    not simulator_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1 (tests/kernels/test_cuda_simulator.py sets it)"
)

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
SIM = {"backend": "sim"}


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blas1(dtype):
    x = rand(601, dtype, 1)[::2]  # 301 strided entries: 3 blocks with a ragged tail
    y = rand(301, dtype, 2)
    y0 = y.copy()
    blas1.axpy(1.5, x, y, **SIM)
    np.testing.assert_allclose(y, y0 + dtype(1.5) * x, rtol=RTOL[dtype])
    z = x.copy()
    blas1.scal(-2.0, z, **SIM)
    np.testing.assert_array_equal(z, x * dtype(-2.0))
    w = np.zeros_like(y)
    blas1.copy(x, w, **SIM)
    np.testing.assert_array_equal(w, x)
    np.testing.assert_allclose(blas1.dot(x, y0, **SIM), np.dot(x.astype(float), y0), rtol=RTOL[dtype])
    np.testing.assert_allclose(blas1.nrm2(x, **SIM), np.linalg.norm(x.astype(float)), rtol=RTOL[dtype])


def test_nrm2_scaled_fallback():
    with np.errstate(over="ignore"):  # the simulator computes the overflowing square in NumPy
        np.testing.assert_allclose(blas1.nrm2(np.full(3, 1e200), **SIM), np.sqrt(3) * 1e200, rtol=1e-14)
    np.testing.assert_allclose(blas1.nrm2(np.array([3e-200, 4e-200]), **SIM), 5e-200, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("trans", [False, True])
def test_gemv(dtype, order, trans):
    # the row kernel launches a block of 128 threads per row: keep few rows
    # along the unit stride (5 x 37 in C order, 37 x 5 in F order)
    m, n = (5, 37) if order == "C" else (37, 5)
    A = np.asarray(rand((m, n), dtype, 3), order=order)
    x = rand(m if trans else n, dtype, 4)
    y = rand(n if trans else m, dtype, 5)
    expect = 2.0 * ((A.T if trans else A).astype(float) @ x) + 0.5 * y
    np.testing.assert_allclose(gemv(A, x, y.copy(), 2.0, 0.5, trans, **SIM), expect, rtol=RTOL[dtype] * 10)
    y0 = y.copy()
    y[...] = np.nan  # beta == 0 must not read y
    got = gemv(A, x, y, 2.0, 0.0, trans, **SIM)
    np.testing.assert_allclose(got, expect - 0.5 * y0, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mkn", [(20, 35, 18), (1, 1, 1), (17, 0, 3)])
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_gemm_tiled(dtype, mkn, activation):
    m, k, n = mkn
    A = rand((m, k), dtype, 6)
    B = np.asfortranarray(rand((k, n), dtype, 7))
    C = rand((m, n), dtype, 8)
    bias = rand(n, dtype, 9)
    r = 1.5 * (A.astype(float) @ B) - 0.5 * C + bias
    r = {None: r, "relu": np.maximum(r, 0), "tanh": np.tanh(r)}[activation]
    got = gemm(A, B, C, 1.5, -0.5, "tiled", bias=bias, activation=activation, **SIM)
    np.testing.assert_allclose(got, r, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("idx", [np.int32, np.int64])
def test_spmv_csr_and_sell(dtype, idx):
    rng = np.random.default_rng(10)
    lens = rng.integers(0, 6, 70) * (rng.random(70) > 0.2)  # empty rows
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(idx)
    indices = rng.integers(0, 45, int(indptr[-1])).astype(idx)  # unsorted, duplicates
    data = rng.standard_normal(indices.size).astype(dtype)
    M = sps.csr_matrix((data, indices, indptr), shape=(70, 45))
    x, y = rand(45, dtype, 11), rand(70, dtype, 12)
    expect = -1.0 * (M.astype(float) @ x) + 2.0 * y
    for A in ((indptr, indices, data, (70, 45)), sell_from_csr(M, C=8, sigma=32)):
        got = spmv(A, x, y.copy(), -1.0, 2.0, method="csr", **SIM)
        np.testing.assert_allclose(got, expect, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "points", "halo"), [((11, 13), 5, 1), ((12, 10), 9, 2), ((6, 7, 9), 7, 1)])
def test_stencils(dtype, shape, points, halo):
    u = rand(shape, dtype, 13)
    f = rand(shape, dtype, 14)
    hs = 0.5 if points == 9 else tuple(0.5 + 0.25 * d for d in range(len(shape)))
    for op in ("lap", "jac"):
        if op == "jac" and points == 9:
            continue
        outs = []
        for backend, regions in (("cpu", ["all"]), ("sim", ["interior", "boundary"])):
            out = np.full(shape, -7.0, dtype=dtype)
            for region in regions:
                if op == "lap":
                    laplacian(u, out, hs, points=points, halo=halo, region=region, backend=backend)
                else:
                    jacobi_step(u, f, out, hs, halo=halo, region=region, backend=backend)
            outs.append(out)
        # the CPU kernels are tested against NumPy references elsewhere
        np.testing.assert_allclose(outs[1], outs[0], rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)
