"""Optional PyTorch bridge (extra ``torch``): halo-parallel convolutions for PyTorch models.

:class:`HaloExchange` is a ``torch.autograd.Function`` around the same
:class:`~hpcml.nn.grid.HaloOp` (and so the same cached
:class:`hpcml.halo.HaloExchange` plans) the NumPy layers use: forward fills the
ghosts of an ``(N, C, *local_shape)`` tile out of place, backward sends the
ghost gradients to their owners and adds them.  :class:`HaloConv2d` puts it in
front of an unpadded ``torch.nn.Conv2d``, so a PyTorch model on tiles computes
what it would on the whole field.  Weight gradients are per rank: sum them over
the ranks (e.g. ``torch.distributed`` or ``comm.Allreduce``) as for any
data-parallel model.  CPU tensors (the data goes through NumPy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hpcml.nn.grid import HaloOp, TrainGrid, as_periodic

__all__ = ["HaloConv2d", "HaloExchange", "halo_exchange"]


def _to_channels_last(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().movedim(1, -1).cpu().numpy())


def _from_channels_last(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1))).to(like.device)


class HaloExchange(torch.autograd.Function):
    """``y = E x`` (ghosted copy with filled halos) with backward ``E^T``: ``HaloExchange.apply(x, op)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, op: HaloOp) -> torch.Tensor:
        """Ghosted ``(N, C, *(n + 2h))`` copy of the tile ``x`` ``(N, C, *n)``."""
        ctx.op = op
        return _from_channels_last(op.forward(_to_channels_last(x)), x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Ghost gradients added into their owners; the interior gradient."""
        return _from_channels_last(ctx.op.adjoint(_to_channels_last(grad)), grad), None


def halo_exchange(x: torch.Tensor, op: HaloOp) -> torch.Tensor:
    """Differentiable out-of-place halo exchange of an ``(N, C, *n)`` tile."""
    return HaloExchange.apply(x, op)


class HaloConv2d(torch.nn.Module):
    """``torch.nn.Conv2d`` with "same" output over a decomposed field.

    Parameters
    ----------
    grid
        The :class:`~hpcml.nn.grid.TrainGrid` whose tiles the inputs are.
    in_channels, out_channels, kernel_size, dilation, bias
        As for ``torch.nn.Conv2d`` (odd kernel sizes).
    padding
        ``"zeros"``, ``"periodic"`` or ``None`` (the field's periodicity), applied
        on the global boundary only.
    """

    def __init__(
        self,
        grid: TrainGrid,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        bias: bool = True,
        padding: Any = None,
        dtype: Any = torch.float64,
    ) -> None:
        super().__init__()
        if grid.ndim != 2:
            raise ValueError(f"HaloConv2d needs a 2-D field, the grid's field is {grid.ndim}-D")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        halo = dilation * (kernel_size - 1) // 2
        periodic = as_periodic(padding, 2, grid.decomp.periodic)
        self.op = HaloOp(grid, (halo, halo), periodic, what="torch HaloConv2d")
        self.conv = torch.nn.Conv2d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=0, bias=bias, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Exchange halos, then the unpadded convolution."""
        return self.conv(halo_exchange(x, self.op))
