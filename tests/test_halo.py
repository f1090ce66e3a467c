"""Halo exchange vs a NumPy reference built from the global array (np.pad wrap)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mpi4py import MPI

from hpcml import CartDecomp, DistArray
from hpcml.testing import SENTINEL, assert_all, expected_ghosted, field_fn, global_field, halo_case

METHODS = ["pack", "datatype", "shm", "auto"]


def _check(comm, shape, periodic, halo, method, corners=True, dtype="f8", order="C"):
    d = CartDecomp(shape, comm, periodic=periodic, halo=halo)
    u = DistArray.full(d, SENTINEL, dtype=dtype, order=order)
    u.interior[...] = field_fn(shape, dtype)(*d.global_indices())
    u.exchange_halos(method=method, corners=corners)
    ref = expected_ghosted(global_field(shape, dtype), d, corners=corners)
    ok = np.array_equal(u.data, ref)
    # a second exchange through the cached plan gives the same bytes
    u.start_exchange(method=method, corners=corners).wait()
    ok &= np.array_equal(u.data, ref)
    assert_all(comm, ok, f"shape={shape} periodic={periodic} halo={halo} method={method} corners={corners}")
    d.free()


@pytest.mark.mpi
@pytest.mark.parametrize("method", METHODS)
@given(data=st.data())
def test_halo_matches_reference(comm, method, data):
    shape, periodic, halo, corners = data.draw(halo_case(comm.size))
    _check(comm, shape, periodic, halo, method, corners)


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["f4", "f8", "c8", "c16", "i4", "i8"])
@pytest.mark.parametrize("method", ["pack", "datatype"])
def test_halo_dtypes(comm, dtype, method):
    _check(comm, (9, 11), (True, False), 1, method, dtype=dtype)


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["pack", "datatype"])
def test_halo_fortran_order(comm, method):
    _check(comm, (7, 6, 5), (True, True, False), 1, method, order="F")


@pytest.mark.mpi
def test_halo_uneven_3d_wide(comm):
    dims = MPI.Compute_dims(comm.size, 3)
    shape = tuple(3 * p + 2 for p in dims)
    for method in ("pack", "datatype"):
        _check(comm, shape, (True, False, True), 3, method)


@pytest.mark.mpi
def test_methods_identical_bytes(comm):
    d = CartDecomp((13, 10, 6), comm, periodic=(True, True, True), halo=2)
    out = []
    for method in ("pack", "datatype"):
        u = DistArray.full(d, SENTINEL, dtype="f8")
        u.interior[...] = np.random.default_rng(d.rank).standard_normal(d.local_shape)
        u.exchange_halos(method=method)
        out.append(u.data.tobytes())
    assert_all(comm, out[0] == out[1], "pack and datatype differ")


@pytest.mark.mpi
def test_overlapped_exchanges_in_flight(comm):
    d = CartDecomp((12, 9), comm, periodic=True, halo=1)
    a = DistArray.full(d, SENTINEL)
    b = DistArray.full(d, SENTINEL)
    a.interior[...] = field_fn(d.shape)(*d.global_indices())
    b.interior[...] = 2 * a.interior
    ra, rb = a.start_exchange(), b.start_exchange()
    rb.wait()
    ra.wait()
    ref = expected_ghosted(global_field(d.shape), d)
    assert_all(comm, np.array_equal(a.data, ref) and np.array_equal(b.data, 2 * ref))


def test_bad_method_and_shape():
    d = CartDecomp((6, 6), MPI.COMM_SELF, periodic=True)
    u = DistArray.zeros(d)
    with pytest.raises(ValueError, match="unknown halo method"):
        u.exchange_halos(method="carrier-pigeon")
    with pytest.raises(ValueError, match="does not apply"):
        u.exchange_halos(method="staged")
    plan = u.halo_plan()
    with pytest.raises(ValueError, match="ghosted shape"):
        plan.exchange(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="dtype"):
        plan.exchange(np.zeros(d.ghosted_shape, dtype="f4"))


@pytest.mark.mpi
@pytest.mark.gpu
@pytest.mark.parametrize("method", ["staged", "device"])
def test_gpu_halo_matches_reference(comm, method):
    import cupy as cp

    from hpcml.cudaaware import cuda_aware_mpi

    if method == "device" and not cuda_aware_mpi():
        pytest.skip("MPI is not CUDA-aware")
    shape, periodic = (13, 10, 9), (True, False, True)
    d = CartDecomp(shape, comm, periodic=periodic, halo=2)
    u = DistArray.full(d, SENTINEL, dtype="f8", xp=cp)
    u.interior[...] = cp.asarray(field_fn(shape)(*d.global_indices()))
    for corners in (True, False):
        u.exchange_halos(method=method, corners=corners)
        ref = expected_ghosted(global_field(shape), d, corners=corners)
        if not corners:
            ref = np.where(ref == SENTINEL, cp.asnumpy(u.data), ref)  # corners kept from the first pass
        assert_all(comm, np.array_equal(cp.asnumpy(u.data), ref), f"{method} corners={corners}")
    d.free()


@pytest.mark.mpi
@given(data=st.data())
def test_adjoint_identity(comm, data):
    """<F x, y> == <x, F* y> over all ranks' ghosted arrays (DistDL's adjoint test)."""
    ndim = data.draw(st.integers(1, 3), label="ndim")
    halo = data.draw(st.integers(1, 2), label="halo")
    dims = MPI.Compute_dims(comm.size, ndim)
    shape = tuple(data.draw(st.integers(p * halo, p * halo + 4)) for p in dims)
    periodic = tuple(data.draw(st.booleans()) for _ in range(ndim))
    corners = data.draw(st.booleans(), label="corners")
    d = CartDecomp(shape, comm, periodic=periodic, halo=halo)
    rng = np.random.default_rng(1000 * comm.rank + 7)
    x = DistArray(d, rng.standard_normal(d.ghosted_shape))
    y = DistArray(d, rng.standard_normal(d.ghosted_shape))
    fx, fty = x.copy(), y.copy()
    fx.exchange_halos(corners=corners)
    fty.adjoint_exchange(corners=corners)
    lhs = comm.allreduce(float(np.vdot(fx.data, y.data)))
    rhs = comm.allreduce(float(np.vdot(x.data, fty.data)))
    scale = comm.allreduce(float(np.linalg.norm(fx.data) * np.linalg.norm(y.data)))
    scale = max(scale, comm.allreduce(float(np.linalg.norm(x.data) * np.linalg.norm(fty.data))))
    assert_all(comm, abs(lhs - rhs) <= 1e-12 * scale, f"{lhs} vs {rhs} shape={shape} periodic={periodic}")
    d.free()
