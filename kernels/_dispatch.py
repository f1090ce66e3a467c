"""Backend resolution shared by all kernel modules.

A kernel receives arrays and must decide where to run: NumPy arrays run on the
CPU through Numba, arrays exposing ``__cuda_array_interface__`` (CuPy, Numba
device arrays) run on the GPU.  ``backend="sim"`` asks for the Numba-CUDA
implementation on host arrays, which only works in the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``); it exists so that every GPU kernel is tested on a
machine without a GPU.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("cpu", "gpu", "sim")


def is_device_array(x: Any) -> bool:
    """Return True when ``x`` lives in GPU memory (CUDA array interface)."""
    return hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)


def cupy_module() -> ModuleType | None:
    """Return the ``cupy`` module if it imports, else ``None`` (never raises)."""
    try:
        import cupy

        return cupy
    except Exception:  # ImportError, or a CUDA driver error at import
        return None


def array_module(x: Any) -> ModuleType:
    """Return ``numpy`` or ``cupy`` depending on where ``x`` lives."""
    if is_device_array(x):
        cp = cupy_module()
        if cp is not None and isinstance(x, cp.ndarray):
            return cp
        raise TypeError(
            f"{type(x).__name__} exposes __cuda_array_interface__ but is not a CuPy array; "
            "wrap it with cupy.asarray() first"
        )
    return np


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator is switched on for this process."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def resolve_backend(*arrays: Any, backend: str | None = None) -> str:
    """Pick ``"cpu"``, ``"gpu"`` or ``"sim"`` for a kernel call.

    Raises
    ------
    TypeError
        When host and device arrays are mixed, or ``backend`` contradicts the
        arrays' location.
    ValueError
        For an unknown backend name, or ``"sim"`` without the simulator enabled.
    """
    present = [a for a in arrays if a is not None and not np.isscalar(a)]
    on_device = [is_device_array(a) for a in present]
    if any(on_device) and not all(on_device):
        kinds = ", ".join(type(a).__name__ for a in present)
        raise TypeError(f"arrays on different devices (host and GPU mixed): {kinds}")
    natural = "gpu" if present and all(on_device) else "cpu"
    if backend is None:
        return natural
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "sim":
        if natural == "gpu":
            raise TypeError("backend='sim' takes host (NumPy) arrays, got GPU arrays")
        if not simulator_enabled():
            raise ValueError("backend='sim' needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")
        return "sim"
    if backend != natural:
        where = "GPU" if natural == "gpu" else "host"
        raise TypeError(f"backend={backend!r} requested but the arrays live on the {where}")
    return backend
