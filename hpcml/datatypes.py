"""Canonical strided-block description of array regions, and its pack/unpack.

``StridedBlock(start, counts, strides)`` describes a region of a buffer in
bytes: ``counts[0]`` contiguous bytes form a run (dimension 0 is always dense),
and each further dimension ``d`` repeats everything below it ``counts[d]``
times, ``strides[d]`` bytes apart.  Adjacent dimensions that are contiguous in
memory are folded, so a face that is one dense slab has a single dimension and
is sent without packing.  This is TEMPI's canonical form; the halo exchange
packs with it on the CPU, and GPU pack kernels use the same description.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.backend import array_module, is_contiguous, is_device_array
from hpcml.devices import device_ops
from hpcml.kernels.pack import pack_words, unpack_words

__all__ = ["StridedBlock", "UnsupportedDatatypeError", "pack_datatype"]


class UnsupportedDatatypeError(ValueError):
    """An MPI datatype that has no strided-block form (indexed, struct, ...)."""


_WORDS = {8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}


def _base_bytes(array: Any) -> tuple[Any, int]:
    """Flat uint8 view of a C- or F-contiguous array's whole buffer."""
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        raise ValueError("StridedBlock pack/unpack needs a contiguous base array")
    return array.ravel(order="A").view(np.uint8), array.nbytes


@dataclass(frozen=True)
class StridedBlock:
    """A strided region of a buffer, in bytes, in canonical (folded) form.

    Attributes
    ----------
    start
        Byte offset of the first byte of the region.
    counts
        ``counts[0]``: bytes in one dense run; ``counts[d]``: repetitions of dim ``d-1``.
    strides
        Byte distance between repetitions per dimension (``strides[0] == 1``).
    """

    start: int
    counts: tuple[int, ...]
    strides: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.strides) or not self.counts:
            raise ValueError("counts and strides must have the same, non-zero length")
        if self.start < 0 or any(c < 0 for c in self.counts):
            raise ValueError(f"negative start or count in {self}")

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_view(cls, array: Any, region: Sequence[slice] | None = None) -> StridedBlock:
        """Describe ``array[region]`` relative to the start of ``array``'s buffer.

        ``array`` may be any NumPy/CuPy array with non-negative strides; ``region``
        is a tuple of step-1 slices (``None`` = the whole array).
        """
        view = array if region is None else array[tuple(region)]
        if any(s < 0 for s in view.strides):
            raise ValueError("negative strides are not supported")
        start = _byte_offset(view, array)
        return cls.from_shape_strides(start, view.shape, view.strides, view.itemsize)

    @classmethod
    def from_shape_strides(
        cls, start: int, shape: Sequence[int], strides: Sequence[int], itemsize: int
    ) -> StridedBlock:
        """Canonical form of an N-D strided region (shape/strides in elements/bytes)."""
        dims = [(int(n), int(s)) for n, s in zip(shape, strides) if int(n) != 1]
        if any(n == 0 for n, _ in dims):
            return cls(int(start), (0,), (1,))
        dims.sort(key=lambda t: t[1])  # innermost (smallest stride) first
        counts, strides_b = [int(itemsize)], [1]
        for n, s in dims:
            if s == counts[-1] * strides_b[-1]:
                counts[-1] *= n  # dense fold: this dim continues the previous one
            else:
                counts.append(n)
                strides_b.append(s)
        return cls(int(start), tuple(counts), tuple(strides_b))

    @classmethod
    def from_datatype(cls, datatype: Any) -> StridedBlock:
        """Canonical strided form of one element of an MPI datatype, in type-map order.

        Decodes named, contiguous, vector, hvector, subarray (C and Fortran order),
        resized and dup types through ``Get_envelope``/``Get_contents`` (mpi4py's
        ``decode``).  Packing ``array`` with the result gives the same bytes as
        ``datatype.Pack`` of ``[array, 1, datatype]``.  Simplification: count-1
        streams are elided *after* their offset was added to the start (TEMPI drops
        that offset, which packs the wrong plane of a one-thick subarray at a nonzero
        start), and streams that continue the one below them are folded.

        Raises
        ------
        UnsupportedDatatypeError
            For combiners without a strided form (indexed, struct, darray, ...) or
            negative strides; use MPI's own pack for those.
        """
        start, run, streams, _ = _decode(datatype)
        return cls._canonical(start, run, streams)

    @classmethod
    def _canonical(cls, start: int, run: int, streams: list[tuple[int, int]]) -> StridedBlock:
        counts, strides = [run], [1]
        for count, stride in streams:
            if count == 0:
                return cls(int(start), (0,), (1,))
            if count == 1:
                continue  # elide: its offset is already in ``start``
            if stride < 0:
                raise UnsupportedDatatypeError("negative strides have no canonical strided form here")
            if stride == counts[-1] * strides[-1]:
                counts[-1] *= count  # dense fold
            else:
                counts.append(count)
                strides.append(stride)
        return cls(int(start), tuple(counts), tuple(strides))

    # -- properties (cached: pack/unpack sit on the halo-exchange hot path) ---------------
    @cached_property
    def nbytes(self) -> int:
        """Number of bytes in the region (the packed size)."""
        return math.prod(self.counts)

    @property
    def contiguous(self) -> bool:
        """True when the region is one dense run (no packing needed)."""
        return len(self.counts) == 1

    @cached_property
    def extent(self) -> int:
        """One past the last byte touched, relative to the buffer start."""
        if self.nbytes == 0:
            return self.start
        return self.start + self.counts[0] + sum((c - 1) * s for c, s in zip(self.counts[1:], self.strides[1:]))

    def word_size(self) -> int:
        """Widest word (8/4/2/1 bytes) dividing start, run length and every stride."""
        return self._word

    @cached_property
    def _word(self) -> int:
        for w in (8, 4, 2, 1):
            if self.start % w == 0 and self.counts[0] % w == 0 and all(s % w == 0 for s in self.strides[1:]):
                return w
        return 1  # pragma: no cover - w=1 always divides

    @cached_property
    def _words(self) -> tuple[int, np.ndarray, np.ndarray]:
        return self._in_words(self._word)

    def _in_words(self, w: int) -> tuple[int, np.ndarray, np.ndarray]:
        counts = np.array((self.counts[0] // w, *self.counts[1:]), dtype=np.int64)
        strides = np.array((1, *(s // w for s in self.strides[1:])), dtype=np.int64)
        return self.start // w, counts, strides

    # -- pack / unpack -------------------------------------------------------------------
    def pack(self, array: Any, out: Any = None, engine: str = "auto") -> Any:
        """Copy the region of ``array``'s buffer into a contiguous uint8 array.

        Returns ``out`` (allocated with ``array``'s module when ``None``).  On the CPU
        ``engine="numba"`` runs the word-copy kernel of :mod:`hpcml.kernels.pack`;
        ``"numpy"`` (what ``"auto"`` picks: a fraction of the call overhead at the same
        bandwidth, measured in docs/decomposition.md) copies through a strided view in
        canonical form.
        """
        if is_device_array(array):
            return self._pack_device(array_module(array), array, out, engine)
        self._check(array.nbytes)
        if out is None:
            out = np.empty(self.nbytes, dtype=np.uint8)
        elif out.nbytes < self.nbytes or not out.flags.c_contiguous:
            raise ValueError(f"out must be a contiguous buffer of at least {self.nbytes} bytes")
        if not self.nbytes:
            return out
        if engine == "sim":
            from hpcml.kernels.pack_gpu import pack_numba_cuda

            word = _WORDS[self._word]
            src, _ = _base_bytes(array)
            pack_numba_cuda(src.view(word), out.reshape(-1)[: self.nbytes].view(word), *self._words)
            return out
        if engine in ("auto", "numpy"):
            view = self._np_view(array)
            np.copyto(np.ndarray(view.shape, view.dtype, buffer=out), view)
            return out
        _check_engine(engine)
        src, _ = _base_bytes(array)
        dst = out.reshape(-1).view(np.uint8)[: self.nbytes]
        start, counts, strides = self._words
        word = _WORDS[self._word]
        pack_words(src.view(word), dst.view(word), start, counts, strides)
        return out

    def unpack(self, buf: Any, array: Any, accumulate: bool = False, engine: str = "auto") -> None:
        """Scatter packed ``buf`` back into the region of ``array``'s buffer.

        With ``accumulate`` the packed values are *added* (element dtype of ``array``),
        which the adjoint of a halo exchange needs.  ``engine`` as in :meth:`pack`.
        """
        if is_device_array(array):
            self._unpack_device(array_module(array), buf, array, accumulate, engine)
            return
        self._check(array.nbytes)
        if buf.nbytes < self.nbytes:
            raise ValueError(f"buffer has {buf.nbytes} bytes, the region needs {self.nbytes}")
        if not self.nbytes:
            return
        _check_engine(engine)
        if engine == "sim":
            from hpcml.kernels.pack_gpu import unpack_numba_cuda

            dst, _ = _base_bytes(array)
            src = np.ascontiguousarray(buf).reshape(-1).view(np.uint8)[: self.nbytes]
            typ, start, counts, strides = self._typed(array.dtype if accumulate else None)
            unpack_numba_cuda(src.view(typ), dst.view(typ), start, counts, strides, accumulate)
            return
        if accumulate:
            item = array.dtype.itemsize
            if self.start % item or self.counts[0] % item or any(s % item for s in self.strides[1:]):
                raise ValueError("accumulate needs a region aligned to the array's elements")
            if engine in ("auto", "numpy"):
                view = self._np_view(array, array.dtype)
                view += np.ndarray(view.shape, view.dtype, buffer=buf)
                return
            dst, _ = _base_bytes(array)
            src = np.ascontiguousarray(buf).reshape(-1).view(np.uint8)[: self.nbytes]
            counts = np.array((self.counts[0] // item, *self.counts[1:]), dtype=np.int64)
            strides = np.array((1, *(s // item for s in self.strides[1:])), dtype=np.int64)
            unpack_words(src.view(array.dtype), dst.view(array.dtype), self.start // item, counts, strides, True)
            return
        if engine in ("auto", "numpy"):
            view = self._np_view(array)
            np.copyto(view, np.ndarray(view.shape, view.dtype, buffer=buf))
            return
        dst, _ = _base_bytes(array)
        src = np.ascontiguousarray(buf).reshape(-1).view(np.uint8)[: self.nbytes]
        start, counts, strides = self._words
        word = _WORDS[self._word]
        unpack_words(src.view(word), dst.view(word), start, counts, strides, False)

    def _typed(self, dtype: Any = None) -> tuple[Any, int, np.ndarray, np.ndarray]:
        """``(word type, start, counts, strides)`` in widest words, or in ``dtype`` elements."""
        if dtype is None:
            return (_WORDS[self._word], *self._words)
        item = np.dtype(dtype).itemsize
        if self.start % item or self.counts[0] % item or any(s % item for s in self.strides[1:]):
            raise ValueError("accumulate needs a region aligned to the array's elements")
        counts = np.array((self.counts[0] // item, *self.counts[1:]), dtype=np.int64)
        strides = np.array((1, *(s // item for s in self.strides[1:])), dtype=np.int64)
        return np.dtype(dtype), self.start // item, counts, strides

    def _pack_device(self, xp: Any, array: Any, out: Any, engine: str) -> Any:
        """Pack a GPU array: CuPy ``rawkernel`` (auto), ``numba-cuda`` (auto for Numba arrays) or ``copy``."""
        engine = _device_engine(xp, engine)
        if engine == "copy":
            return self._pack_xp(xp, array, out)
        self._check(array.nbytes)
        if out is None:
            out = device_ops(xp).empty(self.nbytes)
        if not self.nbytes:
            return out
        typ, start, counts, strides = self._typed()
        src = _device_words(array, typ)
        dst = out.reshape(-1).view(np.uint8)[: self.nbytes].view(typ)
        if engine == "rawkernel":
            from hpcml.kernels.pack_gpu import pack_cupy

            pack_cupy(src, dst, start, counts, strides)
        else:
            from hpcml.kernels.pack_gpu import pack_numba_cuda

            pack_numba_cuda(src, dst, start, counts, strides)
        return out

    def _unpack_device(self, xp: Any, buf: Any, array: Any, accumulate: bool, engine: str) -> None:
        engine = _device_engine(xp, engine)
        if engine == "copy":
            self._unpack_xp(xp, buf, array, accumulate)
            return
        self._check(array.nbytes)
        if not self.nbytes:
            return
        typ, start, counts, strides = self._typed(array.dtype if accumulate else None)
        dst = _device_words(array, typ)
        src = buf.reshape(-1).view(np.uint8)[: self.nbytes].view(typ)
        if engine == "rawkernel":
            from hpcml.kernels.pack_gpu import unpack_cupy

            unpack_cupy(src, dst, start, counts, strides, accumulate)
        else:
            from hpcml.kernels.pack_gpu import unpack_numba_cuda

            unpack_numba_cuda(src, dst, start, counts, strides, accumulate)

    def _np_view(self, array: np.ndarray, dtype: Any = None) -> np.ndarray:
        """The region as a strided NumPy view ``(counts[-1], ..., counts[1], run)``.

        Typed by the widest word, or by ``dtype`` (element-aligned regions).
        """
        if not (array.flags.c_contiguous or array.flags.f_contiguous):
            raise ValueError("StridedBlock pack/unpack needs a contiguous base array")
        w = self._word if dtype is None else np.dtype(dtype).itemsize
        word = _WORDS[w] if dtype is None else np.dtype(dtype)
        shape = (*reversed(self.counts[1:]), self.counts[0] // w)
        step = (*reversed(self.strides[1:]), w)
        if shape[-1] == 1 and len(shape) > 1:
            # A run of one word: drop that axis so NumPy's inner loop walks the stride
            # (an inner loop of length 1 costs ~2x on a strided column).
            shape, step = shape[:-1], step[:-1]
        return np.ndarray(shape, word, buffer=array, offset=self.start, strides=step)

    def _strided_view(self, xp: Any, array: Any) -> Any:
        """The region as a (run, counts[1:]) strided view, for array modules without Numba."""
        from importlib import import_module

        as_strided = import_module(xp.__name__ + ".lib.stride_tricks").as_strided
        item = array.dtype.itemsize
        if self.start % item or self.counts[0] % item or any(s % item for s in self.strides[1:]):
            flat, elem = array.ravel(order="A").view(xp.uint8), 1
        else:
            flat, elem = array.ravel(order="A"), item
        shape = (*reversed(self.counts[1:]), self.counts[0] // elem)
        strides = (*reversed(self.strides[1:]), elem)
        return as_strided(flat[self.start // elem :], shape=shape, strides=strides)

    def _pack_xp(self, xp: Any, array: Any, out: Any) -> Any:
        # One strided elementwise copy on the array's device (a CuPy kernel for CuPy
        # arrays); the dedicated GPU pack kernels replace this where they are faster.
        self._check(array.nbytes)
        if out is None:
            out = xp.empty(self.nbytes, dtype=xp.uint8)
        view = self._strided_view(xp, array)
        out.reshape(-1).view(xp.uint8)[: self.nbytes].view(view.dtype).reshape(view.shape)[...] = view
        return out

    def _unpack_xp(self, xp: Any, buf: Any, array: Any, accumulate: bool) -> None:
        self._check(array.nbytes)
        view = self._strided_view(xp, array)
        src = buf.reshape(-1).view(xp.uint8)[: self.nbytes].view(view.dtype).reshape(view.shape)
        if accumulate:
            if view.dtype != array.dtype:
                raise ValueError("accumulate needs a region aligned to the array's elements")
            view += src
        else:
            view[...] = src

    def _check(self, total: int) -> None:
        if self.extent > total:
            raise ValueError(f"region ends at byte {self.extent} but the buffer has {total} bytes")


def _device_engine(xp: Any, engine: str) -> str:
    """Resolve a device pack engine for arrays of module ``xp`` (``cupy`` or ``numba.cuda``)."""
    numba_array = xp.__name__ != "cupy"
    if engine == "numpy":
        engine = "copy"
    if engine == "sim":
        engine = "numba-cuda"
    if engine == "auto":
        return "numba-cuda" if numba_array else "rawkernel"
    if engine not in ("rawkernel", "numba-cuda", "copy"):
        raise ValueError(f"unknown device pack engine {engine!r}; expected auto, rawkernel, numba-cuda, copy")
    if numba_array and engine != "numba-cuda":
        raise ValueError(f"engine {engine!r} needs a CuPy array; Numba-CUDA arrays pack with 'numba-cuda'")
    return engine


def _device_words(array: Any, typ: Any) -> Any:
    """A contiguous GPU array's buffer as a flat array of ``typ`` words (a view).

    A buffer whose size is not a multiple of the word (3 bytes viewed as uint16) is
    cut to the last whole word: a region packed in such words ends on a word boundary,
    so it lies inside that prefix.
    """
    order = "C" if is_contiguous(array, "C") else "F"
    flat = array.ravel(order=order).view(np.uint8)
    whole = (flat.shape[0] // np.dtype(typ).itemsize) * np.dtype(typ).itemsize
    return flat[:whole].view(typ)


def _decode(dt: Any) -> tuple[int, int, list[tuple[int, int]], int]:
    """``(start, dense run bytes, streams innermost-first, extent)`` of one element of ``dt``.

    A stream ``(count, stride)`` repeats everything inside it ``count`` times,
    ``stride`` bytes apart; streams are listed from the innermost out.
    """
    base, combiner, params = dt.decode()
    try:
        if combiner == "NAMED":
            lb, extent = dt.Get_extent()
            if lb != 0 or extent != dt.Get_size():
                raise UnsupportedDatatypeError(f"named type with gaps ({dt.Get_name()})")
            return 0, dt.Get_size(), [], extent
        if combiner == "DUP":
            return _decode(base)
        if combiner == "RESIZED":
            start, run, streams, _ = _decode(base)
            return start, run, streams, int(params["extent"])
        start, run, streams, ext = _decode(base)
        if combiner == "CONTIGUOUS":
            return start, run, [*streams, (int(params["count"]), ext)], int(params["count"]) * ext
        if combiner in ("VECTOR", "HVECTOR"):
            count, block = int(params["count"]), int(params["blocklength"])
            stride = int(params["stride"]) * (ext if combiner == "VECTOR" else 1)
            extent = (count - 1) * stride + block * ext if count else 0
            return start, run, [*streams, (block, ext), (count, stride)], extent
        if combiner == "SUBARRAY":
            sizes, subsizes, starts = params["sizes"], params["subsizes"], params["starts"]
            order = range(len(sizes) - 1, -1, -1) if params["order"] == MPI.ORDER_C else range(len(sizes))
            step, offset, dims = ext, start, list(streams)
            for d in order:  # fastest-varying dimension first
                offset += int(starts[d]) * step
                dims.append((int(subsizes[d]), step))
                step *= int(sizes[d])
            return offset, run, dims, step
    finally:
        if combiner != "NAMED" and base is not None and not base.is_predefined:
            base.Free()
    raise UnsupportedDatatypeError(f"MPI combiner {combiner} has no strided-block form")


def pack_datatype(buf: Any, datatype: Any, comm: Any = None) -> tuple[np.ndarray, str]:
    """Pack one element of ``datatype`` from ``buf``; returns ``(bytes, engine)``.

    Uses the canonical strided form when the type has one (``engine == "strided"``)
    and falls back to ``MPI_Pack`` otherwise (``engine == "mpi"``), so callers can
    report which path ran.
    """
    try:
        sb = StridedBlock.from_datatype(datatype)
    except UnsupportedDatatypeError:
        comm = MPI.COMM_SELF if comm is None else comm
        return mpi_pack(buf, datatype, comm), "mpi"
    return sb.pack(buf), "strided"


def mpi_pack(buf: Any, datatype: Any, comm: Any = None) -> np.ndarray:
    """``MPI_Pack`` of exactly one element of ``datatype`` from the start of ``buf``."""
    comm = MPI.COMM_SELF if comm is None else comm
    out = np.empty(datatype.Pack_size(1, comm), dtype=np.uint8)
    extent = datatype.Get_extent()[1]
    raw = np.asarray(buf).reshape(-1).view(np.uint8)
    # mpi4py packs len(inbuf) // extent elements: hand it exactly one extent of bytes.
    n = datatype.Pack(raw[: max(extent, 1)], out, 0, comm)
    return out[:n]


def _check_engine(engine: str) -> None:
    if engine not in ("auto", "numpy", "numba", "sim"):
        raise ValueError(f"unknown pack engine {engine!r}; expected auto, numpy, numba or sim")


def _byte_offset(view: Any, base: Any) -> int:
    """Byte offset of ``view``'s first element inside ``base``'s buffer."""
    if hasattr(view, "__cuda_array_interface__") and not isinstance(view, np.ndarray):
        v = view.__cuda_array_interface__["data"][0]
        b = base.__cuda_array_interface__["data"][0]
    else:
        v = view.__array_interface__["data"][0]
        b = base.__array_interface__["data"][0]
    off = v - b
    if off < 0 or off + 0 > base.nbytes:
        raise ValueError("the region does not lie inside the base array")
    return int(off)
