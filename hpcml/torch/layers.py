"""Halo-parallel PyTorch modules: convolutions, pools and a padding for custom layers.

Each module sees this rank's tile ``(N, C, *tile)`` of a field decomposed by a
:class:`~hpcml.nn.grid.TrainGrid` and computes exactly the tile of what the
plain torch module computes on the whole field:

* :class:`HaloConv1d`/``2d``/``3d`` are ``torch.nn.ConvNd`` subclasses (same
  parameters, same initialisation, same ``state_dict``) whose padding is a halo
  exchange: "same" output, ``padding_mode`` ``"zeros"`` or ``"circular"`` on the
  global edge only.  A PyTorch model changes ``nn.Conv2d(...)`` into
  ``HaloConv2d(grid, ...)``.
* :class:`HaloMaxPool2d`/``3d`` and :class:`HaloAvgPool2d`/``3d`` (and the
  1-D ones) pool with a stride that divides every tile, exchanging the
  ``padding`` cells the windows reach into the neighbours.
* :class:`HaloPad` returns the tile with ghost cells filled from the
  neighbours, for any custom layer (``nnf.unfold``, a finite-difference loss, ...).

The global field is the reference: circular padding on periodic axes, zero
padding (``-inf`` for max pools, as torch pads them) on the others.  Strides
must divide every tile's extent, so tiles start on the stride's lattice and the
output is ``field / stride``, tiled like the input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.nn import functional as nnf

from hpcml.decomp import block_range
from hpcml.nn.grid import TrainGrid
from hpcml.torch.exchange import _per_axis, _periodic, halo_pad

__all__ = [
    "HaloAvgPool1d",
    "HaloAvgPool2d",
    "HaloAvgPool3d",
    "HaloConv1d",
    "HaloConv2d",
    "HaloConv3d",
    "HaloMaxPool1d",
    "HaloMaxPool2d",
    "HaloMaxPool3d",
    "HaloPad",
]


def check_stride(grid: TrainGrid, stride: Sequence[int], what: str) -> None:
    """``ValueError`` unless ``stride`` divides the extent of every tile (no communication)."""
    for d, s in enumerate(stride):
        n, p = grid.shape[d], grid.decomp.dims[d]
        sizes = {block_range(n, p, i)[1] for i in range(p)}
        if any(m % s for m in sizes):
            raise ValueError(
                f"{what}: stride {s} along axis {d} does not divide the tiles' extents {sorted(sizes)} "
                f"(field {grid.shape} over dims {grid.decomp.dims}); choose a field size or process grid "
                "whose tiles are multiples of the stride"
            )


def _check_ndim(grid: TrainGrid, nd: int, what: str) -> None:
    if grid.ndim != nd:
        raise ValueError(f"{what} needs a {nd}-D field, the grid's field is {grid.ndim}-D")


class HaloPad(torch.nn.Module):
    """The tile ``(N, C, *n)`` -> ``(N, C, *(n + 2 halo))`` with ghosts from the neighbours.

    Parameters
    ----------
    grid
        The :class:`~hpcml.nn.grid.TrainGrid` whose tiles the inputs are.
    halo
        Ghost width, one int or one per spatial axis.
    padding_mode
        ``None`` (the grid's periodicity), ``"zeros"`` or ``"circular"``, or one
        bool per axis (periodic or not).
    value
        What ghosts across a non-periodic global edge hold.
    halo_method
        Halo-exchange method (:func:`hpcml.halo.get_plan`).
    """

    def __init__(
        self,
        grid: TrainGrid,
        halo: int | Sequence[int],
        padding_mode: Any = None,
        value: float = 0.0,
        halo_method: str = "auto",
    ) -> None:
        super().__init__()
        self.grid = grid
        self.halo = _per_axis(halo, grid.ndim, "halo")
        self.periodic = _periodic(padding_mode, grid)
        self.value = float(value)
        self.halo_method = halo_method
        grid.check_halo(self.halo, self.periodic, "HaloPad")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad and exchange (differentiable)."""
        return halo_pad(x, self.grid, self.halo, self.periodic, self.value, self.halo_method)

    def extra_repr(self) -> str:
        """Halo and periodicity."""
        return f"halo={self.halo}, periodic={self.periodic}, value={self.value}"


class _HaloConv:
    """What the three convolutions share: set the halo up in ``__init__``, pad by exchange in ``forward``."""

    _conv: Callable[..., torch.Tensor]
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    weight: torch.Tensor
    bias: torch.Tensor | None

    def _setup_halo(self, grid: TrainGrid, nd: int, padding: Any, padding_mode: Any, halo_method: str) -> None:
        what = type(self).__name__
        _check_ndim(grid, nd, what)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"{what}: kernel_size must be odd for a 'same' convolution, got {self.kernel_size}")
        halo = tuple(d * (k - 1) // 2 for k, d in zip(self.kernel_size, self.dilation))
        if not (padding == "same" or padding is None or _per_axis(padding, nd, "padding") == halo):
            raise ValueError(
                f"{what}: padding must be 'same' (the halo {halo} of kernel_size {self.kernel_size} and "
                f"dilation {self.dilation}), got {padding!r}"
            )
        self.grid = grid
        self.halo = halo
        self.periodic = _periodic(padding_mode, grid)
        self.halo_method = halo_method
        check_stride(grid, self.stride, what)
        grid.check_halo(halo, self.periodic, what)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Exchange halos into a padded copy of the tile, then the unpadded convolution."""
        xg = halo_pad(x, self.grid, self.halo, self.periodic, 0.0, self.halo_method)
        return self._conv(xg, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        """Torch's description plus the halo and periodicity."""
        return f"{super().extra_repr()}, halo={self.halo}, periodic={self.periodic}"  # type: ignore[misc]


def _conv_init(
    self: Any,
    base: type,
    nd: int,
    grid: TrainGrid,
    in_channels: int,
    out_channels: int,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    bias: bool,
    padding_mode: Any,
    halo_method: str,
    device: Any,
    dtype: Any,
) -> None:
    base.__init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=0,
        dilation=dilation,
        groups=groups,
        bias=bias,
        device=device,
        dtype=dtype,
    )
    self._setup_halo(grid, nd, padding, padding_mode, halo_method)


class HaloConv1d(_HaloConv, torch.nn.Conv1d):
    """``torch.nn.Conv1d`` with "same" output on the tiles of a decomposed 1-D field.

    Parameters
    ----------
    grid
        The :class:`~hpcml.nn.grid.TrainGrid` whose tiles the inputs are.
    in_channels, out_channels, kernel_size, stride, dilation, groups, bias, device, dtype
        As for ``torch.nn.Conv1d``; odd kernel sizes; the stride must divide
        every tile's extent.
    padding
        ``"same"`` (default) or the equivalent ``dilation * (kernel_size - 1) / 2``.
    padding_mode
        Global-edge padding: ``"zeros"``, ``"circular"``, bools per axis, or
        ``None`` for the grid's periodicity.
    halo_method
        Halo-exchange method (:func:`hpcml.halo.get_plan`).
    """

    _conv = staticmethod(nnf.conv1d)

    def __init__(
        self,
        grid: TrainGrid,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = "same",
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: Any = None,
        halo_method: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        _conv_init(
            self,
            torch.nn.Conv1d,
            1,
            grid,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            halo_method,
            device,
            dtype,
        )


class HaloConv2d(_HaloConv, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` with "same" output on the tiles of a decomposed 2-D field.

    Parameters
    ----------
    grid
        The :class:`~hpcml.nn.grid.TrainGrid` whose tiles the inputs are.
    in_channels, out_channels, kernel_size, stride, dilation, groups, bias, device, dtype
        As for ``torch.nn.Conv2d``; odd kernel sizes; the stride must divide
        every tile's extent.
    padding
        ``"same"`` (default) or the equivalent ``dilation * (kernel_size - 1) / 2``.
    padding_mode
        Global-edge padding: ``"zeros"``, ``"circular"``, bools per axis, or
        ``None`` for the grid's periodicity.
    halo_method
        Halo-exchange method (:func:`hpcml.halo.get_plan`).
    """

    _conv = staticmethod(nnf.conv2d)

    def __init__(
        self,
        grid: TrainGrid,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = "same",
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: Any = None,
        halo_method: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        _conv_init(
            self,
            torch.nn.Conv2d,
            2,
            grid,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            halo_method,
            device,
            dtype,
        )


class HaloConv3d(_HaloConv, torch.nn.Conv3d):
    """``torch.nn.Conv3d`` with "same" output on the tiles of a decomposed 3-D field.

    Parameters
    ----------
    grid
        The :class:`~hpcml.nn.grid.TrainGrid` whose tiles the inputs are.
    in_channels, out_channels, kernel_size, stride, dilation, groups, bias, device, dtype
        As for ``torch.nn.Conv3d``; odd kernel sizes; the stride must divide
        every tile's extent.
    padding
        ``"same"`` (default) or the equivalent ``dilation * (kernel_size - 1) / 2``.
    padding_mode
        Global-edge padding: ``"zeros"``, ``"circular"``, bools per axis, or
        ``None`` for the grid's periodicity.
    halo_method
        Halo-exchange method (:func:`hpcml.halo.get_plan`).
    """

    _conv = staticmethod(nnf.conv3d)

    def __init__(
        self,
        grid: TrainGrid,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = "same",
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: Any = None,
        halo_method: str = "auto",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        _conv_init(
            self,
            torch.nn.Conv3d,
            3,
            grid,
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            halo_method,
            device,
            dtype,
        )


class _HaloPool(torch.nn.Module):
    """A pool over the tiles: exchange ``padding`` cells, slice what the windows reach, pool unpadded.

    Window ``j`` of the field covers cells ``[j s - p, j s - p + k_e)`` (``k_e`` the
    dilated kernel).  A tile of extent ``n`` starting at a multiple of ``s``
    therefore needs ``p`` ghosts before it and ``k_e - s - p`` after it; with
    ``(k_e - s) / 2 <= p < k_e / 2`` the output is ``field / stride`` (the
    condition is checked), tiled like the input.
    """

    nd = 0
    kind = ""

    def __init__(
        self,
        grid: TrainGrid,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        padding_mode: Any = None,
        count_include_pad: bool = True,
        halo_method: str = "auto",
    ) -> None:
        super().__init__()
        what = type(self).__name__
        nd = self.nd
        _check_ndim(grid, nd, what)
        self.grid = grid
        self.kernel_size = _per_axis(kernel_size, nd, "kernel_size")
        self.stride = _per_axis(stride if stride is not None else kernel_size, nd, "stride")
        self.padding = _per_axis(padding, nd, "padding")
        self.dilation = _per_axis(dilation, nd, "dilation")
        if self.kind == "avg" and any(d != 1 for d in self.dilation):
            raise ValueError(f"{what}: average pools have no dilation")
        if any(k < 1 for k in self.kernel_size) or any(s < 1 for s in self.stride) or min(self.dilation) < 1:
            raise ValueError(f"{what}: kernel_size, stride and dilation must be positive")
        self.extent = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))
        for ke, s, p in zip(self.extent, self.stride, self.padding):
            if not ke - s <= 2 * p < ke:
                raise ValueError(
                    f"{what}: padding {self.padding} with kernel extent {self.extent} and stride {self.stride} "
                    "does not give output = input / stride; choose (kernel - stride) / 2 <= padding < kernel / 2"
                )
        self.periodic = _periodic(padding_mode, grid)
        self.count_include_pad = bool(count_include_pad)
        self.halo_method = halo_method
        check_stride(grid, self.stride, what)
        grid.check_halo(self.padding, self.periodic, what)
        n = grid.local_shape
        self._window = (
            slice(None),
            slice(None),
            *(slice(0, m + ke - s) for m, ke, s in zip(n, self.extent, self.stride)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool this rank's tile; the output is its tile of the pooled field."""
        value = float("-inf") if self.kind == "max" else 0.0
        xg = halo_pad(x, self.grid, self.padding, self.periodic, value, self.halo_method)[self._window]
        if self.kind == "max":
            return _MAX[self.nd](xg, self.kernel_size, self.stride, 0, self.dilation)
        y = _AVG[self.nd](xg, self.kernel_size, self.stride, 0)
        if not self.count_include_pad and any(self.padding):
            mask = self._inside(x)[self._window]
            y = y / _AVG[self.nd](mask, self.kernel_size, self.stride, 0)
        return y

    def _inside(self, x: torch.Tensor) -> torch.Tensor:
        """1 on ghosted cells that lie inside the field (or wrap around), 0 beyond a non-periodic edge."""
        d = self.grid.decomp
        mask = torch.ones((1, 1), dtype=x.dtype, device=x.device)
        for ax in range(self.nd):
            p, n, start, total = self.padding[ax], d.local_shape[ax], d.start[ax], d.shape[ax]
            idx = torch.arange(start - p, start + n + p, device=x.device)
            ok = torch.ones_like(idx, dtype=x.dtype) if self.periodic[ax] else ((idx >= 0) & (idx < total)).to(x.dtype)
            mask = mask.unsqueeze(-1) * ok
        return mask

    def extra_repr(self) -> str:
        """Kernel, stride, padding and periodicity."""
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, periodic={self.periodic}"
        )


_MAX = {1: nnf.max_pool1d, 2: nnf.max_pool2d, 3: nnf.max_pool3d}
_AVG = {1: nnf.avg_pool1d, 2: nnf.avg_pool2d, 3: nnf.avg_pool3d}


class HaloMaxPool1d(_HaloPool):
    """``torch.nn.MaxPool1d`` over the tiles of a 1-D field (see :class:`_HaloPool`)."""

    nd, kind = 1, "max"


class HaloMaxPool2d(_HaloPool):
    """``torch.nn.MaxPool2d`` over the tiles of a 2-D field (see :class:`_HaloPool`)."""

    nd, kind = 2, "max"


class HaloMaxPool3d(_HaloPool):
    """``torch.nn.MaxPool3d`` over the tiles of a 3-D field (see :class:`_HaloPool`)."""

    nd, kind = 3, "max"


class HaloAvgPool1d(_HaloPool):
    """``torch.nn.AvgPool1d`` over the tiles of a 1-D field (see :class:`_HaloPool`)."""

    nd, kind = 1, "avg"


class HaloAvgPool2d(_HaloPool):
    """``torch.nn.AvgPool2d`` over the tiles of a 2-D field (see :class:`_HaloPool`)."""

    nd, kind = 2, "avg"


class HaloAvgPool3d(_HaloPool):
    """``torch.nn.AvgPool3d`` over the tiles of a 3-D field (see :class:`_HaloPool`)."""

    nd, kind = 3, "avg"
