"""Zero-copy array views of torch tensors, laid out for hpcml's halo plans.

A halo exchange runs on arrays, not tensors.  :func:`as_array` hands the
tensor's own memory to hpcml through DLPack (``torch.utils.dlpack``): a NumPy
view of a CPU tensor, a CuPy view of a CUDA tensor.  Nothing is copied, so the
exchange writes straight into the tensor's storage (``data_ptr`` unchanged).

:func:`stacked_view` then reshapes that view to the stacked layout of
:meth:`hpcml.nn.grid.TrainGrid.stacked` — one array axis in front, the field's
axes, one axis behind — without copying:

* a contiguous ``(N, C, *field)`` tensor is the array ``(N*C, *field, 1)``;
* a ``channels_last`` (``channels_last_3d``) tensor is ``(N, *field, C)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hpcml.backend import cupy_module

__all__ = ["as_array", "layout_of", "stacked_view"]

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def as_array(t: torch.Tensor) -> Any:
    """NumPy (CPU) or CuPy (CUDA) array sharing ``t``'s memory (DLPack, no copy).

    Raises
    ------
    TypeError
        For a tensor on a device other than CPU and CUDA, or a CUDA tensor
        without CuPy installed.
    """
    t = t.detach()
    if t.device.type == "cpu":
        return np.from_dlpack(t)
    if t.device.type == "cuda":
        cp = cupy_module()
        if cp is None:
            raise TypeError("CUDA tensors need CuPy for the halo exchange (pip install 'hpcml[gpu]')")
        return cp.from_dlpack(t)
    raise TypeError(f"hpcml.torch exchanges CPU and CUDA tensors, not {t.device.type!r} tensors")


def layout_of(t: torch.Tensor) -> str:
    """``"contiguous"`` or ``"channels_last"``: the memory layouts the exchange works on in place.

    Raises
    ------
    ValueError
        For any other strides (a transposed or sliced tensor): call
        ``.contiguous()`` first.
    """
    if t.is_contiguous():
        return "contiguous"
    fmt = _CHANNELS_LAST.get(t.dim())
    if fmt is not None and t.is_contiguous(memory_format=fmt):
        return "channels_last"
    raise ValueError(
        f"halo exchange needs a contiguous or channels_last tensor, got shape {tuple(t.shape)} with strides "
        f"{t.stride()}; call .contiguous() first"
    )


def stacked_view(a: Any, layout: str) -> tuple[Any, int, int]:
    """``(view, lead, trail)``: the ``(lead, *field, trail)`` array over the same memory as ``a``.

    ``a`` is the array view of an ``(N, C, *field)`` tensor in ``layout``.
    """
    n, c = int(a.shape[0]), int(a.shape[1])
    field = tuple(int(s) for s in a.shape[2:])
    # Both are views for the layouts layout_of() admits: a reshape of a C-contiguous
    # array and an axis permutation never copy.
    if layout == "contiguous":
        return a.reshape(n * c, *field, 1), n * c, 1
    return a.transpose(0, *range(2, a.ndim), 1), n, c
