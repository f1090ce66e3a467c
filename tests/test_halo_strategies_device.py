"""GPU halo paths (``staged``, ``device``) on Numba-CUDA device arrays in the CUDA simulator.

Under ``NUMBA_ENABLE_CUDASIM=1`` a Numba-CUDA device array lives in host memory,
so the whole GPU exchange -- device pack kernel, synchronise, pinned staging copy
or direct hand-over to MPI, receive, device unpack kernel -- runs through the same
plan code a GPU run uses, against the same ``np.pad`` reference as the CPU methods.
``make test-sim`` runs this file on 1-4 ranks; on a GPU machine
``tests/gpu/run_device_checks.sh`` runs it on real device arrays.  What the
simulator cannot show is an ordering bug between a CUDA stream and MPI (it runs
kernels synchronously) or a CuPy-specific call; the GPU script covers those.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from hpcml import CartDecomp
from hpcml.backend import array_module, is_device_array
from hpcml.halo import HaloExchange, get_plan, plan_for
from hpcml.testing import SENTINEL, assert_all, expected_ghosted, global_field, halo_case

pytestmark = [pytest.mark.mpi, pytest.mark.numba_cuda]


def _host_field(d: CartDecomp, shape: tuple[int, ...], order: str = "C") -> np.ndarray:
    """This rank's ghosted block: interior from the global field, ghosts = SENTINEL."""
    a = np.full(d.ghosted_shape, SENTINEL, dtype="f8", order=order)
    box = tuple(slice(s, s + n) for s, n in zip(d.start, d.local_shape))
    a[tuple(slice(h, h + n) for h, n in zip(d.halo, d.local_shape))] = global_field(shape)[box]
    return a


def _check(comm, shape, periodic, halo, method, corners=True, order="C"):
    from numba import cuda

    d = CartDecomp(shape, comm, periodic=periodic, halo=halo)
    host = _host_field(d, shape, order)
    dev = cuda.to_device(host)
    assert is_device_array(dev) and array_module(dev) is cuda
    plan = plan_for(dev, d, method=method, corners=corners)
    assert plan.method == method and plan.order == order
    plan.exchange(dev)
    ref = expected_ghosted(global_field(shape), d, corners=corners)
    ok = np.array_equal(dev.copy_to_host(), ref)
    # the non-blocking path through the same (cached) plan and its pooled buffers
    dev2 = cuda.to_device(host)
    plan.start(dev2).wait()
    ok &= np.array_equal(dev2.copy_to_host(), ref)
    assert_all(comm, ok, f"shape={shape} periodic={periodic} halo={halo} method={method} corners={corners}")
    d.free()


@pytest.mark.parametrize("method", ["staged", "device"])
@settings(max_examples=8)
@given(data=st.data())
def test_device_halo_matches_reference(comm, method, data):
    shape, periodic, halo, corners = data.draw(halo_case(comm.size, max_halo=2, extra=(4, 2)))
    _check(comm, shape, periodic, halo, method, corners)


@pytest.mark.parametrize("method", ["staged", "device"])
def test_device_halo_fortran_order_uneven(comm, method):
    dims = MPI.Compute_dims(comm.size, 3)
    _check(comm, tuple(2 * p + 1 for p in dims), (True, False, True), 2, method, order="F")


@pytest.mark.parametrize("method", ["staged", "device"])
def test_device_bytes_equal_host_pack(comm, method):
    """A device plan and the CPU ``pack`` plan produce identical ghosted arrays."""
    from numba import cuda

    d = CartDecomp((9, 7, 6), comm, periodic=(True, True, False), halo=1)
    a = np.random.default_rng(d.rank).standard_normal(d.ghosted_shape)
    dev = cuda.to_device(a)
    get_plan(d, "f8", cuda, method).exchange(dev)
    get_plan(d, "f8", np, "pack").exchange(a)
    assert_all(comm, np.array_equal(dev.copy_to_host(), a), method)
    d.free()


@pytest.mark.parametrize("method", ["staged", "device"])
@pytest.mark.parametrize("corners", [True, False])
def test_device_adjoint_equals_host_adjoint(comm, method, corners):
    """The device adjoint (pack, send back, accumulate-unpack) gives the host adjoint's result."""
    from numba import cuda

    d = CartDecomp((8, 7), comm, periodic=(True, False), halo=2)
    y = np.random.default_rng(10 + d.rank).standard_normal(d.ghosted_shape)
    dev = cuda.to_device(y)
    get_plan(d, "f8", cuda, method, corners).adjoint(dev)
    get_plan(d, "f8", np, "pack", corners).adjoint(y)
    assert_all(comm, np.allclose(dev.copy_to_host(), y, rtol=0, atol=1e-13), f"{method} corners={corners}")
    d.free()


def test_device_plan_rejects_host_and_wrong_layout(comm):
    from numba import cuda

    d = CartDecomp((6, 5), comm, periodic=True, halo=1)
    plan = HaloExchange(d, "f8", cuda, "staged")
    with pytest.raises(TypeError, match=r"plan's module numba\.cuda"):
        plan.exchange(np.zeros(d.ghosted_shape))
    with pytest.raises(ValueError, match="C-contiguous"):
        plan.exchange(cuda.to_device(np.zeros(d.ghosted_shape, order="F")))
    with pytest.raises(ValueError, match="does not apply"):
        HaloExchange(d, "f8", cuda, "pack")
    d.free()


def test_distarray_takes_numba_device_arrays(comm):
    """``DistArray`` accepts what the halo plans accept: exchange, reductions and gather on a Numba-CUDA array."""
    from numba import cuda

    from hpcml import DistArray

    shape = (9, 7)
    d = CartDecomp(shape, comm, periodic=(True, False), halo=1)
    u = DistArray(d, cuda.to_device(_host_field(d, shape)))
    assert u.xp is cuda and u.order == "C"
    u.exchange_halos()
    ref = expected_ghosted(global_field(shape), d)
    g = global_field(shape)
    ok = np.array_equal(u.data.copy_to_host(), ref)
    ok &= u.sum() == g.sum() and u.max() == g.max() and np.isclose(u.norm(), np.linalg.norm(g))
    full = u.gather(root=0)
    ok &= full is None if comm.rank else np.array_equal(full, g)
    assert_all(comm, bool(ok), "DistArray on a Numba-CUDA array")
    d.free()
