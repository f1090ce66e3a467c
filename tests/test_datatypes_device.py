"""Device pack kernels: Numba-CUDA in the simulator, CuPy RawKernel on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcml.datatypes import StridedBlock


@st.composite
def region(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
    dtype = draw(st.sampled_from(["u1", "i2", "f4", "f8"]))
    sl = []
    for n in shape:
        lo = draw(st.integers(0, n - 1))
        sl.append(slice(lo, draw(st.integers(lo + 1, n))))
    a = np.arange(int(np.prod(shape)), dtype=np.int64).astype(dtype).reshape(shape)
    return a, tuple(sl)


@pytest.mark.cudasim
@given(region())
def test_numba_cuda_pack_matches_cpu(case):
    a, sl = case
    sb = StridedBlock.from_view(a, sl)
    ref = sb.pack(a, engine="numpy")
    assert np.array_equal(sb.pack(a, engine="sim"), ref)
    b = np.zeros_like(a)
    sb.unpack(ref, b, engine="sim")
    assert np.array_equal(b[sl], a[sl])
    if a.dtype.kind == "f":
        sb.unpack(ref, b, accumulate=True, engine="sim")
        assert np.array_equal(b[sl], 2 * a[sl])


@pytest.mark.cudasim
def test_numba_cuda_pack_large_grid_stride():
    a = np.random.default_rng(1).random((70, 40, 33))
    sb = StridedBlock.from_view(a, (slice(None), slice(None), slice(1, 2)))
    assert np.array_equal(sb.pack(a, engine="sim"), sb.pack(a))


@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["auto", "rawkernel", "numba-cuda", "copy"])
def test_cupy_pack_engines(engine):
    import cupy as cp

    a = np.random.default_rng(2).random((34, 35, 36))
    d = cp.asarray(a)
    for sl in [
        (slice(1, 2), slice(None), slice(None)),
        (slice(None), slice(1, 3), slice(None)),
        (slice(None), slice(None), slice(34, 35)),
    ]:
        sb = StridedBlock.from_view(a, sl)
        assert StridedBlock.from_view(d, sl) == sb
        packed = sb.pack(d, engine=engine)
        assert isinstance(packed, cp.ndarray)
        assert np.array_equal(cp.asnumpy(packed), sb.pack(a))
        e = cp.zeros_like(d)
        sb.unpack(packed, e, engine=engine)
        assert np.array_equal(cp.asnumpy(e)[sl], a[sl])
        sb.unpack(packed, e, accumulate=True, engine=engine)
        assert np.allclose(cp.asnumpy(e)[sl], 2 * a[sl])


@pytest.mark.cudasim
@given(region())
def test_pack_numba_device_arrays(case):
    """StridedBlock on Numba-CUDA device arrays (simulated): device in, device out, CPU bytes."""
    from numba import cuda

    from hpcml.backend import array_module

    a, sl = case
    sb = StridedBlock.from_view(a, sl)
    d = cuda.to_device(a)
    assert StridedBlock.from_view(d, sl) == sb
    packed = sb.pack(d)
    assert array_module(packed) is cuda
    assert np.array_equal(packed.copy_to_host()[: sb.nbytes], sb.pack(a))
    e = cuda.to_device(np.zeros_like(a))
    sb.unpack(packed, e)
    assert np.array_equal(e.copy_to_host()[sl], a[sl])
    if a.dtype.kind == "f":
        sb.unpack(packed, e, accumulate=True)
        assert np.array_equal(e.copy_to_host()[sl], 2 * a[sl])


@pytest.mark.cudasim
def test_numba_device_arrays_reject_cupy_engines():
    from numba import cuda

    a = np.arange(24.0).reshape(4, 6)
    sb = StridedBlock.from_view(a, (slice(None), slice(1, 2)))
    d = cuda.to_device(a)
    for engine in ("rawkernel", "copy"):
        with pytest.raises(ValueError, match="needs a CuPy array"):
            sb.pack(d, engine=engine)
    with pytest.raises(ValueError, match="unknown device pack engine"):
        sb.pack(d, engine="warp-drive")
