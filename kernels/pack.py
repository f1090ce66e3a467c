"""Pack and unpack strided byte regions into contiguous buffers (CPU, Numba).

A region is described in the canonical strided-block form of
:class:`hpcml.datatypes.StridedBlock`, converted to *words*: ``counts[0]`` words
form one dense run, and dimension ``d >= 1`` repeats the lower dimensions
``counts[d]`` times at a distance of ``strides[d]`` words.  The caller picks the
widest word (8, 4, 2 or 1 bytes) dividing start, run length and strides, so the
inner copy moves machine words, not bytes.  Offsets are 64-bit throughout.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["pack_words", "unpack_words"]


@njit(cache=True, nogil=True)
def _pack(src, dst, start, counts, strides):  # pragma: no cover - compiled
    ndim = counts.shape[0]
    run = counts[0]
    inner = counts[1] if ndim > 1 else 1
    step = strides[1] if ndim > 1 else 0
    nouter = 1
    for d in range(2, ndim):
        nouter *= counts[d]
    pos = 0
    for k in range(nouter):
        off = start
        rem = k
        for d in range(2, ndim):
            off += (rem % counts[d]) * strides[d]
            rem //= counts[d]
        for j in range(inner):
            base = off + j * step
            for i in range(run):
                dst[pos + i] = src[base + i]
            pos += run


@njit(cache=True, nogil=True)
def _unpack(src, dst, start, counts, strides, accumulate):  # pragma: no cover - compiled
    ndim = counts.shape[0]
    run = counts[0]
    inner = counts[1] if ndim > 1 else 1
    step = strides[1] if ndim > 1 else 0
    nouter = 1
    for d in range(2, ndim):
        nouter *= counts[d]
    pos = 0
    for k in range(nouter):
        off = start
        rem = k
        for d in range(2, ndim):
            off += (rem % counts[d]) * strides[d]
            rem //= counts[d]
        for j in range(inner):
            base = off + j * step
            if accumulate:
                for i in range(run):
                    dst[base + i] += src[pos + i]
            else:
                for i in range(run):
                    dst[base + i] = src[pos + i]
            pos += run


def pack_words(src: np.ndarray, dst: np.ndarray, start: int, counts: np.ndarray, strides: np.ndarray) -> None:
    """Gather the region of 1-D word array ``src`` into contiguous ``dst``.

    ``start``, ``counts`` and ``strides`` are in words (``counts[0]`` is the dense
    run length, ``strides[0]`` is unused); ``counts``/``strides`` are int64 arrays.
    """
    _pack(src, dst, np.int64(start), counts, strides)


def unpack_words(
    src: np.ndarray,
    dst: np.ndarray,
    start: int,
    counts: np.ndarray,
    strides: np.ndarray,
    accumulate: bool = False,
) -> None:
    """Scatter contiguous ``src`` into the region of 1-D word array ``dst``.

    With ``accumulate`` the values are added (``+=``), as the adjoint of a halo
    exchange needs; ``src``/``dst`` must then be typed by the element dtype, not
    by raw words.
    """
    _unpack(src, dst, np.int64(start), counts, strides, bool(accumulate))
