"""The LLVM intrinsics of ``kernels._intrinsics``: what they emit and that values do not change."""

from __future__ import annotations

import platform

import numpy as np
from hpcml.kernels._intrinsics import (
    address,
    fma,
    load_acquire,
    memmove,
    pointer_like,
    prefer_256_bit_vectors,
    prefetch,
    spin_pause,
    store_release,
    stream_store,
)
from numba import carray, njit


@njit
def _sum_prefetched(a):
    s = 0.0
    for i in range(a.size):
        prefetch(a, min(i + 8, a.size - 1))
        s += a[i]
    return s


@njit
def _scaled(a, out):
    prefer_256_bit_vectors()
    for i in range(a.size):
        out[i] = 2.0 * a[i]


@njit
def _address(a):
    return address(a)


@njit
def _stream_copy(a, out):
    # whole 64-byte lines from out's first aligned element, as the stencils call it
    h = ((-address(out)) % 64) // out.itemsize
    n = ((out.size - h) * out.itemsize // 64) * (64 // out.itemsize)
    for i in range(h):
        out[i] = a[i]
    a2, o2 = a[h:], out[h:]
    for i in range(n):
        stream_store(o2, i, a2[i])
    for i in range(n, o2.size):
        o2[i] = a2[i]


@njit
def _fma(a, b, c):
    return fma(a, b, c)


@njit
def _move(dst, src, n):
    memmove(dst, 0, src, 1, n)


def test_prefetch_reads_nothing_into_values_and_emits_llvm_prefetch():
    a = np.arange(100.0)
    assert _sum_prefetched(a) == a.sum()
    ir = next(iter(_sum_prefetched.inspect_llvm().values()))
    assert "llvm.prefetch" in ir


def test_prefer_256_bit_vectors_marks_the_function():
    a = np.arange(37.0)
    out = np.zeros_like(a)
    _scaled(a, out)
    np.testing.assert_array_equal(out, 2.0 * a)
    ir = next(iter(_scaled.inspect_llvm().values()))
    assert '"prefer-vector-width"="256"' in ir


def test_fma_rounds_once():
    # (1 + 2^-30)^2 - 1 exactly is 2^-29 + 2^-60: a separate multiply loses the 2^-60
    x = 1.0 + 2.0**-30
    assert _fma(x, x, -1.0) == 2.0**-29 + 2.0**-60
    assert x * x - 1.0 == 2.0**-29


def test_memmove_handles_overlap():
    a = np.arange(10.0)
    _move(a, a, 9)
    np.testing.assert_array_equal(a, [1, 2, 3, 4, 5, 6, 7, 8, 9, 9])


def test_address_and_stream_store():
    """address is the data pointer; streamed lines hold the values; the loop compiles to non-temporal stores."""
    for dtype in (np.float64, np.float32):
        base = np.arange(300, dtype=dtype)
        for off in range(0, 20, 3):
            a = base[off:]
            assert _address(a) == a.ctypes.data
            out = np.zeros_like(a)
            _stream_copy(a, out)
            assert np.array_equal(out, a)
    ir = next(iter(_stream_copy.inspect_llvm().values()))
    assert "!nontemporal" in ir


@njit
def _publish(flags, data, i, value):
    data[i] = 2 * value
    store_release(flags, i, value)
    spin_pause()
    return load_acquire(flags, i)


@njit
def _view_at(like, addr, n):
    return carray(pointer_like(like, addr), n)


def test_acquire_release_flags_and_spin_pause():
    """The atomic load and store move the value; the IR holds atomic acquire/release and the CPU's pause."""
    for dtype in (np.int64, np.int32):
        flags = np.zeros(4, dtype=dtype)
        data = np.zeros(4, dtype=dtype)
        assert _publish(flags, data, 2, 7) == 7
        assert flags.tolist() == [0, 0, 7, 0] and data[2] == 14
    ir = next(iter(_publish.inspect_llvm().values()))
    assert "store atomic" in ir and "release" in ir
    assert "load atomic" in ir and "acquire" in ir
    if platform.machine() in ("x86_64", "AMD64"):
        assert "llvm.x86.sse2.pause" in ir


def test_pointer_like_views_memory_at_an_address():
    """``carray(pointer_like(...))`` sees (and writes) the memory at the address, typed like the template."""
    src = np.arange(10.0)
    view = _view_at(np.zeros(1), src.ctypes.data + 16, 5)
    assert view.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]
    view[0] = -1.0
    assert src[2] == -1.0
    words = _view_at(np.zeros(1, dtype=np.uint32), src.ctypes.data, 4)
    assert np.array_equal(words, src[:2].view(np.uint32))
