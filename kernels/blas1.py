"""BLAS level 1: ``axpy``, ``dot``, ``nrm2``, ``scal``, ``copy``.

Every function takes 1-D float32/float64 arrays of any stride.  On the CPU the
Numba kernels are parallel loops that make no temporaries (``y += a*x`` in
NumPy first builds ``a*x``); reductions accumulate in float64 for either dtype
and return the input's dtype.  On the GPU ``method="auto"`` uses CuPy (cuBLAS
or one fused element-wise kernel) and ``method="numba"`` our Numba-CUDA kernels;
GPU reductions return a 0-d CuPy array so that no device synchronisation is
forced (``float(r)`` works on both).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from numba import cuda, njit, prange

from hpcml.backend import cupy_module, resolve_backend

from ._common import (
    CUDA_BLOCK,
    FM_CONTRACT,
    FM_REDUCE,
    as_scalar,
    check_ndim,
    check_same_dtype,
    check_writeable,
    cuda_block_sum,
    grid_1d,
    kernel_module,
    launch,
    pick_impl,
)

__all__ = ["axpy", "copy", "dot", "nrm2", "scal"]

# below this sum of squares the squares of x may have lost bits to underflow
_NRM2_TINY = 1e-280

# ---------------------------------------------------------------- Numba CPU ---


@njit(parallel=True, cache=True, fastmath=FM_CONTRACT)
def _axpy_cpu(a, x, y):  # pragma: no cover - compiled
    for i in prange(x.shape[0]):
        y[i] += a * x[i]


@njit(parallel=True, cache=True)
def _scal_cpu(a, x):  # pragma: no cover - compiled
    for i in prange(x.shape[0]):
        x[i] *= a


@njit(parallel=True, cache=True)
def _copy_cpu(x, y):  # pragma: no cover - compiled
    for i in prange(x.shape[0]):
        y[i] = x[i]


@njit(parallel=True, cache=True, fastmath=FM_REDUCE)
def _dot_cpu(x, y, nch):  # pragma: no cover - compiled
    # One contiguous chunk per thread (nch is passed in: calling
    # get_num_threads() here would make the function uncacheable); slicing makes the chunk start at index 0
    # so LLVM sees a plain unit-stride loop it can vectorise.
    n = x.shape[0]
    s = 0.0
    for c in prange(nch):
        lo = c * n // nch
        hi = (c + 1) * n // nch
        xs = x[lo:hi]
        ys = y[lo:hi]
        t = 0.0
        for i in range(hi - lo):
            t += np.float64(xs[i]) * np.float64(ys[i])
        s += t
    return s


@njit(cache=True)
def _nrm2_scaled_cpu(x):  # pragma: no cover - compiled
    # Two-pass LAPACK-style fallback, only taken when the fast sum of squares
    # overflowed or underflowed.
    scale = 0.0
    for i in range(x.shape[0]):
        v = abs(np.float64(x[i]))
        if v > scale or math.isnan(v):
            scale = v
    if scale == 0.0 or not math.isfinite(scale):
        return scale
    s = 0.0
    for i in range(x.shape[0]):
        v = np.float64(x[i]) / scale
        s += v * v
    return scale * math.sqrt(s)


# --------------------------------------------------------------- Numba-CUDA ---


@functools.cache
def _cuda_kernels() -> dict[str, Any]:
    block_sum = cuda_block_sum()
    from numba import float64

    @cuda.jit
    def axpy_k(a, x, y):  # pragma: no cover - device code
        i = cuda.grid(1)
        if i < x.shape[0]:
            y[i] += a * x[i]

    @cuda.jit
    def scal_k(a, x):  # pragma: no cover - device code
        i = cuda.grid(1)
        if i < x.shape[0]:
            x[i] *= a

    @cuda.jit
    def copy_k(x, y):  # pragma: no cover - device code
        i = cuda.grid(1)
        if i < x.shape[0]:
            y[i] = x[i]

    @cuda.jit
    def dot_k(x, y, out):  # pragma: no cover - device code
        # grid-stride partial sums, a shared-memory tree per block, one atomic
        # add per block into the float64 result.
        sm = cuda.shared.array(CUDA_BLOCK, float64)
        tid = cuda.threadIdx.x
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        s = 0.0
        while i < x.shape[0]:
            s += float64(x[i]) * float64(y[i])
            i += stride
        total = block_sum(sm, tid, s)
        if tid == 0:
            cuda.atomic.add(out, 0, total)

    return {"axpy": axpy_k, "scal": scal_k, "copy": copy_k, "dot": dot_k}


def _cuda_elementwise(name: str, backend: str, n: int, *args: Any) -> None:
    launch(_cuda_kernels()[name], grid_1d(n), CUDA_BLOCK, backend, *args)


def _cuda_dot(x: Any, y: Any, backend: str) -> Any:
    xp = kernel_module(backend, x)
    out = xp.zeros(1, dtype=np.float64)
    # enough blocks to fill a GPU, few enough that the atomics are negligible
    blocks = min(grid_1d(x.shape[0]), 1024 if backend == "gpu" else 4)
    launch(_cuda_kernels()["dot"], blocks, CUDA_BLOCK, backend, x, y, out)
    return out[0]


# ------------------------------------------------------------------- CuPy ---


@functools.cache
def _cupy_axpy_kernel() -> Any:
    cp = cupy_module()
    return cp.ElementwiseKernel("T a, T x", "T y", "y = a * x + y", "hpcml_axpy")


# ------------------------------------------------------------------ public ---


def _vectors(x: Any, y: Any, backend: str | None) -> tuple[str, np.dtype]:
    b = resolve_backend(x, y, backend=backend)
    check_ndim("x", x, 1)
    if y is not None:
        check_ndim("y", y, 1)
        if x.shape != y.shape:
            raise ValueError(f"x and y differ in length: {x.shape[0]} != {y.shape[0]}")
    return b, check_same_dtype(x=x, y=y)


def axpy(a: float, x: Any, y: Any, *, backend: str | None = None, method: str = "auto") -> Any:
    """Compute ``y <- a*x + y`` in place and return ``y``.

    Parameters
    ----------
    a : float
        Scalar; any IEEE value (inf/NaN propagate as in ``y + a*x``).
    x, y : array, 1-D, same length and dtype (float32/float64), any strides
        NumPy arrays run the Numba CPU kernel, CuPy arrays the GPU path.
    backend : {None, "cpu", "gpu", "sim"}
        Force a backend; ``"sim"`` runs the Numba-CUDA kernel in the simulator.
    method : {"auto", "numba", "library"}
        ``"library"`` is NumPy (``y += a*x``) on the CPU and CuPy on the GPU;
        ``"numba"`` is our kernel (Numba CPU or Numba-CUDA).

    Returns
    -------
    y : the updated array.

    Notes
    -----
    The CPU and Numba-CUDA kernels may fuse ``a*x + y`` into one FMA, so the
    last bit can differ from NumPy's two roundings.
    """
    b, dt = _vectors(x, y, backend)
    check_writeable("y", y)
    a = as_scalar("a", a, dt)
    impl = pick_impl(b, method)
    if impl == "cpu":
        _axpy_cpu(a, x, y)
    elif impl == "cuda":
        _cuda_elementwise("axpy", b, x.shape[0], a, x, y)
    elif b == "gpu":
        _cupy_axpy_kernel()(a, x, y)
    else:
        y += a * x
    return y


def scal(a: float, x: Any, *, backend: str | None = None, method: str = "auto") -> Any:
    """Compute ``x <- a*x`` in place and return ``x`` (see :func:`axpy` for the keywords)."""
    b, dt = _vectors(x, None, backend)
    check_writeable("x", x)
    a = as_scalar("a", a, dt)
    impl = pick_impl(b, method)
    if impl == "cpu":
        _scal_cpu(a, x)
    elif impl == "cuda":
        _cuda_elementwise("scal", b, x.shape[0], a, x)
    else:
        x *= a
    return x


def copy(x: Any, y: Any, *, backend: str | None = None, method: str = "auto") -> Any:
    """Copy ``x`` into ``y`` (same length and dtype) and return ``y``."""
    b, _ = _vectors(x, y, backend)
    check_writeable("y", y)
    impl = pick_impl(b, method)
    if impl == "cpu":
        _copy_cpu(x, y)
    elif impl == "cuda":
        _cuda_elementwise("copy", b, x.shape[0], x, y)
    else:
        y[...] = x
    return y


def dot(x: Any, y: Any, *, backend: str | None = None, method: str = "auto") -> Any:
    """Return ``sum(x*y)`` as a scalar of the inputs' dtype.

    The Numba kernels accumulate in float64 for float32 input too (better than
    ``sdot`` and free in a memory-bound loop).  On the GPU the result is a 0-d
    CuPy array (no synchronisation); on the CPU a NumPy scalar.
    """
    b, dt = _vectors(x, y, backend)
    impl = pick_impl(b, method)
    if impl == "cpu":
        return dt.type(_dot_cpu(x, y, numba.get_num_threads()))
    if impl == "cuda":
        r = _cuda_dot(x, y, b)
        return r.astype(dt) if b == "gpu" else dt.type(r)
    return kernel_module(b, x).dot(x, y)


def nrm2(x: Any, *, backend: str | None = None, method: str = "auto") -> Any:
    """Return the Euclidean norm of ``x`` without spurious overflow or underflow.

    The fast path is one pass summing squares in float64; only when that sum
    overflowed or is so small that squares underflowed, a second, scaled pass
    runs (as LAPACK's ``dnrm2`` does in one pass).
    """
    b, dt = _vectors(x, None, backend)
    impl = pick_impl(b, method)
    if impl == "cpu":
        ssq = _dot_cpu(x, x, numba.get_num_threads())  # x read once: both streams hit the same lines
        if math.isinf(ssq) or ssq < _NRM2_TINY:
            return dt.type(_nrm2_scaled_cpu(x))
        return dt.type(math.sqrt(ssq))
    if impl == "cuda":
        xp = kernel_module(b, x)
        ssq = float(_cuda_dot(x, x, b))
        if math.isinf(ssq) or ssq < _NRM2_TINY:
            scale = float(xp.abs(x).max()) if x.shape[0] else 0.0
            if scale == 0.0 or not math.isfinite(scale):
                return dt.type(scale)
            xs = (x / scale).astype(x.dtype)
            return dt.type(scale * math.sqrt(float(_cuda_dot(xs, xs, b))))
        return dt.type(math.sqrt(ssq))
    return kernel_module(b, x).linalg.norm(x)
