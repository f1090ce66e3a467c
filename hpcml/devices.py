"""Device-memory operations for the GPU array kinds a halo exchange serves: CuPy and Numba-CUDA.

A GPU halo exchange needs five things from the array library besides the pack
kernels: a device byte buffer, a page-locked host buffer, a wait for queued
kernels (before MPI touches a buffer), and the two copies between device and
host.  :class:`DeviceOps` names those, plus ``asarray`` (a host array put on the
device, for benchmarks and tests); :class:`CupyOps` and :class:`NumbaCudaOps`
implement them, so one plan (:mod:`hpcml.halo`) serves CuPy arrays and
Numba-CUDA device arrays alike.

Numba-CUDA device arrays also exist in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``), where device memory is host memory: that is how the
``staged`` and ``device`` exchange paths run in CI on machines without a GPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["CupyOps", "DeviceOps", "NumbaCudaOps", "device_ops"]


class DeviceOps(ABC):
    """The device-memory operations of one GPU array library."""

    name: str

    @abstractmethod
    def empty(self, nbytes: int) -> Any:
        """A device buffer of ``nbytes`` uint8."""

    @abstractmethod
    def asarray(self, host: np.ndarray) -> Any:
        """A new device array holding a copy of ``host`` (same shape, dtype and memory order)."""

    @abstractmethod
    def pinned(self, nbytes: int) -> np.ndarray:
        """A page-locked host buffer of ``nbytes`` uint8 (plain host memory if pinning fails)."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait until every kernel queued by hpcml has finished (MPI may then read the memory)."""

    @abstractmethod
    def to_host(self, dev: Any, host: np.ndarray) -> None:
        """Copy the device buffer ``dev`` into ``host``; returns once the bytes have landed."""

    @abstractmethod
    def to_device(self, host: np.ndarray, dev: Any) -> None:
        """Copy ``host`` into the device buffer ``dev``, ordered before later kernels."""


class CupyOps(DeviceOps):
    """CuPy: kernels run on the current stream, which :meth:`synchronize` waits for."""

    name = "cupy"

    def __init__(self, cp: ModuleType) -> None:
        self.cp = cp

    def empty(self, nbytes: int) -> Any:
        """``cupy.empty`` from CuPy's memory pool."""
        return self.cp.empty(nbytes, dtype=self.cp.uint8)

    def asarray(self, host: np.ndarray) -> Any:
        """``cupy.array(host, order="K")``."""
        return self.cp.array(host, order="K")

    def pinned(self, nbytes: int) -> np.ndarray:
        """CuPy's pinned-memory pool, viewed as a NumPy array."""
        try:
            mem = self.cp.cuda.alloc_pinned_memory(nbytes)
            return np.frombuffer(mem, dtype=np.uint8, count=nbytes)
        except Exception:
            return np.empty(nbytes, dtype=np.uint8)

    def synchronize(self) -> None:
        """Wait for the current stream, where hpcml's CuPy kernels run."""
        self.cp.cuda.get_current_stream().synchronize()

    def to_host(self, dev: Any, host: np.ndarray) -> None:
        """``ndarray.get(out=host)``, blocking: the copy is complete on return."""
        dev.get(out=host)

    def to_device(self, host: np.ndarray, dev: Any) -> None:
        """``ndarray.set(host)`` without a stream: synchronous, so ``host`` may be reused at once."""
        dev.set(host)


class NumbaCudaOps(DeviceOps):
    """Numba-CUDA: hpcml launches its kernels on the default stream; copies are synchronous."""

    name = "numba.cuda"

    def __init__(self, cuda: ModuleType) -> None:
        self.cuda = cuda

    def empty(self, nbytes: int) -> Any:
        """``numba.cuda.device_array``."""
        return self.cuda.device_array(nbytes, dtype=np.uint8)

    def asarray(self, host: np.ndarray) -> Any:
        """``numba.cuda.to_device``."""
        return self.cuda.to_device(host)

    def pinned(self, nbytes: int) -> np.ndarray:
        """``numba.cuda.pinned_array``."""
        try:
            return self.cuda.pinned_array(nbytes, dtype=np.uint8)
        except Exception:
            return np.empty(nbytes, dtype=np.uint8)

    def synchronize(self) -> None:
        """``numba.cuda.synchronize``: the whole device."""
        self.cuda.synchronize()

    def to_host(self, dev: Any, host: np.ndarray) -> None:
        """``copy_to_host`` on the default stream (synchronous)."""
        dev.copy_to_host(host)

    def to_device(self, host: np.ndarray, dev: Any) -> None:
        """``copy_to_device`` on the default stream (synchronous)."""
        dev.copy_to_device(host)


def device_ops(xp: ModuleType) -> DeviceOps:
    """The :class:`DeviceOps` of a GPU array module (``cupy`` or ``numba.cuda``)."""
    name = getattr(xp, "__name__", "")
    if name == "cupy":
        return CupyOps(xp)
    if name == "numba.cuda":
        return NumbaCudaOps(xp)
    raise ValueError(f"no device operations for array module {name or xp!r}; expected cupy or numba.cuda")
