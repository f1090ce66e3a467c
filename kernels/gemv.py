"""Dense matrix-vector product ``y <- alpha*op(A) @ x + beta*y``.

``op(A)`` is ``A`` or ``A.T`` (``trans=True``).  C- and F-ordered (and any
strided) ``A`` are handled by walking the matrix along its unit stride: a
row-wise dot product for ``A @ x`` on a row-major matrix and a thread-private
row accumulation for ``A.T @ x``.  As in BLAS, ``beta == 0`` means ``y`` is not
read, so it may hold garbage.
"""

from __future__ import annotations

import functools
from typing import Any

import numba
import numpy as np
from numba import cuda, njit, prange

from hpcml.backend import resolve_backend

from ._common import (
    CUDA_BLOCK,
    FM_REDUCE,
    as_scalar,
    check_ndim,
    check_same_dtype,
    check_writeable,
    cuda_block_sum,
    cupy_axpby,
    grid_1d,
    kernel_module,
    launch,
    pick_impl,
    row_major_view,
)

__all__ = ["gemv"]

# ---------------------------------------------------------------- Numba CPU ---


@njit(parallel=True, cache=True, fastmath=FM_REDUCE)
def _gemv_rows_cpu(A, x, y, alpha, beta, zero):  # pragma: no cover - compiled
    # y[i] = alpha * <A[i, :], x> + beta*y[i]; A is walked row by row.
    m, n = A.shape
    for i in prange(m):
        row = A[i]
        s = zero
        for j in range(n):
            s += row[j] * x[j]
        if beta == zero:
            y[i] = alpha * s
        else:
            y[i] = alpha * s + beta * y[i]


@njit(parallel=True, cache=True, fastmath=FM_REDUCE)
def _gemv_cols_cpu(A, x, y, alpha, beta, zero, nch):  # pragma: no cover - compiled
    # y = alpha * A.T @ x + beta*y with A walked row by row: every thread sums
    # x[i]*A[i, :] for its block of rows into a private partial vector.
    m, n = A.shape
    part = np.zeros((nch, n), dtype=y.dtype)
    for c in prange(nch):
        p = part[c]
        for i in range(c * m // nch, (c + 1) * m // nch):
            row = A[i]
            xi = x[i]
            for j in range(n):
                p[j] += xi * row[j]
    for j in prange(n):
        s = part[0, j]
        for c in range(1, nch):
            s += part[c, j]
        if beta == zero:
            y[j] = alpha * s
        else:
            y[j] = alpha * s + beta * y[j]


# --------------------------------------------------------------- Numba-CUDA ---


@functools.cache
def _cuda_kernels() -> dict[str, Any]:
    block_sum = cuda_block_sum()
    from numba import float64

    @cuda.jit
    def rows_k(A, x, y, alpha, beta):  # pragma: no cover - device code
        # one block per row: strided partial sums, shared-memory tree
        sm = cuda.shared.array(CUDA_BLOCK, float64)
        i = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        s = 0.0
        j = tid
        while j < A.shape[1]:
            s += float64(A[i, j]) * float64(x[j])
            j += CUDA_BLOCK
        total = block_sum(sm, tid, s)
        if tid == 0:
            if beta == 0:
                y[i] = alpha * total
            else:
                y[i] = alpha * total + beta * y[i]

    @cuda.jit
    def cols_k(A, x, y, alpha, beta):  # pragma: no cover - device code
        # one thread per column: neighbouring threads read neighbouring
        # addresses of a row-major A (coalesced)
        j = cuda.grid(1)
        if j < A.shape[1]:
            s = 0.0
            for i in range(A.shape[0]):
                s += float64(A[i, j]) * float64(x[i])
            if beta == 0:
                y[j] = alpha * s
            else:
                y[j] = alpha * s + beta * y[j]

    return {"rows": rows_k, "cols": cols_k}


# ------------------------------------------------------------------ public ---


def gemv(
    A: Any,
    x: Any,
    y: Any = None,
    alpha: float = 1.0,
    beta: float = 0.0,
    trans: bool = False,
    *,
    backend: str | None = None,
    method: str = "auto",
) -> Any:
    """Compute ``y <- alpha * op(A) @ x + beta * y`` and return ``y``.

    Parameters
    ----------
    A : array (m, n), float32/float64, any order or strides
    x : array, length n (``trans=False``) or m (``trans=True``)
    y : array or None
        Output of length m (or n); allocated when ``None`` (then ``beta`` is
        ignored).  With ``beta == 0`` its old contents are never read.
    alpha, beta : float
        Scalars; any IEEE value.
    trans : bool
        Use ``A.T`` instead of ``A``.
    backend : {None, "cpu", "gpu", "sim"}
        Default: from where the arrays live.
    method : {"auto", "numba", "library"}
        ``"library"``: NumPy/BLAS on the CPU, CuPy/cuBLAS on the GPU (the GPU
        default); ``"numba"``: our Numba CPU (the CPU default) or Numba-CUDA kernel.

    Raises
    ------
    TypeError
        Mixed host/device arrays or mixed dtypes.
    ValueError
        Wrong dimensions or lengths.
    """
    b = resolve_backend(A, x, y, backend=backend)
    check_ndim("A", A, 2)
    check_ndim("x", x, 1)
    dt = check_same_dtype(A=A, x=x, y=y)
    m, n = A.shape
    nin, nout = (m, n) if trans else (n, m)
    if x.shape[0] != nin:
        raise ValueError(f"x has length {x.shape[0]}, op(A) has {nin} columns")
    xp = kernel_module(b, A)
    if y is None:
        y = xp.empty(nout, dtype=dt)
        beta = 0.0
    else:
        check_ndim("y", y, 1)
        check_writeable("y", y)
        if y.shape[0] != nout:
            raise ValueError(f"y has length {y.shape[0]}, op(A) has {nout} rows")
    alpha, beta = as_scalar("alpha", alpha, dt), as_scalar("beta", beta, dt)
    impl = pick_impl(b, method)
    if impl == "library":
        t = (A.T if trans else A) @ x
        if b == "gpu":
            return cupy_axpby(alpha, t, beta, y)
        y[...] = alpha * t if beta == 0 else alpha * t + beta * y
        return y
    Ar, tr = row_major_view(A, trans)
    if impl == "cpu":
        if tr:
            nch = max(1, min(numba.get_num_threads(), Ar.shape[0]))
            _gemv_cols_cpu(Ar, x, y, alpha, beta, dt.type(0), nch)
        else:
            _gemv_rows_cpu(Ar, x, y, alpha, beta, dt.type(0))
        return y
    k = _cuda_kernels()
    if nout == 0:
        return y
    if tr:
        launch(k["cols"], grid_1d(nout), CUDA_BLOCK, b, Ar, x, y, alpha, beta)
    else:
        launch(k["rows"], nout, CUDA_BLOCK, b, Ar, x, y, alpha, beta)
    return y
