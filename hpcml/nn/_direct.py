"""Direct (loop-nest) 2-D convolution of ghosted channels-last tiles, Numba CPU.

The alternative to im2col + GEMM in :class:`~hpcml.nn.layers.HaloConv`: no
``ntaps``-times larger column matrix, at the price of a hand-written loop nest
instead of BLAS.  ``hpcml bench train`` times both.  The innermost loop runs
over output channels, contiguous in both the weight and the output, so LLVM
vectorises it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit, prange

__all__ = ["conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]

_ACT = {None: 0, "relu": 1, "tanh": 2}


@njit(parallel=True, cache=True)
def _forward(xg, w, b, has_b, di, dj, act, y):  # pragma: no cover - compiled
    nb, ny, nx, co_n = y.shape
    kh, kw, ci_n, _ = w.shape
    for p in prange(nb * ny):
        n = p // ny
        i = p - n * ny
        for j in range(nx):
            out = y[n, i, j]
            for co in range(co_n):
                out[co] = b[co] if has_b else 0.0
            for a in range(kh):
                for c in range(kw):
                    src = xg[n, i + a * di, j + c * dj]
                    wt = w[a, c]
                    for ci in range(ci_n):
                        v = src[ci]
                        wr = wt[ci]
                        for co in range(co_n):
                            out[co] += v * wr[co]
            if act == 1:
                for co in range(co_n):
                    if out[co] < 0:
                        out[co] = 0.0
            elif act == 2:
                for co in range(co_n):
                    out[co] = np.tanh(out[co])


@njit(parallel=True, cache=True)
def _weight_grad(xg, dz, dw, di, dj):  # pragma: no cover - compiled
    nb, ny, nx, co_n = dz.shape
    kh, kw, ci_n, _ = dw.shape
    # One tap per task: every task owns its slice of dw (no races, fixed order).
    for t in prange(kh * kw):
        a = t // kw
        c = t - a * kw
        acc = dw[a, c]
        for n in range(nb):
            for i in range(ny):
                for j in range(nx):
                    src = xg[n, i + a * di, j + c * dj]
                    g = dz[n, i, j]
                    for ci in range(ci_n):
                        v = src[ci]
                        row = acc[ci]
                        for co in range(co_n):
                            row[co] += v * g[co]


@njit(parallel=True, cache=True)
def _input_grad(dz, w, di, dj, dxg):  # pragma: no cover - compiled
    nb, ny, nx, co_n = dz.shape
    kh, kw, ci_n, _ = w.shape
    for n in prange(nb):  # each task owns one sample of dxg
        for i in range(ny):
            for j in range(nx):
                g = dz[n, i, j]
                for a in range(kh):
                    for c in range(kw):
                        dst = dxg[n, i + a * di, j + c * dj]
                        wt = w[a, c]
                        for ci in range(ci_n):
                            wr = wt[ci]
                            s = 0.0
                            for co in range(co_n):
                                s += g[co] * wr[co]
                            dst[ci] += s


def conv2d_forward(
    xg: np.ndarray, w: np.ndarray, b: np.ndarray | None, dilation: Sequence[int], n: Sequence[int], act: str | None
) -> np.ndarray:
    """``act(conv(xg, w) + b)`` for a ghosted tile ``xg`` (N, ny+2h, nx+2h, Cin); returns (N, ny, nx, Cout)."""
    y = np.empty((xg.shape[0], n[0], n[1], w.shape[-1]), dtype=xg.dtype)
    bias = b if b is not None else np.zeros(1, dtype=xg.dtype)
    _forward(
        np.ascontiguousarray(xg), np.ascontiguousarray(w), bias, b is not None, dilation[0], dilation[1], _ACT[act], y
    )
    return y


def conv2d_weight_grad(xg: np.ndarray, dz: np.ndarray, dw: Any, dilation: Sequence[int]) -> None:
    """``dw += sum_{n,i,j} xg[window] (x) dz`` (in place)."""
    _weight_grad(xg, np.ascontiguousarray(dz), dw, dilation[0], dilation[1])


def conv2d_input_grad(
    dz: np.ndarray, w: np.ndarray, dilation: Sequence[int], ghosted_shape: Sequence[int]
) -> np.ndarray:
    """Gradient with respect to the ghosted input (ghosts included; apply the halo adjoint next)."""
    dxg = np.zeros(tuple(ghosted_shape), dtype=dz.dtype)
    _input_grad(np.ascontiguousarray(dz), np.ascontiguousarray(w), dilation[0], dilation[1], dxg)
    return dxg
