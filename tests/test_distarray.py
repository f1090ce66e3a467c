"""DistArray: scatter/gather round trips, callable construction, reductions, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mpi4py import MPI

from hpcml import CartDecomp, DistArray
from hpcml.testing import assert_all, field_fn, global_field

DTYPES = ["f4", "f8", "c16", "i8"]


def _shape(data, comm, ndim):
    dims = MPI.Compute_dims(comm.size, ndim)
    return tuple(data.draw(st.integers(p, p + 7)) for p in dims)


@pytest.mark.mpi
@given(data=st.data())
def test_scatter_gather_round_trip(comm, data):
    ndim = data.draw(st.integers(1, 3))
    shape = _shape(data, comm, ndim)
    dtype = data.draw(st.sampled_from(DTYPES))
    root = data.draw(st.integers(0, comm.size - 1))
    d = CartDecomp(shape, comm)
    g = global_field(shape, dtype) if comm.rank == root else None
    u = DistArray.from_global(d, g, root=root)
    ok = u.dtype == np.dtype(dtype)
    ok &= np.array_equal(u.interior, global_field(shape, dtype)[d.slices])
    back = u.gather(root=root)
    if comm.rank == root:
        ok &= np.array_equal(back, g)
    else:
        ok &= back is None
    ok &= np.array_equal(u.allgather(), global_field(shape, dtype))
    assert_all(comm, ok, f"shape={shape} dtype={dtype} root={root}")
    d.free()


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", DTYPES)
def test_callable_and_reductions(comm, dtype):
    shape = (11, 5, 3)
    d = CartDecomp(shape, comm)
    u = DistArray.from_global(d, field_fn(shape, dtype), dtype=dtype)
    v = DistArray.from_global(d, lambda i, j, k: (i - j + 2 * k).astype(dtype), dtype=dtype)
    g = global_field(shape, dtype)
    h = np.fromfunction(lambda i, j, k: i - j + 2 * k, shape).astype(dtype)
    rtol = 1e-5 if dtype in ("f4",) else 1e-12
    ok = np.isclose(u.sum(), g.sum(), rtol=rtol)
    ok &= np.isclose(u.norm(), np.linalg.norm(g.ravel()), rtol=rtol)
    ok &= np.isclose(u.dot(v), np.dot(g.ravel(), h.ravel()), rtol=rtol)
    ok &= np.isclose(u.vdot(v), np.vdot(g.ravel(), h.ravel()), rtol=rtol)
    if np.dtype(dtype).kind != "c":
        ok &= u.max() == g.max() and u.min() == g.min()
    assert_all(comm, bool(ok), dtype)
    d.free()


@pytest.mark.mpi
def test_from_global_bad_array_fails_everywhere(comm):
    d = CartDecomp((8, 6), comm)
    bad = {
        "shape": np.zeros((8, 5)),
        "contiguous": np.zeros((8, 12))[:, ::2],
        "dtype": np.zeros((8, 6), dtype="U3"),
        "None": None,
    }
    for _why, arr in bad.items():
        with pytest.raises(ValueError, match="from_global"):
            DistArray.from_global(d, arr if comm.rank == 0 else None)
    d.free()


def test_unknown_dtype():
    d = CartDecomp((4,), MPI.COMM_SELF)
    with pytest.raises(TypeError, match="unknown dtype"):
        DistArray.zeros(d, dtype="float99")
    with pytest.raises(TypeError, match="not supported"):
        DistArray.zeros(d, dtype="U4")


@pytest.mark.mpi(min_size=3)
def test_dot_on_different_layouts_raises_everywhere(comm):
    # blocks (2, 2, 2) against (2, 1, 3): rank 0's blocks agree, the others' do not;
    # every rank must raise (rank 0 used to go on into the allreduce and hang)
    from hpcml.decomp_blocks import BlockDecomp

    sub = comm.Split(0 if comm.rank < 3 else MPI.UNDEFINED, comm.rank)
    if sub == MPI.COMM_NULL:
        return
    u = DistArray.from_global(CartDecomp((6,), sub, halo=0), lambda i: 1.0 + i)
    v = DistArray.from_global(BlockDecomp([(2, 1, 3)], sub, halo=0), lambda i: 1.0 + i)
    for op in (u.dot, u.vdot):
        with pytest.raises(ValueError, match="different decompositions"):
            op(v)
    sub.Free()


@pytest.mark.mpi(min_size=2)
def test_arrays_on_reordered_communicator_are_refused(comm):
    rev = comm.Split(0, comm.size - 1 - comm.rank)
    du, dv = CartDecomp((4 * comm.size,), comm, halo=0), CartDecomp((4 * comm.size,), rev, halo=0)
    u = DistArray.from_global(du, lambda i: 1.0 * i)
    v = DistArray.from_global(dv, lambda i: 1.0 * i)
    with pytest.raises(ValueError, match="different communicators"):
        u.dot(v)
    with pytest.raises(ValueError, match="different communicators"):
        u + v
    # the same ranks in the same order (another communicator object) are the same layout
    same = comm.Split(0, comm.rank)
    w = DistArray.from_global(CartDecomp((4 * comm.size,), same, halo=0), lambda i: 1.0 * i)
    expect = float(np.dot(np.arange(4.0 * comm.size), np.arange(4.0 * comm.size)))
    assert_all(comm, u.dot(w) == expect, u.dot(w))
    rev.Free()
    same.Free()


@pytest.mark.mpi
@pytest.mark.parametrize("root", [-1, "size"])
def test_gather_bad_root_raises_everywhere(comm, root):
    u = DistArray.from_global(CartDecomp((8,), comm), lambda i: 1.0 * i)
    r = comm.size if root == "size" else root
    with pytest.raises(ValueError, match="not a rank"):
        u.gather(root=r)


def test_strided_data_refused_at_construction():
    d = CartDecomp((4, 4), MPI.COMM_SELF)
    with pytest.raises(ValueError, match="C- or F-contiguous"):
        DistArray(d, np.zeros((12, 12))[::2, ::2])
    DistArray(d, np.zeros((6, 6), order="F"))  # F order is fine
