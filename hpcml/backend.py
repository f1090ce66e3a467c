"""Array module and kernel backend for an array (cpu | gpu | sim).

This is the bottom of the ``hpcml`` layer stack: it knows whether an array is a
NumPy or CuPy array and which kernel backend serves it, and nothing about MPI.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from hpcml.kernels._dispatch import (
    BACKENDS,
    array_module,
    cupy_module,
    is_device_array,
    resolve_backend,
    simulator_enabled,
)

__all__ = [
    "BACKENDS",
    "array_module",
    "cupy_module",
    "gpu_count",
    "is_device_array",
    "resolve_backend",
    "simulator_enabled",
    "xp_from_name",
]


def gpu_count() -> int:
    """Number of CUDA devices CuPy sees (0 without CuPy or without a driver)."""
    cp = cupy_module()
    if cp is None:
        return 0
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def xp_from_name(xp: Any) -> ModuleType:
    """Accept a module or one of ``"numpy"``/``"cupy"`` and return the module."""
    import numpy as np

    if xp is None or xp is np or xp == "numpy":
        return np
    if isinstance(xp, ModuleType):
        return xp
    if xp == "cupy":
        cp = cupy_module()
        if cp is None:
            raise ImportError("xp='cupy' requested but CuPy is not importable (pip install 'hpcml[gpu]')")
        return cp
    raise ValueError(f"unknown array module {xp!r}; expected numpy or cupy")
