"""Dense matrix-matrix product with a fused epilogue.

``C <- act(alpha * A @ B + beta * C + bias)``

* ``method="blas"`` (what ``"auto"`` picks): ``numpy.matmul`` (OpenBLAS/MKL)
  or ``cupy.matmul`` (cuBLAS) - nothing we write beats a vendor GEMM - plus one
  fused pass for whatever of alpha/beta/bias/activation is not the identity.
* ``method="tiled"``: our own kernels.  On the CPU a GotoBLAS-style
  cache-blocked Numba kernel (pack a KC x NC panel of B and MC x KC blocks of A,
  a 4 x 4 register-blocked micro-kernel, the epilogue applied while the last
  K-panel is written).  On the GPU / in the simulator a shared-memory tiled
  Numba-CUDA kernel with the same epilogue.

The epilogue (``bias`` of length n added to every row, ``activation`` of
``"relu"`` or ``"tanh"``) is what the training layers use for a dense layer.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from numba import cuda, njit, prange

from hpcml.backend import resolve_backend

from ._common import (
    FM_REDUCE,
    as_scalar,
    check_method,
    check_ndim,
    check_same_dtype,
    check_writeable,
    cupy_module,
    kernel_module,
    launch,
)

__all__ = ["ACTIVATIONS", "gemm"]

#: activation name -> code passed to the compiled kernels
ACTIVATIONS = {None: 0, "relu": 1, "tanh": 2}

# Blocking of the CPU kernel.  The micro-kernel computes a MR x NR tile as MR*NR
# dot products over a K-panel; reassociation lets LLVM vectorise each dot along
# p.  4 x 4 keeps 16 vector accumulators and loads 8 vectors per 16 FMAs; 4 x 2
# (8 accumulators, 6 loads per 8 FMAs) ran at 0.50-0.51 of OpenBLAS's DGEMM on 2
# Zen 4 cores (2048^2 and 4096^2), 4 x 4 at 0.67-0.76, and at 0.63-0.75 compiled
# for AVX2 alone (NUMBA_CPU_NAME=znver3 or haswell: 16 vector registers) against
# 0.49-0.50.  A MR x KC A-panel and a KC x NR B-panel (16 KiB each) sit in L1
# (KC 256 and 384 were slower), the MC x KC block of A in L2 and the packed KC x NC
# panel of B in L3.
MR, NR = 4, 4
KC = 512
MC_MAX = 128
NC = 2048
#: shared-memory tile edge of the Numba-CUDA kernel
TILE = 16

# ---------------------------------------------------------------- Numba CPU ---


@njit(cache=True, inline="always")
def _activate(v, act):  # pragma: no cover - compiled
    if act == 1:
        if v < 0:  # NaN stays NaN, as numpy.maximum(v, 0) would keep it
            v = v * 0
    elif act == 2:
        v = np.tanh(v)
    return v


def _epilogue_impl(P, C, alpha, beta, bias, has_bias, act, zero):  # pragma: no cover - compiled
    # C = act(alpha*P + beta*C + bias); P may be C itself (beta == 0 then).
    m, n = C.shape
    for i in prange(m):
        for j in range(n):
            v = alpha * P[i, j]
            if beta != zero:
                v += beta * C[i, j]
            if has_bias:
                v += bias[j]
            C[i, j] = _activate(v, act)


@njit(cache=True, fastmath=FM_REDUCE)
def _micro(kc, a0, a1, a2, a3, b0, b1, b2, b3, zero):  # pragma: no cover - compiled
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = zero
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = zero
    for p in range(kc):
        x0 = a0[p]
        x1 = a1[p]
        x2 = a2[p]
        x3 = a3[p]
        y0 = b0[p]
        y1 = b1[p]
        y2 = b2[p]
        y3 = b3[p]
        c00 += x0 * y0
        c01 += x0 * y1
        c02 += x0 * y2
        c03 += x0 * y3
        c10 += x1 * y0
        c11 += x1 * y1
        c12 += x1 * y2
        c13 += x1 * y3
        c20 += x2 * y0
        c21 += x2 * y1
        c22 += x2 * y2
        c23 += x2 * y3
        c30 += x3 * y0
        c31 += x3 * y1
        c32 += x3 * y2
        c33 += x3 * y3
    return c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33


@njit(cache=True)
def _pack_a(A, Ap, i0, mcb, pc, kc, zero):  # pragma: no cover - compiled
    # Ap[q, r, :] = A[i0 + q*MR + r, pc:pc+kc]; rows past the edge are zero.
    for q in range(Ap.shape[0]):
        for r in range(MR):
            i = q * MR + r
            dst = Ap[q, r]
            if i < mcb:
                src = A[i0 + i, pc : pc + kc]
                for p in range(kc):
                    dst[p] = src[p]
            else:
                for p in range(kc):
                    dst[p] = zero


@njit(cache=True)
def _pack_b(B, Bp, q, jc, pc, kc, zero):  # pragma: no cover - compiled
    # Bp[q, c, :] = B[pc:pc+kc, jc + q*NR + c]: B's columns become contiguous
    # runs of kc values, so the micro-kernel streams both operands.
    n = B.shape[1]
    for c in range(NR):
        j = jc + q * NR + c
        dst = Bp[q, c]
        if j < n:
            for p in range(kc):
                dst[p] = B[pc + p, j]
        else:
            for p in range(kc):
                dst[p] = zero


@njit(cache=True, fastmath=FM_REDUCE)
def _row_block(A, Bp, C, i0, mcb, jc, pc, alpha, beta, bias, has_bias, act, zero):  # pragma: no cover - compiled
    # C[i0:i0+mcb, jc:jc+nc] (+)= alpha * A-block @ B-panel, epilogue on the last K-panel.
    m, k = A.shape
    n = C.shape[1]
    npan, _, kc = Bp.shape
    first = pc == 0
    last = pc + kc >= k
    mpan = (mcb + MR - 1) // MR
    Ap = np.empty((mpan, MR, kc), dtype=C.dtype)
    _pack_a(A, Ap, i0, mcb, pc, kc, zero)
    T = np.empty((MR, NR), dtype=C.dtype)
    for q2 in range(npan):
        b0, b1, b2, b3 = Bp[q2, 0], Bp[q2, 1], Bp[q2, 2], Bp[q2, 3]
        j0 = jc + q2 * NR
        for q in range(mpan):
            acc = _micro(kc, Ap[q, 0], Ap[q, 1], Ap[q, 2], Ap[q, 3], b0, b1, b2, b3, zero)
            T[0, 0], T[0, 1], T[0, 2], T[0, 3], T[1, 0], T[1, 1], T[1, 2], T[1, 3] = acc[:8]
            T[2, 0], T[2, 1], T[2, 2], T[2, 3], T[3, 0], T[3, 1], T[3, 2], T[3, 3] = acc[8:]
            for r in range(MR):
                i = i0 + q * MR + r
                if i >= m:
                    break
                for c in range(NR):
                    j = j0 + c
                    if j >= n:
                        break
                    v = alpha * T[r, c]
                    if not first:
                        v += C[i, j]
                    elif beta != zero:  # beta == 0: C is not read
                        v += beta * C[i, j]
                    if last:
                        if has_bias:
                            v += bias[j]
                        v = _activate(v, act)
                    C[i, j] = v


def _gemm_tiled_impl(A, B, C, alpha, beta, bias, has_bias, act, zero, mc):  # pragma: no cover - compiled
    # GotoBLAS loop order: NC-wide panels of B, KC-deep slices of K, MC-row
    # blocks of A shared out to the threads.  The loop bodies live in plain
    # njit functions: a parallel function compiles much faster when small.
    m, k = A.shape
    n = B.shape[1]
    nmb = (m + mc - 1) // mc
    for jc in range(0, n, NC):
        npan = (min(NC, n - jc) + NR - 1) // NR
        for pc in range(0, k, KC):
            kc = min(KC, k - pc)
            Bp = np.empty((npan, NR, kc), dtype=C.dtype)
            for q in prange(npan):
                _pack_b(B, Bp, q, jc, pc, kc, zero)
            for ib in prange(nmb):
                i0 = ib * mc
                _row_block(A, Bp, C, i0, min(mc, m - i0), jc, pc, alpha, beta, bias, has_bias, act, zero)


def _any_layout(impl: Any, sig: str) -> Any:
    """Compile ``impl`` for any-layout ('A') operands only, one build per dtype.

    The kernels below touch their operands through packing or one element
    at a time, so a layout-specific build is not faster; listing the
    signatures stops Numba from compiling one specialisation per C/F/strided
    combination of the operands (27 per dtype for A, B, C; seconds each).
    Built on first use so that importing stays cheap.
    """
    sigs = [sig.format(t=t) for t in ("float32", "float64")]
    return njit(sigs, parallel=True, cache=True, fastmath=FM_REDUCE)(impl)


@functools.cache
def _epilogue_cpu() -> Any:
    return _any_layout(_epilogue_impl, "void({t}[:, :], {t}[:, :], {t}, {t}, {t}[:], boolean, int64, {t})")


@functools.cache
def _gemm_tiled_cpu() -> Any:
    sig = "void({t}[:, :], {t}[:, :], {t}[:, :], {t}, {t}, {t}[:], boolean, int64, {t}, int64)"
    return _any_layout(_gemm_tiled_impl, sig)


# --------------------------------------------------------------- Numba-CUDA ---


@functools.cache
def _cuda_kernel() -> Any:
    from numba import float64

    @cuda.jit
    def gemm_k(A, B, C, alpha, beta, bias, has_bias, act):  # pragma: no cover - device code
        # Classic shared-memory tiling: each TILE x TILE block of C is built
        # from TILE-wide strips of A and B staged through shared memory, so each
        # global element is read K/TILE times instead of K times.
        sA = cuda.shared.array((TILE, TILE), float64)
        sB = cuda.shared.array((TILE, TILE), float64)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        m, k = A.shape
        n = B.shape[1]
        acc = 0.0
        for t0 in range(0, k, TILE):
            sA[ty, tx] = A[row, t0 + tx] if row < m and t0 + tx < k else 0.0
            sB[ty, tx] = B[t0 + ty, col] if t0 + ty < k and col < n else 0.0
            cuda.syncthreads()
            for q in range(TILE):
                acc += sA[ty, q] * sB[q, tx]
            cuda.syncthreads()
        if row < m and col < n:
            v = alpha * acc
            if beta != 0:
                v += beta * C[row, col]
            if has_bias:
                v += bias[col]
            if act == 1:
                if v < 0:
                    v = 0.0
            elif act == 2:
                v = math.tanh(v)
            C[row, col] = v

    return gemm_k


# ------------------------------------------------------------------- CuPy ---


@functools.cache
def _cupy_epilogue() -> Any:
    cp = cupy_module()
    return cp.ElementwiseKernel(
        "T p, T b, T alpha, T beta, int32 has_bias, int32 act",
        "T c",
        """
        T v = alpha * p;
        if (beta != (T)0) v += beta * c;
        if (has_bias) v += b;
        if (act == 1) { if (v < (T)0) v = (T)0; }
        else if (act == 2) v = tanh(v);
        c = v;
        """,
        "hpcml_gemm_epilogue",
    )


# ------------------------------------------------------------------ public ---


def _cpu_mc(m: int) -> int:
    # enough row blocks for every thread, at most MC_MAX rows (A block in L2)
    per_thread = -(-m // max(1, numba.get_num_threads()))
    return max(MR, min(MC_MAX, -(-per_thread // MR) * MR))


def gemm(
    A: Any,
    B: Any,
    C: Any = None,
    alpha: float = 1.0,
    beta: float = 0.0,
    method: str = "auto",
    *,
    bias: Any = None,
    activation: str | None = None,
    backend: str | None = None,
) -> Any:
    """Compute ``C <- act(alpha * A @ B + beta * C + bias)`` and return ``C``.

    Parameters
    ----------
    A : array (m, k);  B : array (k, n)
        float32/float64 (one dtype for all operands), C or F order or strided.
    C : array (m, n) or None
        Output, any order; allocated when ``None`` (``beta`` is then ignored).
        ``beta == 0`` never reads C (BLAS convention).
    alpha, beta : float
        Any IEEE value.
    method : {"auto", "blas", "tiled"}
        ``"auto"`` = ``"blas"``: numpy.matmul / cuBLAS and a fused epilogue pass;
        ``"tiled"``: our cache-blocked Numba CPU or shared-memory Numba-CUDA
        kernel with the epilogue fused into the last write of C.
    bias : array (n,) or None
        Added to every row of ``alpha*A@B + beta*C`` before the activation.
    activation : {None, "relu", "tanh"}
    backend : {None, "cpu", "gpu", "sim"}
        ``"sim"`` runs the Numba-CUDA tiled kernel in the CUDA simulator.

    Raises
    ------
    TypeError
        Mixed devices or dtypes.
    ValueError
        Non-matching shapes, unknown method or activation.
    """
    b = resolve_backend(A, B, C, bias, backend=backend)
    check_method(method, ("auto", "blas", "tiled"))
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {tuple(ACTIVATIONS)}")
    check_ndim("A", A, 2)
    check_ndim("B", B, 2)
    dt = check_same_dtype(A=A, B=B, C=C, bias=bias)
    (m, k), (k2, n) = A.shape, B.shape
    if k != k2:
        raise ValueError(f"inner dimensions differ: A is {A.shape}, B is {B.shape}")
    xp = kernel_module(b, A)
    if C is None:
        C = xp.empty((m, n), dtype=dt)
        beta = 0.0
    else:
        check_ndim("C", C, 2)
        check_writeable("C", C)
        if C.shape != (m, n):
            raise ValueError(f"C has shape {C.shape}, A @ B has {(m, n)}")
    if bias is not None:
        check_ndim("bias", bias, 1)
        if bias.shape[0] != n:
            raise ValueError(f"bias has length {bias.shape[0]}, C has {n} columns")
    alpha, beta = as_scalar("alpha", alpha, dt), as_scalar("beta", beta, dt)
    act = ACTIVATIONS[activation]
    has_bias = bias is not None
    bias_arr = bias if has_bias else xp.zeros(1, dtype=dt)
    if m == 0 or n == 0:
        return C
    if b == "sim" and method != "tiled":
        raise ValueError("backend='sim' only has the Numba-CUDA kernel: use method='tiled'")

    if method == "tiled" and b in ("gpu", "sim"):
        grid = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE)
        launch(_cuda_kernel(), grid, (TILE, TILE), b, A, B, C, alpha, beta, bias_arr, has_bias, act)
        return C
    if method == "tiled" and k > 0:
        _gemm_tiled_cpu()(A, B, C, alpha, beta, bias_arr, has_bias, act, dt.type(0), _cpu_mc(m))
        return C

    # BLAS path: multiply straight into C when C's old value is not needed, else
    # into a temporary, then one fused pass for alpha/beta/bias/activation.
    plain = alpha == 1 and beta == 0 and not has_bias and act == 0
    P = xp.matmul(A, B, out=C) if beta == 0 else xp.matmul(A, B)
    if plain:
        return C
    if b == "gpu":
        _cupy_epilogue()(P, bias_arr, alpha, beta, np.int32(has_bias), np.int32(act), C)
    else:
        _epilogue_cpu()(P, C, alpha, beta, bias_arr, has_bias, act, dt.type(0))
    return C
