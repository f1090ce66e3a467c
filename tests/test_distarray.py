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
