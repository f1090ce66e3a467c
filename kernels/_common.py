"""Validation and launch helpers shared by the kernel modules (private).

Everything here is cheap Python run once per call, before a compiled kernel
starts: it turns wrong input into a clear ``TypeError``/``ValueError`` instead
of a Numba typing error or a silent wrong answer.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

# ``cuda`` must be a module global: the CUDA simulator runs a kernel by swapping
# every global bound to numba.cuda for its fake module.
from numba import cuda

from hpcml.backend import array_module, cupy_module

#: dtypes every kernel accepts; BLAS-like kernels are defined for real floats.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: ``fastmath`` flags for reductions: reassociation lets LLVM vectorise a sum
#: and ``contract`` allows FMA.  No ``nnan``/``ninf``: inf and NaN must stay IEEE.
FM_REDUCE = {"reassoc", "contract"}
#: ``fastmath`` flags for element-wise updates (FMA only; order is unchanged).
FM_CONTRACT = {"contract"}

#: threads per block for 1-D Numba-CUDA launches.
CUDA_BLOCK = 128


def kernel_module(backend: str, x: Any) -> Any:
    """The array module a kernel allocates and calls libraries with: NumPy, or CuPy on the GPU.

    GPU kernels take CuPy arrays; a Numba-CUDA device array is refused with the
    zero-copy way to pass it (``cupy.asarray``).
    """
    if backend != "gpu":
        return np
    xp = array_module(x)
    if xp.__name__ != "cupy":
        raise TypeError(f"GPU kernels take CuPy arrays, got {type(x).__name__}; wrap it with cupy.asarray() (no copy)")
    return xp


def check_float_dtype(name: str, a: Any) -> np.dtype:
    """Return ``a.dtype`` if it is float32/float64, else raise ``TypeError``."""
    dt = np.dtype(a.dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {dt}; hpcml kernels take float32 or float64")
    return dt


def check_same_dtype(**arrays: Any) -> np.dtype:
    """All given arrays (``None`` skipped) share one float dtype; return it."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    for k, v in items:
        if not hasattr(v, "dtype") or not hasattr(v, "shape"):
            raise TypeError(f"{k} must be an array, got {type(v).__name__}")
    dt = check_float_dtype(items[0][0], items[0][1])
    for k, v in items[1:]:
        if np.dtype(v.dtype) != dt:
            raise TypeError(f"dtype mismatch: {items[0][0]} is {dt} but {k} is {np.dtype(v.dtype)}")
    return dt


def check_ndim(name: str, a: Any, ndim: int) -> None:
    """Raise ``ValueError`` unless ``a.ndim == ndim``."""
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")


def as_scalar(name: str, value: Any, dtype: np.dtype) -> Any:
    """Convert ``alpha``/``beta`` to ``dtype``; non-finite values are allowed (IEEE)."""
    if isinstance(value, (bool, np.bool_)) or (not np.isscalar(value) and np.ndim(value) != 0):
        raise TypeError(f"{name} must be a real scalar, got {value!r}")
    try:
        return dtype.type(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real scalar, got {value!r}") from exc


def check_writeable(name: str, a: Any) -> None:
    """Raise ``ValueError`` for a read-only NumPy output array."""
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        raise ValueError(f"{name} is read-only; kernels write their result in place")


def check_method(method: str, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` for an unknown ``method=``."""
    if method not in allowed:
        raise ValueError(f"unknown method {method!r}; expected one of {allowed}")


def spacing_tuple(spacing: Any, ndim: int) -> tuple[float, ...]:
    """Normalise a stencil ``spacing`` (float or one per axis) to positive floats."""
    if isinstance(spacing, (float, int)) or np.ndim(spacing) == 0:
        hs = (float(spacing),) * ndim
    else:
        hs = tuple(float(h) for h in spacing)
        if len(hs) != ndim:
            raise ValueError(f"spacing has {len(hs)} entries for a {ndim}-D array")
    for h in hs:
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"spacing must be finite and > 0, got {spacing!r}")
    return hs


# --------------------------------------------------------------------- CUDA ---


@functools.cache
def cuda_block_sum() -> Any:
    """Device function ``block_sum(sm, tid, value)``: sum ``value`` over a block.

    ``sm`` is a float64 shared array of ``CUDA_BLOCK`` entries; every thread
    of the block must call it (it synchronises); the sum is returned to all.
    """

    @cuda.jit(device=True)
    def block_sum(sm, tid, value):  # pragma: no cover - device code
        sm[tid] = value
        cuda.syncthreads()
        step = CUDA_BLOCK // 2
        while step > 0:
            if tid < step:
                sm[tid] += sm[tid + step]
            cuda.syncthreads()
            step //= 2
        total = sm[0]
        cuda.syncthreads()  # sm may be reused right after
        return total

    return block_sum


def launch(kernel: Any, griddim: Any, blockdim: Any, backend: str, *args: Any) -> None:
    """Launch a Numba-CUDA ``kernel``; on the GPU, on CuPy's current stream.

    Launching on CuPy's stream keeps kernel order with CuPy work without an
    extra device synchronisation.  In the simulator there are no streams.
    """
    if backend == "gpu":
        cp = cupy_module()
        ptr = cp.cuda.get_current_stream().ptr if cp is not None else 0
        stream = cuda.external_stream(ptr) if ptr else cuda.default_stream()
        kernel[griddim, blockdim, stream](*args)
        return
    # The simulator, like a real device, moves host arrays as one contiguous
    # buffer: hand it contiguous copies of strided views and copy results back.
    staged = []
    call_args = list(args)
    for n, a in enumerate(args):
        if isinstance(a, np.ndarray) and not (a.flags.c_contiguous or a.flags.f_contiguous):
            call_args[n] = np.ascontiguousarray(a)
            staged.append((a, call_args[n]))
    kernel[griddim, blockdim](*call_args)
    for orig, copy in staged:
        if orig.flags.writeable:
            orig[...] = copy


def grid_1d(n: int, block: int = CUDA_BLOCK) -> int:
    """Blocks needed to cover ``n`` threads (at least one, a launch of 0 blocks fails)."""
    return max(1, (n + block - 1) // block)


def pick_impl(backend: str, method: str, library: str = "library") -> str:
    """Map ``(backend, method)`` to ``"cpu"`` (Numba), ``library`` or ``"cuda"`` (Numba-CUDA).

    ``method="auto"`` means the fastest path we know on that device: our Numba
    kernel on the CPU (it fuses what NumPy splits into temporaries) and the
    vendor library (CuPy/cuBLAS) on the GPU.  ``method="numba"`` forces our own
    kernel on either device; ``"sim"`` always runs the Numba-CUDA kernel.
    """
    check_method(method, ("auto", "numba", library))
    if backend == "cpu":
        return library if method == library else "cpu"
    if backend == "gpu":
        return "cuda" if method == "numba" else library
    if method == library:
        raise ValueError(f"method={library!r} has no simulator path; use backend='sim' with method='numba'")
    return "cuda"


@functools.cache
def _cupy_axpby_kernel() -> Any:
    cp = cupy_module()
    # beta == 0 must not read y (BLAS convention: y may hold garbage or NaN)
    return cp.ElementwiseKernel(
        "T t, T alpha, T beta",
        "T y",
        "y = (beta == (T)0) ? alpha * t : alpha * t + beta * y",
        "hpcml_axpby",
    )


def cupy_axpby(alpha: Any, t: Any, beta: Any, y: Any) -> Any:
    """``y <- alpha*t + beta*y`` on the GPU in one fused pass (``beta == 0``: y not read)."""
    _cupy_axpby_kernel()(t, alpha, beta, y)
    return y


def row_major_view(a: Any, trans: bool) -> tuple[Any, bool]:
    """Return ``(view, trans)`` with the unit (smaller) stride on the last axis.

    A column-major matrix is the row-major view of its transpose, so
    ``op(A) = A`` on an F-ordered array becomes ``op(A.T) = A.T^T``: the kernel
    then always walks memory contiguously.
    """
    if a.ndim == 2 and abs(a.strides[0]) < abs(a.strides[1]):
        return a.T, not trans
    return a, trans
