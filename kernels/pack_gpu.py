"""Device pack/unpack of canonical strided blocks: Numba-CUDA and CuPy ``RawKernel``.

One thread per packed word: packed word ``p`` lies in run ``q = p // run`` at
offset ``p % run``; ``q`` is decomposed over ``counts[1:]`` to find the run's start
in the source.  All offsets are 64-bit (halo planes of large 3-D fields exceed
2**31 bytes of addressable source).  The caller passes the region in words of the
widest size dividing start, run length and strides (see
:meth:`hpcml.datatypes.StridedBlock.word_size`).

The Numba-CUDA kernels also run in Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) on host arrays, which is how they are tested on
machines without a GPU.  The CuPy kernels are compiled once per word type.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

import numpy as np
from numba import cuda

__all__ = ["pack_cupy", "pack_numba_cuda", "unpack_cupy", "unpack_numba_cuda"]

THREADS = 256


@cuda.jit(device=True)
def _source_offset(p, start, counts, strides, ndim):  # pragma: no cover - device code
    """Word offset in the source of packed word ``p`` (64-bit arithmetic)."""
    run = counts[0]
    q = p // run
    off = start + (p - q * run)
    for d in range(1, ndim):
        c = counts[d]
        off += (q % c) * strides[d]
        q //= c
    return off


@cuda.jit
def _pack_kernel(src, dst, start, counts, strides, ndim, total):  # pragma: no cover - device code
    p = cuda.grid(1)
    step = cuda.gridsize(1)
    while p < total:
        dst[p] = src[_source_offset(p, start, counts, strides, ndim)]
        p += step


@cuda.jit
def _unpack_kernel(src, dst, start, counts, strides, ndim, total, accumulate):  # pragma: no cover
    p = cuda.grid(1)
    step = cuda.gridsize(1)
    while p < total:
        off = _source_offset(p, start, counts, strides, ndim)
        if accumulate:
            dst[off] += src[p]
        else:
            dst[off] = src[p]
        p += step


def _launch(total: int) -> tuple[int, int]:
    blocks = max(1, min((total + THREADS - 1) // THREADS, 65535))
    return blocks, THREADS


def pack_numba_cuda(src: Any, dst: Any, start: int, counts: np.ndarray, strides: np.ndarray) -> None:
    """Numba-CUDA pack of word arrays (device arrays, or host arrays in the simulator)."""
    total = int(np.prod(counts))
    if total == 0:
        return
    blocks, threads = _launch(total)
    _pack_kernel[blocks, threads](src, dst, np.int64(start), counts, strides, len(counts), np.int64(total))


def unpack_numba_cuda(
    src: Any, dst: Any, start: int, counts: np.ndarray, strides: np.ndarray, accumulate: bool = False
) -> None:
    """Numba-CUDA unpack (``accumulate`` adds; then arrays are typed by element, not word)."""
    total = int(np.prod(counts))
    if total == 0:
        return
    blocks, threads = _launch(total)
    _unpack_kernel[blocks, threads](
        src, dst, np.int64(start), counts, strides, len(counts), np.int64(total), bool(accumulate)
    )


_CUDA_SOURCE = r"""
extern "C" __global__ void pack_{name}(const {T}* __restrict__ src, {T}* __restrict__ dst,
        long long start, const long long* counts, const long long* strides, int ndim, long long total) {{
    long long run = counts[0];
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < total;
         p += (long long)blockDim.x * gridDim.x) {{
        long long q = p / run, off = start + (p - q * run);
        for (int d = 1; d < ndim; ++d) {{ long long c = counts[d]; off += (q % c) * strides[d]; q /= c; }}
        dst[p] = src[off];
    }}
}}
extern "C" __global__ void unpack_{name}(const {T}* __restrict__ src, {T}* __restrict__ dst,
        long long start, const long long* counts, const long long* strides, int ndim, long long total,
        int accumulate) {{
    long long run = counts[0];
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < total;
         p += (long long)blockDim.x * gridDim.x) {{
        long long q = p / run, off = start + (p - q * run);
        for (int d = 1; d < ndim; ++d) {{ long long c = counts[d]; off += (q % c) * strides[d]; q /= c; }}
        if (accumulate) dst[off] += src[p]; else dst[off] = src[p];
    }}
}}
"""

_CTYPES = {
    "uint8": "unsigned char",
    "uint16": "unsigned short",
    "uint32": "unsigned int",
    "uint64": "unsigned long long",
    "float32": "float",
    "float64": "double",
    "int32": "int",
    "int64": "long long",
}


@cache
def _raw_kernels(dtype_name: str) -> tuple[Any, Any]:
    import cupy as cp

    if dtype_name not in _CTYPES:
        raise TypeError(f"no CuPy pack kernel for {dtype_name}")
    src = _CUDA_SOURCE.format(name=dtype_name, T=_CTYPES[dtype_name])
    module = cp.RawModule(code=src, options=("-std=c++14",))
    return module.get_function(f"pack_{dtype_name}"), module.get_function(f"unpack_{dtype_name}")


@lru_cache(maxsize=256)
def _device_shape(xp_id: int, counts: tuple[int, ...], strides: tuple[int, ...]) -> tuple[Any, Any]:
    import cupy as cp

    return cp.asarray(np.array(counts, np.int64)), cp.asarray(np.array(strides, np.int64))


def pack_cupy(src: Any, dst: Any, start: int, counts: np.ndarray, strides: np.ndarray) -> None:
    """CuPy ``RawKernel`` pack of word arrays on the current stream."""
    import cupy as cp

    total = int(np.prod(counts))
    if total == 0:
        return
    pack, _ = _raw_kernels(str(src.dtype))
    dc, ds = _device_shape(0, tuple(int(c) for c in counts), tuple(int(s) for s in strides))
    blocks, threads = _launch(total)
    pack((blocks,), (threads,), (src, dst, cp.int64(start), dc, ds, cp.int32(len(counts)), cp.int64(total)))


def unpack_cupy(
    src: Any, dst: Any, start: int, counts: np.ndarray, strides: np.ndarray, accumulate: bool = False
) -> None:
    """CuPy ``RawKernel`` unpack (``accumulate`` adds element-wise)."""
    import cupy as cp

    total = int(np.prod(counts))
    if total == 0:
        return
    _, unpack = _raw_kernels(str(dst.dtype))
    dc, ds = _device_shape(0, tuple(int(c) for c in counts), tuple(int(s) for s in strides))
    blocks, threads = _launch(total)
    unpack(
        (blocks,),
        (threads,),
        (src, dst, cp.int64(start), dc, ds, cp.int32(len(counts)), cp.int64(total), cp.int32(bool(accumulate))),
    )
