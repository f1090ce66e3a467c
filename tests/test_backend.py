"""hpcml.backend: the one array-module helper and the kernel backend dispatch."""

from __future__ import annotations

import numpy as np
import pytest

from hpcml import backend
from hpcml.backend import array_module, compute_view, is_contiguous, is_device_array, resolve_backend, to_host


class FakeGpuArray:
    """A host buffer that claims to live on a GPU (mpi4py's trick for testing GPU paths)."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = a
        self.shape, self.dtype, self.flags = a.shape, a.dtype, a.flags
        self.__cuda_array_interface__ = {**a.__array_interface__, "version": 3}


def test_host_arrays_are_numpy():
    a = np.zeros((3, 4), order="F")
    assert array_module(a) is np and not is_device_array(a)
    assert array_module([1, 2]) is np and array_module(3.0) is np
    assert is_contiguous(a, "F") and not is_contiguous(a, "C")
    assert to_host(a) is a
    view, xp = compute_view(a)
    assert view is a and xp is np


def test_foreign_gpu_array_is_named():
    g = FakeGpuArray(np.zeros(4))
    assert is_device_array(g)
    with pytest.raises(TypeError, match=r"neither a CuPy nor a Numba-CUDA array.*cupy\.asarray"):
        array_module(g)


def test_module_from_name():
    assert backend.xp_from_name(None) is np and backend.xp_from_name("numpy") is np
    assert backend.xp_from_name(np) is np
    with pytest.raises(ValueError, match="unknown array module"):
        backend.xp_from_name("jax")


def test_resolve_backend():
    x = np.zeros(3)
    assert resolve_backend(x, None, 2.0) == "cpu"
    assert resolve_backend(x, backend="cpu") == "cpu"
    with pytest.raises(TypeError, match="host and GPU mixed"):
        resolve_backend(x, FakeGpuArray(np.zeros(3)))
    with pytest.raises(TypeError, match="live on the host"):
        resolve_backend(x, backend="gpu")
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend(x, backend="tpu")


def test_kernels_take_dispatch_from_backend():
    """The layer rule: ``hpcml.kernels`` imports its dispatch from ``hpcml.backend``, never the reverse."""
    import importlib
    import inspect

    for name in ("blas1", "gemm", "gemv", "spmv", "stencil"):
        assert importlib.import_module(f"hpcml.kernels.{name}").resolve_backend is resolve_backend
    imports = [
        ln.split() for ln in inspect.getsource(backend).splitlines() if ln.lstrip().startswith(("import ", "from "))
    ]
    assert not [ln for ln in imports if ln[1].startswith("hpcml")], "hpcml.backend is the bottom layer"


@pytest.mark.cudasim
def test_numba_device_arrays():
    from numba import cuda

    a = np.arange(12.0).reshape(3, 4)
    d = cuda.to_device(a)
    assert is_device_array(d) and array_module(d) is cuda
    assert is_contiguous(d, "C") and not is_contiguous(d[:, 1:], "C")
    assert np.array_equal(to_host(d[1:, 1:3]), a[1:, 1:3])
    view, xp = compute_view(d)
    assert xp is np and np.array_equal(view, a)  # the simulator has no CuPy: a host copy
    assert backend.xp_from_name("numba.cuda") is cuda
