"""A small 2-D U-Net built from halo-parallel layers, or from plain torch layers as its oracle.

``UNet(grid, ...)`` uses :class:`~hpcml.torch.HaloConv2d` and
:class:`~hpcml.torch.HaloMaxPool2d` on the tiles of ``grid``; ``UNet(None, ...)``
is the same network of ``torch.nn.Conv2d``/``torch.nn.MaxPool2d`` for one
process and the whole field.  Both have the same parameter names and, for the
same torch seed, the same initial weights, so one's ``state_dict`` loads into
the other.  Up-sampling is a ``ConvTranspose2d`` with kernel = stride = 2 and
the 1 x 1 head is a plain convolution: both act within a tile and need no halo.

Layout for ``depth = 2``, ``width = w``::

    in -> [conv w, conv w] ----------------------------------------- cat -> conv w -> head -> + in
            pool -> [conv 2w, conv 2w] ------------------ cat -> conv 2w -> up
                      pool -> [conv 4w] -> up
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpcml.nn.grid import TrainGrid
from hpcml.torch.layers import HaloConv2d, HaloMaxPool2d

__all__ = ["UNet"]


class UNet(nn.Module):
    """U-Net surrogate for a 2-D field, tiled over ``grid`` (or whole, ``grid=None``).

    Parameters
    ----------
    grid
        The :class:`~hpcml.nn.grid.TrainGrid`, or ``None`` for the single-process oracle.
    in_channels, out_channels
        Field channels; with equal counts the network predicts the change of the
        input (``out = in + net(in)``).
    width
        Channels of the first level (doubled per level).
    depth
        Number of 2 x 2 poolings; tiles must be divisible by ``2**depth``
        (level ``l`` runs on ``grid.coarsened(2**l)``).
    periodic
        Circular padding (a periodic field) instead of zeros; with a grid,
        ``None`` follows the grid.
    activation
        ``torch.nn`` activation class.
    dtype, device
        Of the parameters.
    """

    def __init__(
        self,
        grid: TrainGrid | None,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 8,
        depth: int = 2,
        periodic: bool | None = None,
        activation: type[nn.Module] = nn.Tanh,
        dtype: torch.dtype = torch.float64,
        device: Any = None,
    ) -> None:
        super().__init__()
        if depth < 0 or width < 1:
            raise ValueError(f"depth must be >= 0 and width >= 1, got depth={depth}, width={width}")
        if grid is None:
            periodic = True if periodic is None else periodic
        mode = None if periodic is None else ("circular" if periodic else "zeros")
        kw = {"dtype": dtype, "device": device}

        # level l sees the field pooled l times: the same process grid over a coarser field
        levels = [None if grid is None else grid.coarsened(2**level) for level in range(depth + 1)]

        def conv(level: int, cin: int, cout: int) -> nn.Module:
            if grid is None:
                return nn.Conv2d(cin, cout, 3, padding=1, padding_mode=mode, **kw)
            return HaloConv2d(levels[level], cin, cout, 3, padding_mode=mode, **kw)

        def block(level: int, cin: int, cout: int, n: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(n):
                layers += [conv(level, cin if i == 0 else cout, cout), activation()]
            return nn.Sequential(*layers)

        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            block(level, in_channels if level == 0 else widths[level - 1], widths[level], 2 if level < depth else 1)
            for level in range(depth + 1)
        )
        self.pools = nn.ModuleList(
            nn.MaxPool2d(2) if grid is None else HaloMaxPool2d(levels[level], 2, padding_mode=mode)
            for level in range(depth)
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2, **kw) for level in range(depth)
        )
        self.merge = nn.ModuleList(block(level, 2 * widths[level], widths[level], 1) for level in range(depth))
        self.head = nn.Conv2d(widths[0], out_channels, 1, **kw)
        self.residual = in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, ny, nx)`` tile (or field) -> ``(N, C_out, ny, nx)``."""
        skips = []
        h = x
        for level, block in enumerate(self.down):
            h = block(h)
            if level < len(self.pools):
                skips.append(h)
                h = self.pools[level](h)
        for level in reversed(range(len(self.ups))):
            h = self.ups[level](h)
            h = self.merge[level](torch.cat([skips[level], h], dim=1))
        y = self.head(h)
        return x + y if self.residual else y
