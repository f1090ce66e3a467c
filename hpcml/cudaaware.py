"""Is the MPI library CUDA-aware?  Asked at run time, overridable by the user.

Order: ``hpcml.settings.rc.cuda_aware`` (``HPCML_CUDA_AWARE``) if set; otherwise the
library's own answer through ``MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, &flag)``
(MPICH >= 4) or ``MPIX_Query_cuda_support()`` (Open MPI, MVAPICH, older MPICH),
looked up with ctypes in the libmpi that mpi4py loaded.  A library that answers
neither is treated as not CUDA-aware, and halos of GPU arrays are staged through
pinned host memory.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

from hpcml.settings import rc

__all__ = ["cuda_aware_mpi", "query_library"]

MPIX_GPU_SUPPORT_CUDA = 0


def _libmpi_handles() -> list[Any]:
    handles: list[Any] = []
    try:
        from mpi4py import MPI  # noqa: F401  (loads libmpi)

        handles.append(ctypes.CDLL(None))
    except OSError:
        pass
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = {line.split()[-1] for line in fh if "libmpi" in line and ".so" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        try:
            handles.append(ctypes.CDLL(path))
        except OSError:
            continue
    return handles


@cache
def query_library() -> tuple[bool | None, str]:
    """``(answer, how)`` from the MPI library itself; ``None`` when it does not say."""
    for lib in _libmpi_handles():
        fn = getattr(lib, "MPIX_GPU_query_support", None)
        if fn is not None:
            flag = ctypes.c_int(0)
            fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            fn.restype = ctypes.c_int
            if fn(MPIX_GPU_SUPPORT_CUDA, ctypes.byref(flag)) == 0:
                return bool(flag.value), "MPIX_GPU_query_support"
        fn = getattr(lib, "MPIX_Query_cuda_support", None)
        if fn is not None:
            fn.restype = ctypes.c_int
            return bool(fn()), "MPIX_Query_cuda_support"
    return None, "library does not say"


def cuda_aware_mpi() -> bool:
    """True when device buffers may be handed to MPI directly."""
    if rc.cuda_aware is not None:
        return bool(rc.cuda_aware)
    answer, _ = query_library()
    return bool(answer)


def describe() -> str:
    """One line for ``hpcml info``."""
    if rc.cuda_aware is not None:
        return f"{bool(rc.cuda_aware)} (set by HPCML_CUDA_AWARE)"
    answer, how = query_library()
    return f"{bool(answer)} ({how})"
