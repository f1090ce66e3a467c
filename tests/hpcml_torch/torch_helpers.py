"""Shared helpers of the hpcml.torch tests: single-process torch references and tile bookkeeping."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as nnf

CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
MAX = {1: nnf.max_pool1d, 2: nnf.max_pool2d, 3: nnf.max_pool3d}
AVG = {1: nnf.avg_pool1d, 2: nnf.avg_pool2d, 3: nnf.avg_pool3d}


def grids(size):
    """Every ``data`` replica count that divides ``size`` (the data x spatial grids of the rank count)."""
    return [d for d in range(1, size + 1) if size % d == 0]


def pad_circular(x, widths, periodic):
    """Wrap-pad the periodic spatial axes of ``(N, C, *field)`` by ``widths`` (the others untouched)."""
    nd = x.dim() - 2
    for ax in range(nd):
        if periodic[ax] and widths[ax]:
            pad = [0, 0] * nd
            pad[2 * (nd - 1 - ax)] = pad[2 * (nd - 1 - ax) + 1] = widths[ax]
            x = nnf.pad(x, pad, mode="circular")
    return x


def open_widths(widths, periodic):
    """The padding torch's own modules apply: the non-periodic axes only."""
    return tuple(0 if p else w for w, p in zip(widths, periodic))


def ref_conv(conv, x, halo, periodic):
    """The torch convolution ``conv``'s weights on the whole field (circular on periodic axes, zeros elsewhere)."""
    nd = x.dim() - 2
    xp = pad_circular(x, halo, periodic)
    f = {1: nnf.conv1d, 2: nnf.conv2d, 3: nnf.conv3d}[nd]
    return f(xp, conv.weight, conv.bias, conv.stride, open_widths(halo, periodic), conv.dilation, conv.groups)


def ref_pool(kind, x, k, s, p, dil, periodic, count_include_pad=True):
    """torch's pool on the whole field with circular padding on the periodic axes."""
    nd = x.dim() - 2
    xp = pad_circular(x, p, periodic)
    pad = open_widths(p, periodic)
    if kind == "max":
        return MAX[nd](xp, k, s, pad, dil)
    return AVG[nd](xp, k, s, pad, count_include_pad=count_include_pad)


def tile(grid, t, stride=(1, 1, 1)):
    """This rank's tile of a global ``(N, C, *field)`` tensor (a field pooled by ``stride`` tiles by start/stride)."""
    d = grid.decomp
    box = tuple(slice(a // s, (a + n) // s) for a, n, s in zip(d.start, d.local_shape, stride))
    return t[(slice(None), slice(None), *box)].contiguous()


def share(grid, n):
    """This replica's contiguous share of ``n`` samples (``np.array_split`` order)."""
    parts = np.array_split(np.arange(n), grid.data)[grid.data_rank]
    return slice(int(parts[0]), int(parts[-1]) + 1) if len(parts) else slice(0, 0)


def close(a, b, rtol=1e-12):
    """``|a - b| <= rtol * max|b|`` (relative to the reference's scale)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        return False
    scale = max(float(b.abs().max()) if b.numel() else 0.0, 1e-300)
    return float((a - b).abs().max()) <= rtol * scale if a.numel() else True
