"""Differentiable in-place halo exchange of ``(N, C, *field)`` tensors.

``halo_exchange(x, grid)`` takes a *ghosted* tile — this rank's tile of the
field plus ``h`` ghost cells on each side of every spatial axis, so the halo
widths follow from the tensor's shape — and fills the ghosts from the
neighbouring tiles (and from the other side of a periodic axis) in place,
through the cached :class:`hpcml.halo.HaloExchange` plans of the grid.  The
tensor crosses to hpcml through DLPack (:mod:`hpcml.torch.tensors`), so the exchange
writes into the tensor's own storage: no copy, ``data_ptr`` unchanged.

Backward is the adjoint: every ghost's gradient is sent back to the cell it was
copied from and *added* there, and the ghost's gradient becomes zero.  Autograd
may hand one gradient tensor to several consumers (the two inputs of an ``add``
share it), so the adjoint runs on one copy of the incoming gradient.

:func:`halo_pad` is what layers use: ``nnf.pad`` the tile (zeros, or ``-inf`` for a
max pool, which is what the global non-periodic boundary keeps) and exchange.
Time spent in exchanges and adjoints is summed in :data:`timer`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as nnf

from hpcml.backend import array_module
from hpcml.halo import HaloExchange, get_plan
from hpcml.nn.grid import TrainGrid, as_periodic
from hpcml.torch.tensors import as_array, layout_of, stacked_view

__all__ = ["ExchangeTimer", "HaloExchangeFunction", "halo_exchange", "halo_pad", "halo_widths", "timer"]


@dataclass
class ExchangeTimer:
    """Wall time and calls of the halo exchanges (forward) and adjoints (backward) of this process."""

    forward_seconds: float = 0.0
    backward_seconds: float = 0.0
    forward_calls: int = 0
    backward_calls: int = 0

    @property
    def seconds(self) -> float:
        """Forward plus backward seconds."""
        return self.forward_seconds + self.backward_seconds

    def reset(self) -> None:
        """Zero every counter."""
        self.forward_seconds = self.backward_seconds = 0.0
        self.forward_calls = self.backward_calls = 0


#: The process-wide exchange timer (``hpcml bench train --torch`` reports its share of a step).
timer = ExchangeTimer()


def halo_widths(shape: Sequence[int], grid: TrainGrid) -> tuple[int, ...]:
    """Ghost widths of a ghosted ``(N, C, *field)`` shape on ``grid`` (checked, no communication)."""
    n = grid.local_shape
    if len(shape) != len(n) + 2:
        raise ValueError(
            f"expected a ghosted tile (N, C, {', '.join(f'{m}+2h' for m in n)}) of the {len(n)}-D field, "
            f"got shape {tuple(shape)}"
        )
    extra = [int(g) - int(m) for g, m in zip(shape[2:], n)]
    if any(e < 0 or e % 2 for e in extra):
        raise ValueError(
            f"shape {tuple(shape)} is not this rank's tile {tuple(n)} plus the same number of ghosts on both "
            "sides of every spatial axis"
        )
    return tuple(e // 2 for e in extra)


def _plan(
    grid: TrainGrid, a: Any, lead: int, trail: int, halo: tuple[int, ...], periodic: tuple[bool, ...], method: str
) -> HaloExchange:
    d = grid.stacked(lead, trail, halo, periodic)
    return get_plan(d, a.dtype, array_module(a), method, corners=True, order="C")


def fill_ghosts(
    a: Any, grid: TrainGrid, halo: tuple[int, ...], periodic: tuple[bool, ...], layout: str, method: str = "auto"
) -> None:
    """Fill the ghosts of the ghosted ``(N, C, *field)`` array ``a`` in place (collective over the tiles)."""
    view, lead, trail = stacked_view(a, layout)
    _plan(grid, view, lead, trail, halo, periodic, method).exchange(view)


def add_ghosts(
    a: Any, grid: TrainGrid, halo: tuple[int, ...], periodic: tuple[bool, ...], layout: str, method: str = "auto"
) -> None:
    """Adjoint of :func:`fill_ghosts`: ghosts added into their owners, then zeroed (in place, collective)."""
    view, lead, trail = stacked_view(a, layout)
    _plan(grid, view, lead, trail, halo, periodic, method).adjoint(view)


def _synchronize(t: torch.Tensor) -> None:
    """Let queued torch kernels finish before hpcml (another stream) reads or writes the memory."""
    if t.is_cuda:
        torch.cuda.current_stream(t.device).synchronize()


class HaloExchangeFunction(torch.autograd.Function):
    """``x <- E x`` in place (ghosts filled); backward ``E^T`` (ghost gradients added into owners)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, grid: TrainGrid, halo: tuple[int, ...], periodic: tuple[bool, ...], method: str
    ) -> torch.Tensor:
        """Fill the ghosts of ``x`` in its own storage and return ``x``."""
        t0 = time.perf_counter()
        layout = layout_of(x)
        _synchronize(x)
        fill_ghosts(as_array(x), grid, halo, periodic, layout, method)
        ctx.mark_dirty(x)
        ctx.setup = (grid, halo, periodic, layout, method)
        timer.forward_seconds += time.perf_counter() - t0
        timer.forward_calls += 1
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """The gradient with every ghost's value added into the cell it came from."""
        t0 = time.perf_counter()
        grid, halo, periodic, layout, method = ctx.setup
        fmt = torch.contiguous_format if layout == "contiguous" else _channels_last(grad.dim())
        g = grad.clone(memory_format=fmt)  # autograd may share `grad` with other consumers
        _synchronize(g)
        add_ghosts(as_array(g), grid, halo, periodic, layout, method)
        timer.backward_seconds += time.perf_counter() - t0
        timer.backward_calls += 1
        return g, None, None, None, None


def _channels_last(ndim: int) -> torch.memory_format:
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def _exchanged(grid: TrainGrid, halo: Sequence[int], periodic: Sequence[bool]) -> bool:
    return any(h > 0 and (p or grid.decomp.dims[d] > 1) for d, (h, p) in enumerate(zip(halo, periodic)))


def halo_exchange(x: torch.Tensor, grid: TrainGrid, periodic: Any = None, method: str = "auto") -> torch.Tensor:
    """Fill the ghosts of the ghosted tile ``x`` in place, differentiably; returns ``x``.

    Parameters
    ----------
    x
        ``(N, C, *(n + 2h))``: this rank's tile of ``grid``'s field (``n`` =
        ``grid.local_shape``) with ``h`` ghost cells on both sides of every
        spatial axis; contiguous or ``channels_last``, on the CPU or a CUDA
        device.  It is modified in place (autograd records it), so it must not
        be a leaf that requires grad — pad first (:func:`halo_pad`).
    grid
        The :class:`~hpcml.nn.grid.TrainGrid`; collective over its spatial
        communicator (every tile of the replica calls it, in the same order).
    periodic
        ``None`` (the grid's periodicity), ``"zeros"``/``"circular"``, a bool or
        one bool per spatial axis: whether ghosts across the global edge wrap
        around.  Ghosts at a non-periodic global edge are left as they are.
    method
        Halo method (:func:`hpcml.halo.get_plan`): ``auto``, ``pack``,
        ``datatype`` on the CPU; ``staged``/``device`` for CUDA tensors.

    Raises
    ------
    ValueError
        Before any communication, for a shape that is not the tile plus
        symmetric ghosts, a halo wider than the narrowest neighbouring tile, or
        an unsupported memory layout.
    """
    halo = halo_widths(x.shape, grid)
    per = _periodic(periodic, grid)
    grid.check_halo(halo, per, "halo_exchange")
    layout_of(x)
    # An empty batch is empty on every tile of the replica (they share its samples): nothing to send.
    if not _exchanged(grid, halo, per) or x.numel() == 0:
        return x
    return HaloExchangeFunction.apply(x, grid, halo, per, method)


def halo_pad(
    x: torch.Tensor,
    grid: TrainGrid,
    halo: int | Sequence[int],
    periodic: Any = None,
    value: float = 0.0,
    method: str = "auto",
) -> torch.Tensor:
    """The tile ``x`` ``(N, C, *n)`` with ``halo`` ghost cells per side, filled from the neighbours.

    Ghosts across a non-periodic global edge hold ``value`` (zero padding; a max
    pool passes ``-inf``).  One new tensor (``nnf.pad``'s) and an in-place exchange
    into it; differentiable.
    """
    nd = grid.ndim
    widths = _per_axis(halo, nd, "halo")
    per = _periodic(periodic, grid)
    n = grid.local_shape
    if x.dim() != nd + 2 or tuple(x.shape[2:]) != tuple(n):
        raise ValueError(
            f"expected this rank's tile (N, C, {', '.join(map(str, n))}) of the {nd}-D field, got {tuple(x.shape)}"
        )
    grid.check_halo(widths, per, "halo_pad")
    if not any(widths):
        return x
    pad = [w for h in reversed(widths) for w in (h, h)]
    xg = nnf.pad(x, pad, mode="constant", value=value)
    if not _exchanged(grid, widths, per) or xg.numel() == 0:
        return xg
    return HaloExchangeFunction.apply(xg, grid, widths, per, method)


def _periodic(periodic: Any, grid: TrainGrid) -> tuple[bool, ...]:
    if isinstance(periodic, str) and periodic == "circular":
        periodic = "periodic"
    return as_periodic(periodic, grid.ndim, grid.decomp.periodic)


def _per_axis(value: int | Sequence[int], nd: int, what: str) -> tuple[int, ...]:
    items = (int(value),) * nd if isinstance(value, int) else tuple(int(v) for v in value)
    if len(items) != nd or any(v < 0 for v in items):
        raise ValueError(f"{what} must be one non-negative int or {nd} of them, got {value!r}")
    return items
