"""DistArray as a NumPy citizen: ufuncs, operators, reductions, global indexing, redistribution.

Every result is compared with NumPy on the gathered array; hypothesis draws
shapes, process grids (uneven splits), dtypes, periodicity and halo widths.
Run on 1-4 ranks.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from hpcml import CartDecomp, DistArray
from hpcml.decomp_blocks import BlockDecomp
from hpcml.testing import assert_all

DTYPES = ["f8", "f4", "c16", "i8", "i4"]


def _field(decomp, dtype, seed):
    """A deterministic field with distinct values, as a DistArray and as the global NumPy array."""
    shape = decomp.shape
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(shape) * 10
    if np.dtype(dtype).kind == "c":
        g = g + 1j * rng.standard_normal(shape)
    if np.dtype(dtype).kind == "i":
        g = np.round(g)
    g = g.astype(dtype)
    u = DistArray.zeros(decomp, dtype)
    u.interior[...] = g[decomp.slices]
    return u, g


def _decomp(data, nranks, max_ndim=3, halo_max=2):
    ndim = data.draw(st.integers(1, max_ndim), label="ndim")
    dims = [int(x) for x in MPI.Compute_dims(nranks, ndim)]
    if ndim > 1 and data.draw(st.booleans(), label="permute dims"):
        dims = dims[::-1]
    halo = data.draw(st.integers(0, halo_max), label="halo")
    shape = tuple(
        data.draw(st.integers(max(1, halo) * p, max(1, halo) * p + 5), label=f"n{i}") for i, p in enumerate(dims)
    )
    periodic = data.draw(st.booleans(), label="periodic")
    return CartDecomp(shape, MPI.COMM_WORLD, dims=dims, periodic=periodic, halo=halo)


def _close(a, b, dtype):
    rtol = 2e-4 if np.dtype(dtype) in (np.dtype("f4"), np.dtype("c8")) else 1e-10
    return np.allclose(a, b, rtol=rtol, atol=rtol, equal_nan=True)


# -- ufuncs and operators ------------------------------------------------------------------------


@pytest.mark.mpi
@settings(max_examples=25)
@given(data=st.data())
def test_ufuncs_and_operators_equal_numpy(comm, data):
    d = _decomp(data, comm.size)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    u, g = _field(d, dtype, 1)
    v, h = _field(d, dtype, 2)
    ok = True
    res = np.sqrt(u**2 + v**2) if np.dtype(dtype).kind != "i" else u * 3 - v // 2
    ref = np.sqrt(g**2 + h**2) if np.dtype(dtype).kind != "i" else g * 3 - h // 2
    ok &= isinstance(res, DistArray) and res.stale_halos and res.dtype == ref.dtype
    ok &= _close(res.allgather(), ref, dtype)
    ok &= _close((2 * u - v / 3).allgather(), 2 * g - h / 3, dtype)
    ok &= _close((-u).allgather(), -g, dtype) and _close(abs(u).allgather(), abs(g), dtype)
    if np.dtype(dtype).kind != "c":
        ok &= np.array_equal((u > v).allgather(), g > h)
        ok &= _close(np.maximum(u, 0.5).allgather(), np.maximum(g, 0.5), dtype)
        ok &= _close(np.where(u > 0, u, v).allgather(), np.where(g > 0, g, h), dtype)
        ok &= _close(np.clip(u, -1, 2).allgather(), np.clip(g, -1, 2), dtype)
    # broadcasting against the global shape: a NumPy array along the last axis
    w = np.arange(d.shape[-1], dtype="f8") + 1
    ok &= _close((u * w).allgather(), g * w, "f8")
    # out= in place, halos marked stale
    u.exchange_halos()
    before = u.data
    np.multiply(u, 2, out=u)
    ok &= u.data is before and u.stale_halos and _close(u.allgather(), g * 2, dtype)
    u += v
    ok &= u.data is before and _close(u.allgather(), g * 2 + h, dtype)
    q, r = np.divmod(u, 3) if np.dtype(dtype).kind != "c" else (u, u)
    if np.dtype(dtype).kind != "c":
        rq, rr = np.divmod(g * 2 + h, 3)
        ok &= _close(q.allgather(), rq, dtype) and _close(r.allgather(), rr, dtype)
    assert_all(comm, bool(ok), f"{d} {dtype}")
    d.free()


@pytest.mark.mpi
def test_mixing_layouts_and_unsupported_calls_fail_everywhere(comm):
    a = CartDecomp((6, 8), comm)
    dims = a.dims[::-1]
    b = CartDecomp((6, 8), comm, dims=dims)
    u, v = DistArray.zeros(a), DistArray.zeros(b)
    ok = True
    if a.dims != b.dims:
        with pytest.raises(ValueError, match="different decompositions"):
            u + v
    w = DistArray.zeros(CartDecomp((6, 9), comm))
    with pytest.raises(ValueError, match="different decompositions"):
        u * w
    with pytest.raises(ValueError, match="does not broadcast"):
        u + np.ones(7)
    with pytest.raises(TypeError, match="not implemented for DistArray"):
        np.fft.fft(u)
    with pytest.raises(TypeError, match="distributed"):
        np.asarray(u)
    with pytest.raises(TypeError, match="not supported"):
        np.add.accumulate(u)
    with pytest.raises(TypeError, match="not supported"):
        u @ u
    with pytest.raises(ValueError, match="ambiguous"):
        bool(u > 0)
    with pytest.raises(TypeError, match="cannot hold"):
        (u > 0) + np.uint8(1)  # uint8 result
    assert_all(comm, ok)
    for x in (a, b):
        x.free()


# -- reductions --------------------------------------------------------------------------------


@pytest.mark.mpi
@settings(max_examples=25)
@given(data=st.data())
def test_reductions_equal_numpy_on_the_gathered_array(comm, data):
    d = _decomp(data, comm.size)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    u, g = _field(d, dtype, 3)
    ndim = len(d.shape)
    axes = [None, *range(ndim), *(((0, ndim - 1),) if ndim > 1 else ())]
    axis = data.draw(st.sampled_from(axes), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    ok = True
    msg = ""
    for kind in ("sum", "mean", "var", "std", "min", "max", "prod", "any", "all"):
        arg = u if kind not in ("any", "all") else u > 0
        ref_arg = g if kind not in ("any", "all") else g > 0
        if kind == "prod":
            arg, ref_arg = np.sign(u) if np.dtype(dtype).kind != "c" else u / abs(u), None
            ref_arg = np.sign(g) if np.dtype(dtype).kind != "c" else g / abs(g)
        if kind in ("min", "max") and np.dtype(dtype).kind == "c":
            continue
        got = getattr(np, kind)(arg, axis=axis, keepdims=keepdims)
        want = getattr(np, kind)(ref_arg, axis=axis, keepdims=keepdims)
        kept = ndim - (ndim if axis is None else len(np.atleast_1d(axis)))
        if kept >= 2:
            good = isinstance(got, DistArray) and got.shape == want.shape
            good = good and _close(got.allgather(), want, dtype)
        else:
            good = isinstance(got, (np.ndarray, np.generic)) and np.shape(got) == np.shape(want)
            good = good and _close(got, want, dtype) and np.asarray(got).dtype == np.asarray(want).dtype
        if not good:
            msg += f" {kind}(axis={axis}, keepdims={keepdims}): {got!r} vs {want!r};"
        ok &= bool(good)
    # methods are the same reductions
    ok &= _close(u.sum(axis=axis) if axis is None else 0, g.sum() if axis is None else 0, dtype)
    assert_all(comm, ok, f"{d} {dtype}{msg}")
    d.free()


@pytest.mark.mpi
def test_nan_propagates_like_numpy(comm):
    d = CartDecomp((9, 4), comm)
    u = DistArray.from_global(d, lambda i, j: 1.0 * i + j)
    u[7, 2] = np.nan
    g = u.allgather()
    ok = np.isnan(u.max()) and np.isnan(u.mean()) and np.isnan(np.std(u))
    ok &= np.array_equal(u.max(axis=0), g.max(axis=0), equal_nan=True)
    ok &= np.array_equal(np.min(u, axis=1), g.min(axis=1), equal_nan=True)
    assert_all(comm, bool(ok))
    d.free()


@pytest.mark.mpi
def test_reduced_decomposition_is_replicated_over_reduced_axes(comm):
    d = CartDecomp((6, 7, 5), comm)
    u = DistArray.from_global(d, lambda i, j, k: i + 10.0 * j + 100.0 * k)
    s = u.sum(axis=0)
    g = u.allgather()
    ok = isinstance(s, DistArray) and s.shape == (7, 5)
    ok &= s.decomp.dims == (d.dims[1], d.dims[2])
    ok &= np.allclose(s.allgather(), g.sum(axis=0))
    # element-wise arithmetic on the reduced array and a second reduction
    ok &= np.isclose((s / 6).mean(), g.mean())
    assert_all(comm, bool(ok))
    d.free()


# -- global indexing ----------------------------------------------------------------------------


def _key(data, shape):
    items = []
    for n in shape:
        kind = data.draw(st.sampled_from(["int", "slice", "all"]))
        if kind == "int":
            items.append(data.draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = data.draw(st.one_of(st.none(), st.integers(-n - 2, n + 2)))
            stop = data.draw(st.one_of(st.none(), st.integers(-n - 2, n + 2)))
            step = data.draw(st.one_of(st.none(), st.sampled_from([1, 2, 3, -1, -2])))
            items.append(slice(start, stop, step))
        else:
            items.append(slice(None))
    if data.draw(st.booleans()):
        items.insert(data.draw(st.integers(0, len(items))), None)
    if len(items) > 1 and data.draw(st.booleans()):
        items = [Ellipsis, *items[-1:]] if items[-1] is not None else [*items[:1], Ellipsis]
    return tuple(items)


@pytest.mark.mpi
@settings(max_examples=40)
@given(data=st.data())
def test_global_get_and_set_equal_numpy_indexing(comm, data):
    d = _decomp(data, comm.size)
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    u, g = _field(d, dtype, 4)
    key = _key(data, d.shape)
    got = u[key]
    want = g[key]
    ok = np.shape(got) == np.shape(want) and np.array_equal(got, want)
    ok &= type(got) is type(want) if np.ndim(want) == 0 else isinstance(got, np.ndarray)
    value = data.draw(st.sampled_from(["scalar", "array"]), label="value")
    new = np.asarray(7, dtype=dtype) if value == "scalar" else (np.arange(np.size(want)).reshape(np.shape(want)) + 1)
    u[key] = new
    g[key] = new
    ok &= np.array_equal(u.allgather(), g) and u.stale_halos
    assert_all(comm, bool(ok), f"{d} key={key}")
    d.free()


@pytest.mark.mpi
def test_indexing_errors_match_numpy_on_every_rank(comm):
    d = CartDecomp((5, 4), comm)
    u = DistArray.zeros(d)
    with pytest.raises(IndexError, match="out of bounds"):
        u[5, 0]
    with pytest.raises(IndexError, match="too many indices"):
        u[1, 2, 3]
    with pytest.raises(TypeError, match="basic indexing"):
        u[np.array([1, 2])]
    with pytest.raises(ValueError, match="broadcast"):
        u[1:3, :] = np.ones(3)
    assert_all(comm, True)
    d.free()


# -- redistribution -----------------------------------------------------------------------------


def _other_decomp(data, shape, comm, ndim):
    dims = [int(x) for x in MPI.Compute_dims(comm.size, ndim)]
    perm = data.draw(st.permutations(range(ndim)), label="dims permutation")
    dims = [dims[i] for i in perm]
    if any(n < p for n, p in zip(shape, dims)):
        dims = [1] * ndim
        dims[int(np.argmax(shape))] = comm.size
        if max(shape) < comm.size:
            return None
    halo = [data.draw(st.integers(0, min(2, n // p)), label="halo") for n, p in zip(shape, dims)]
    periodic = data.draw(st.booleans(), label="periodic")
    if data.draw(st.booleans(), label="explicit blocks"):
        sizes = []
        for n, p, h in zip(shape, dims, halo):
            cut = (
                []
                if p == 1
                else sorted(data.draw(st.lists(st.integers(1, n - 1), min_size=p - 1, max_size=p - 1, unique=True)))
            )
            s = np.diff([0, *cut, n]).tolist()
            if min(s) < h:
                s = [n // p + (1 if k < n % p else 0) for k in range(p)]
            sizes.append(s)
        if all(min(s) >= h for s, h in zip(sizes, halo)):
            return BlockDecomp(sizes, comm, periodic=periodic, halo=halo)
    return CartDecomp(shape, comm, dims=dims, periodic=periodic, halo=halo)


@pytest.mark.mpi
@settings(max_examples=30)
@given(data=st.data())
def test_redistribute_round_trips_exactly(comm, data):
    a = _decomp(data, comm.size)
    dtype = data.draw(st.sampled_from([*DTYPES, "bool"]), label="dtype")
    u, g = _field(a, "f8", 5)
    u = u.astype(dtype) if dtype != "bool" else u > 0
    g = g.astype(dtype) if dtype != "bool" else g > 0
    b = _other_decomp(data, a.shape, comm, len(a.shape))
    if b is None:
        a.free()
        return
    order = data.draw(st.sampled_from(["C", "F"]), label="order")
    v = u.redistribute(b, order=order)
    ok = v.decomp is b and v.data.flags[order + "_CONTIGUOUS"] and v.dtype == u.dtype and v.stale_halos
    ok &= np.array_equal(v.interior, g[b.slices])
    w = v.redistribute(a)
    ok &= np.array_equal(w.interior, u.interior)
    v.exchange_halos()  # the ghosts can be refreshed on the new layout
    assert_all(comm, bool(ok), f"{a} -> {b}")
    a.free()
    b.free()


@pytest.mark.mpi
def test_redistribute_rejects_other_shapes(comm):
    a = CartDecomp((8, 6), comm)
    with pytest.raises(ValueError, match="cannot redistribute"):
        DistArray.zeros(a).redistribute(CartDecomp((6, 8), comm))
    assert_all(comm, True)
    a.free()


# -- CuPy interiors (run by tests/gpu/run_device_checks.sh on a GPU machine) ----------------------


@pytest.mark.mpi
@pytest.mark.gpu
def test_cupy_arrays_take_the_same_paths(comm):
    import cupy

    d = CartDecomp((13, 9, 5), comm, periodic=(True, False, False))
    g = np.random.default_rng(7).standard_normal(d.shape)
    h = np.random.default_rng(8).standard_normal(d.shape)
    u = DistArray.from_global(d, g if comm.rank == 0 else None, xp=cupy)
    v = DistArray.from_global(d, h if comm.rank == 0 else None, xp=cupy)
    w = np.sqrt(u**2 + v**2)
    ref = np.sqrt(g**2 + h**2)
    ok = w.xp is cupy and np.allclose(w.allgather(), ref)
    ok &= np.isclose(w.mean(), ref.mean()) and np.isclose(np.std(w), ref.std())
    ok &= np.allclose(w.sum(axis=0).allgather(), ref.sum(axis=0)) and np.allclose(
        w.max(axis=(0, 2)), ref.max(axis=(0, 2))
    )
    ok &= np.array_equal(w[10:2:-3, 4], ref[10:2:-3, 4])
    w[1:4, ::2] = 0.5
    ref[1:4, ::2] = 0.5
    ok &= np.array_equal(w.allgather(), ref)
    other = CartDecomp(d.shape, comm, dims=d.dims[::-1] if len(set(d.dims)) > 1 else None, halo=0)
    moved = w.redistribute(other)
    ok &= moved.xp is cupy and np.array_equal(moved.allgather(), ref)
    assert_all(comm, bool(ok))
    d.free()
    other.free()
