"""Which array library an array belongs to, and which kernel backend serves it.

This is the bottom of the ``hpcml`` layer stack (nothing here imports MPI or another
hpcml module), and the one place that answers "what kind of array is this?":

* :func:`array_module` -- ``numpy``, ``cupy`` or ``numba.cuda``: the module whose
  operations serve an array (NumPy arrays, CuPy arrays, Numba-CUDA device arrays,
  including the CUDA simulator's).
* :func:`is_device_array` -- whether an array lives in GPU memory.
* :func:`is_contiguous`, :func:`to_host`, :func:`compute_view` -- the few operations
  every layer needs on all three kinds.
* :func:`resolve_backend` -- the kernel dispatch (``cpu | gpu | sim``) that every
  module of :mod:`hpcml.kernels` runs before it launches anything.

Every other module asks these functions instead of testing types itself, so a new
array kind is taught to hpcml here, once.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "array_module",
    "compute_view",
    "cupy_module",
    "gpu_count",
    "is_contiguous",
    "is_device_array",
    "resolve_backend",
    "simulator_enabled",
    "to_host",
    "xp_from_name",
]

#: kernel backends: Numba on the CPU, CuPy / Numba-CUDA on a GPU, Numba-CUDA in the simulator
BACKENDS = ("cpu", "gpu", "sim")


def cupy_module() -> ModuleType | None:
    """The ``cupy`` module if it imports, else ``None`` (never raises)."""
    try:
        import cupy

        return cupy
    except Exception:  # ImportError, or a CUDA driver error at import
        return None


def _is_numba_device_array(x: Any) -> bool:
    # DeviceNDArray on a GPU, FakeCUDAArray in the simulator (which has no
    # __cuda_array_interface__: its memory is host memory).
    mod = type(x).__module__
    return mod.startswith("numba") and "cuda" in mod and hasattr(x, "copy_to_host")


def is_device_array(x: Any) -> bool:
    """True when ``x`` is a GPU array: CuPy, Numba-CUDA (also simulated), or any ``__cuda_array_interface__``."""
    if isinstance(x, np.ndarray):
        return False
    return hasattr(x, "__cuda_array_interface__") or _is_numba_device_array(x)


def array_module(x: Any) -> ModuleType:
    """The module whose operations serve ``x``: ``numpy``, ``cupy`` or ``numba.cuda``.

    Host arrays (anything that is not a GPU array) map to ``numpy``.

    Raises
    ------
    TypeError
        For a GPU array that is neither CuPy nor Numba-CUDA (wrap it with
        ``cupy.asarray``, which shares its memory).
    """
    if not is_device_array(x):
        return np
    if _is_numba_device_array(x):
        from numba import cuda

        return cuda
    cp = cupy_module()
    if cp is not None and isinstance(x, cp.ndarray):
        return cp
    raise TypeError(
        f"{type(x).__name__} is a GPU array but neither a CuPy nor a Numba-CUDA array; "
        "wrap it with cupy.asarray() (no copy)"
    )


def xp_from_name(xp: Any) -> ModuleType:
    """Accept a module or one of ``"numpy"``, ``"cupy"``, ``"numba.cuda"``; return the module."""
    if xp is None or xp is np or xp == "numpy":
        return np
    if isinstance(xp, ModuleType):
        return xp
    if xp == "cupy":
        cp = cupy_module()
        if cp is None:
            raise ImportError("xp='cupy' requested but CuPy is not importable (pip install 'hpcml[gpu]')")
        return cp
    if xp == "numba.cuda":
        from numba import cuda

        return cuda
    raise ValueError(f"unknown array module {xp!r}; expected numpy, cupy or numba.cuda")


def is_contiguous(x: Any, order: str = "C") -> bool:
    """Whether ``x`` is contiguous in ``order`` (``"C"`` or ``"F"``), for all three array kinds."""
    flags = x.flags
    if isinstance(flags, dict):  # Numba-CUDA arrays keep their flags in a dict
        return bool(flags["C_CONTIGUOUS" if order == "C" else "F_CONTIGUOUS"])
    return bool(flags.c_contiguous if order == "C" else flags.f_contiguous)


def to_host(x: Any) -> np.ndarray:
    """``x`` as a NumPy array: host arrays as they are, GPU arrays copied to the host."""
    if not is_device_array(x):
        return np.asarray(x)
    if _is_numba_device_array(x):
        return x.copy_to_host()
    return array_module(x).asnumpy(x)


def compute_view(x: Any) -> tuple[Any, ModuleType]:
    """``(array, module)`` with a NumPy-like module for reductions and element-wise work on ``x``.

    NumPy and CuPy arrays come back as they are.  A Numba-CUDA device array has no
    array operations of its own: it comes back as a zero-copy CuPy view when CuPy is
    installed, otherwise (the CUDA simulator) as a host copy.
    """
    xp = array_module(x)
    if xp.__name__ != "numba.cuda":
        return x, xp
    cp = cupy_module()
    if cp is not None and hasattr(x, "__cuda_array_interface__"):
        return cp.asarray(x), cp
    return x.copy_to_host(), np


def gpu_count() -> int:
    """Number of CUDA devices CuPy sees (0 without CuPy or without a driver)."""
    cp = cupy_module()
    if cp is None:
        return 0
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator is switched on for this process (``NUMBA_ENABLE_CUDASIM``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def resolve_backend(*arrays: Any, backend: str | None = None) -> str:
    """Pick the kernel backend, ``"cpu"``, ``"gpu"`` or ``"sim"``, for a kernel call on ``arrays``.

    NumPy arrays run on the CPU, GPU arrays on the GPU; ``backend="sim"`` runs the
    Numba-CUDA kernel on host arrays in the CUDA simulator, so that every GPU kernel
    is tested on a machine without a GPU.  ``None`` entries and scalars are skipped.

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
