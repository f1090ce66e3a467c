"""Shared helpers of the nn tests: independent NumPy references and tile gathering."""

from __future__ import annotations

import itertools

import numpy as np


def pad_field(x, halo, periodic):
    """Pad the spatial axes of a channels-last global array (wrap or zeros)."""
    out = x
    for d, (h, p) in enumerate(zip(halo, periodic)):
        width = [(0, 0)] * x.ndim
        width[d + 1] = (h, h)
        out = np.pad(out, width, mode="wrap" if p else "constant")
    return out


def ref_conv(x, w, b, dilation, periodic, activation=None):
    """Serial 'same' convolution of a global channels-last field (loops over taps)."""
    k = w.shape[:-2]
    nd = len(k)
    dil = (dilation,) * nd if np.isscalar(dilation) else tuple(dilation)
    halo = tuple(d * (kk - 1) // 2 for kk, d in zip(k, dil))
    xp = pad_field(x, halo, periodic)
    n = x.shape[1:-1]
    y = np.zeros((*x.shape[:-1], w.shape[-1]))
    for tap in itertools.product(*(range(kk) for kk in k)):
        sl = (slice(None), *(slice(t * d, t * d + m) for t, d, m in zip(tap, dil, n)), slice(None))
        y += xp[sl] @ w[tap]
    if b is not None:
        y += b
    if activation == "relu":
        y = np.maximum(y, 0)
    elif activation == "tanh":
        y = np.tanh(y)
    return y


def gather_tiles(grid, a):
    """Global channels-last array from every spatial rank's tile (on all ranks of the replica)."""
    parts = grid.spatial_comm.allgather((grid.decomp.slices, np.asarray(a)))
    out = np.empty((a.shape[0], *grid.shape, a.shape[-1]), dtype=a.dtype)
    for sl, p in parts:
        out[(slice(None), *sl, slice(None))] = p
    return out


def tile_of(grid, g):
    """This rank's tile of a global channels-last array."""
    return np.ascontiguousarray(g[(slice(None), *grid.decomp.slices, slice(None))])
