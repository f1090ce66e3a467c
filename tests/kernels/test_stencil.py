"""Stencils on ghosted arrays against NumPy slicing references."""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
from hpcml.kernels.stencil import jacobi_step, laplacian, region_boxes
from hypothesis import given, settings
from hypothesis import strategies as st
from kernels_helpers import DTYPES, ghosted, tol


def shifted(u, halo, offsets):
    return u[tuple(slice(halo + o, s - halo + o) for s, o in zip(u.shape, offsets))].astype(np.float64)


def lap_reference(u, hs, halo, points):
    nd = u.ndim
    if points == 9:
        c = 1.0 / (6.0 * hs[0] ** 2)
        edges = sum(shifted(u, halo, o) for o in [(-1, 0), (1, 0), (0, -1), (0, 1)])
        corners = sum(shifted(u, halo, o) for o in [(-1, -1), (-1, 1), (1, -1), (1, 1)])
        return c * (4 * edges + corners - 20 * shifted(u, halo, (0, 0)))
    r = 0.0
    for d in range(nd):
        e = tuple(1 if a == d else 0 for a in range(nd))
        m = tuple(-x for x in e)
        r = r + (shifted(u, halo, e) - 2 * shifted(u, halo, (0,) * nd) + shifted(u, halo, m)) / hs[d] ** 2
    return r


def jacobi_reference(u, f, hs, halo):
    nd = u.ndim
    num = shifted(f, halo, (0,) * nd)
    for d in range(nd):
        e = tuple(1 if a == d else 0 for a in range(nd))
        m = tuple(-x for x in e)
        num = num + (shifted(u, halo, e) + shifted(u, halo, m)) / hs[d] ** 2
    return num / sum(2.0 / h**2 for h in hs)


def interior(a, halo):
    return a[tuple(slice(halo, s - halo) for s in a.shape)]


def ghost_mask(shape, halo):
    m = np.ones(shape, dtype=bool)
    m[tuple(slice(halo, s - halo) for s in shape)] = False
    return m


@st.composite
def stencil_case(draw):
    ndim = draw(st.sampled_from([2, 3]))
    dtype = draw(DTYPES)
    u, halo = draw(ghosted(ndim, dtype, 9 if ndim == 2 else 5))
    points = draw(st.sampled_from([None, 5, 9])) if ndim == 2 else draw(st.sampled_from([None, 7]))
    if points == 9:
        hs = (draw(st.sampled_from([1.0, 0.5, 0.3])),) * 2
    else:
        hs = tuple(draw(st.sampled_from([1.0, 0.5, 0.3, 2.0])) for _ in range(ndim))
    spacing = hs[0] if len(set(hs)) == 1 and draw(st.booleans()) else hs
    return u, halo, points, hs, spacing


@given(case=stencil_case(), region=st.sampled_from(["all", "interior", "boundary"]))
def test_laplacian_matches_reference(case, region):
    u, halo, points, hs, spacing = case
    out = np.full(u.shape, -777.0, dtype=u.dtype)
    got = laplacian(u, out, spacing, points=points, halo=halo, region=region)
    assert got is out
    ref = lap_reference(u, hs, halo, points)
    written = np.zeros(u.shape, dtype=bool)
    for lo, hi in region_boxes(u.shape, halo, region):
        written[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    assert np.all(out[~written] == -777.0)  # ghosts and the other region untouched
    scale = np.abs(ref) + sum(8.0 / h**2 for h in hs)
    err = np.abs(interior(out, halo).astype(np.float64) - ref)
    assert np.all((err <= tol(u.dtype) * scale) | ~interior(written, halo))


@given(case=stencil_case(), split=st.booleans())
def test_jacobi_matches_reference(case, split):
    u, halo, _, hs, spacing = case
    f = np.random.default_rng(3).standard_normal(u.shape).astype(u.dtype)
    out = np.full(u.shape, -777.0, dtype=u.dtype)
    if split:
        jacobi_step(u, f, out, spacing, halo=halo, region="interior")
        jacobi_step(u, f, out, spacing, halo=halo, region="boundary")
    else:
        jacobi_step(u, f, out, spacing, halo=halo)
    assert np.all(out[ghost_mask(u.shape, halo)] == -777.0)
    ref = jacobi_reference(u, f, hs, halo)
    np.testing.assert_allclose(interior(out, halo), ref, rtol=tol(u.dtype) * 10, atol=tol(u.dtype) * 10)


@pytest.mark.parametrize("shape", [(3, 3), (4, 7), (8, 9), (3, 4, 5), (6, 6, 6), (5, 1 + 2, 9)])
@pytest.mark.parametrize("halo", [1, 2])
def test_regions_partition_the_interior(shape, halo):
    shape = tuple(s + 2 * halo for s in shape)
    count = np.zeros(shape, dtype=int)
    inner = np.zeros(shape, dtype=bool)
    for region in ("interior", "boundary"):
        for lo, hi in region_boxes(shape, halo, region):
            count[tuple(slice(a, b) for a, b in zip(lo, hi))] += 1
            if region == "interior":
                inner[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    expect = ~ghost_mask(shape, halo)
    np.testing.assert_array_equal(count, expect.astype(int))  # union = all, no overlap
    # an "interior" cell's radius-1 stencil never reaches a ghost cell
    for idx in zip(*np.nonzero(inner)):
        for d, o in itertools.product(range(len(shape)), (-1, 1)):
            nb = list(idx)
            nb[d] += o
            assert expect[tuple(nb)]


def test_stencil_errors():
    u = np.zeros((6, 6))
    with pytest.raises(ValueError, match="overlap"):
        laplacian(u, u, 1.0)
    with pytest.raises(ValueError, match="equal spacing"):
        laplacian(u, np.zeros_like(u), (1.0, 0.5), points=9)
    with pytest.raises(ValueError, match="points"):
        laplacian(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), 1.0, points=9)
    with pytest.raises(ValueError, match="spacing"):
        laplacian(u, np.zeros_like(u), 0.0)
    with pytest.raises(ValueError, match="spacing has"):
        laplacian(u, np.zeros_like(u), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="same ghosted shape"):
        jacobi_step(u, np.zeros((6, 5)), np.zeros_like(u), 1.0)
    with pytest.raises(TypeError, match="dtype mismatch"):
        laplacian(u, np.zeros((6, 6), np.float32), 1.0)
    with pytest.raises(ValueError, match="region"):
        laplacian(u, np.zeros_like(u), 1.0, region="edges")
    with pytest.raises(ValueError, match="halo"):
        laplacian(u, np.zeros_like(u), 1.0, halo=0)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        laplacian(np.zeros(6), np.zeros(6), 1.0)


@pytest.mark.parametrize("region", ["all", "interior", "boundary"])
def test_blocked_3d_sweeps_match_reference(monkeypatch, region):
    """3-D sweeps cut into j tiles and i chunks (a tiny cache budget forces both) give the same cells."""
    from hpcml.kernels import stencil

    monkeypatch.setattr(stencil, "CACHE_BUDGET", 2048)
    monkeypatch.setattr(stencil, "_PLANS", {})  # no plan or call remembered with the usual budget
    monkeypatch.setattr(stencil, "_CALLS", {})
    rng = np.random.default_rng(11)
    u, f = rng.standard_normal((13, 17, 11)), rng.standard_normal((13, 17, 11))
    box = stencil.region_boxes(u.shape, 1, "all")[0]
    assert stencil._tiles_3d(box, 8, 1)[0] < 15  # several tiles
    hs = (1.0, 0.5, 2.0)
    out = np.full_like(u, 7.0)
    laplacian(u, out, hs, region=region)
    jac = np.full_like(u, 7.0)
    jacobi_step(u, f, jac, hs, region=region)
    mask = np.zeros(u.shape, bool)
    for lo, hi in region_boxes(u.shape, 1, region):
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    np.testing.assert_allclose(interior(out, 1)[interior(mask, 1)], lap_reference(u, hs, 1, 7)[interior(mask, 1)])
    np.testing.assert_allclose(interior(jac, 1)[interior(mask, 1)], jacobi_reference(u, f, hs, 1)[interior(mask, 1)])
    assert np.all(out[~mask] == 7.0) and np.all(jac[~mask] == 7.0)
    # i chunks inside each tile (what several threads get when tiles are few)
    direct = np.full_like(u, 7.0)
    stencil._lap7_cpu(u, direct, 1, 12, 1, 16, 1, 10, 1.0, 4.0, 0.25, -10.5, 4, 3, False, True)
    np.testing.assert_allclose(interior(direct, 1), lap_reference(u, hs, 1, 7), rtol=1e-12, atol=1e-12)


@given(case=stencil_case(), split=st.booleans())
def test_diffusion_step_matches_reference(case, split):
    from hpcml.kernels.stencil import diffusion_step

    u, halo, _, _, _ = case
    coefs = tuple(0.1 / (d + 1) for d in range(u.ndim))
    out = np.full_like(u, 3.0)
    if split:  # the two halves an overlapped step computes, before and after the exchange
        diffusion_step(u, out, coefs, halo=halo, region="interior")
        diffusion_step(u, out, coefs, halo=halo, region="boundary")
    else:
        diffusion_step(u, out, coefs, halo=halo)
    c = shifted(u, halo, (0,) * u.ndim)
    ref = c.copy()
    for d in range(u.ndim):
        e = tuple(1 if a == d else 0 for a in range(u.ndim))
        ref += coefs[d] * (shifted(u, halo, e) - 2 * c + shifted(u, halo, tuple(-x for x in e)))
    np.testing.assert_allclose(interior(out, halo), ref, rtol=tol(u.dtype), atol=tol(u.dtype))
    assert np.all(out[ghost_mask(u.shape, halo)] == 3.0)


def _fake_cache(root, level, kind, size, shared):
    d = root / f"index{level}{kind[0]}"
    d.mkdir()
    for name, text in (("level", str(level)), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (d / name).write_text(text + "\n")


def test_cache_budget_is_the_l2_plus_half_the_l3_share(tmp_path, monkeypatch):
    """The 3-D tile budget from sysfs: L2 + half of the L3 over the CPUs sharing it; 256 KiB without sysfs."""
    from hpcml.kernels import stencil

    _fake_cache(tmp_path, 1, "Data", "48K", "0")
    _fake_cache(tmp_path, 1, "Instruction", "32K", "0")
    _fake_cache(tmp_path, 2, "Unified", "1024K", "0")
    _fake_cache(tmp_path, 3, "Unified", "32768K", "0-1,4-5")
    assert stencil._cache_budget(str(tmp_path)) == (1 << 20) + (32 << 20) // 4 // 2
    assert stencil._cache_budget(str(tmp_path / "missing")) == 256 << 10
    # such a budget leaves a 320^3 sweep untiled; an L2-sized one cuts it into tiles
    box = ((1, 1, 1), (321, 321, 321))
    monkeypatch.setattr(stencil, "CACHE_BUDGET", stencil._cache_budget(str(tmp_path)))
    assert stencil._tiles_3d(box, 8, 1)[0] == 320
    monkeypatch.setattr(stencil, "CACHE_BUDGET", 256 << 10)
    assert stencil._tiles_3d(box, 8, 1)[0] < 40


_DEFECTS = (
    None, "1-D", "4-D", "int dtype", "big-endian", "out is u", "out views u", "read-only out", "out dtype",
    "out shape", "f dtype", "f shape", "f list", "halo 0", "halo bool", "halo np.int64", "halo float",
    "halo too wide", "backend cpu", "backend gpu", "backend nonsense",
)  # fmt: skip


@st.composite
def _call_arguments(draw):
    """Arguments of a stencil call: valid ones with at most one defect."""
    defect = draw(st.sampled_from(_DEFECTS))
    ndim = {"1-D": 1, "4-D": 4}.get(defect, draw(st.sampled_from([2, 3])))
    halo = draw(st.integers(1, 2))
    shape = tuple(draw(st.integers(2 * halo, 2 * halo + 3)) for _ in range(ndim))
    dtype = {"int dtype": np.int64, "big-endian": np.dtype(">f8")}.get(defect, draw(DTYPES))
    u = np.zeros(shape, dtype=dtype)
    out = np.zeros(shape, dtype=dtype)
    if defect == "out is u":
        out = u
    elif defect == "out views u":
        out = u[...]
    elif defect == "read-only out":
        out.flags.writeable = False
    elif defect == "out dtype":
        out = out.astype(np.float32 if out.dtype == np.float64 else np.float64)
    elif defect == "out shape":
        out = np.zeros((*shape[:-1], shape[-1] + 1), dtype=dtype)
    f = np.zeros(shape, dtype=dtype) if draw(st.booleans()) else None
    wrong_f = {
        "f dtype": np.zeros(shape, np.float16), "f shape": np.zeros((*shape[:-1], 1), dtype), "f list": u.tolist()
    }  # fmt: skip
    f = wrong_f.get(defect, f)
    halo = {
        "halo 0": 0, "halo bool": True, "halo np.int64": np.int64(halo), "halo float": float(halo),
        "halo too wide": max(shape),
    }.get(defect, halo)  # fmt: skip
    backend = {"backend cpu": "cpu", "backend gpu": "gpu", "backend nonsense": "nonsense"}.get(defect)
    return u, out, f, halo, backend


@settings(max_examples=300)
@given(_call_arguments())
def test_quick_argument_check_accepts_only_what_the_full_checks_accept(args):
    """The fast path of a stencil call's checks agrees with the full checks on NumPy arguments."""
    from hpcml.kernels import stencil

    try:
        full = stencil._check_grid_fully(*args)
    except (TypeError, ValueError):
        full = None
    quick = stencil._valid_host_grid(*args)
    if quick:
        assert full == ("cpu", args[0].dtype)
    _, _, f, halo, backend = args
    if full is not None and backend in (None, "cpu") and type(halo) is int and (f is None or type(f) is np.ndarray):
        assert quick  # the usual arguments never take the slow path
    assert (stencil._check_grid(*args) if full is not None else full) == full


def test_sweep_plans_are_remembered_per_layout_and_stay_right_for_new_arrays():
    """A second call on the same layout reuses the derived plan; new arrays of that layout give right values."""
    from hpcml.kernels import stencil

    rng = np.random.default_rng(5)
    u = rng.random((34, 40))
    first = laplacian(u, np.zeros_like(u), region="boundary").copy()
    boxes = stencil._boxes_of(u.shape, 1, "boundary")
    plan = stencil._cpu_plan("lap5", stencil._lap5_cpu, (u, np.zeros_like(u)), boxes)
    assert stencil._cpu_plan("lap5", stencil._lap5_cpu, (u, np.zeros_like(u)), boxes) is plan
    assert len(plan) == 1 and plan[0][2][1] == "segments"  # the frame's four slabs in one call
    v = rng.random(u.shape)
    out = laplacian(v, np.zeros_like(v), region="boundary")
    ref = np.zeros_like(v)
    ref[1:-1, 1:-1] = v[:-2, 1:-1] + v[2:, 1:-1] + v[1:-1, :-2] + v[1:-1, 2:] - 4 * v[1:-1, 1:-1]
    frame = np.zeros(u.shape, dtype=bool)
    frame[1:-1, 1:-1] = True
    frame[2:-2, 2:-2] = False
    np.testing.assert_allclose(out[frame], ref[frame], rtol=1e-12)
    assert not out[~frame].any()
    # an output buffer at an odd byte offset: same shape and strides, another layout (no streaming stores)
    raw = np.zeros(u.size * 8 + 8, dtype=np.uint8)
    odd = raw[1 : 1 + u.size * 8].view(np.float64).reshape(u.shape)
    assert not odd.flags.aligned
    np.testing.assert_array_equal(laplacian(u, odd, region="boundary"), first)


@settings(max_examples=60, deadline=None)
@given(
    case=stencil_case(),
    kind=st.sampled_from(["laplacian", "jacobi", "diffusion"]),
    per_box=st.booleans(),
    view=st.booleans(),
)
def test_boundary_in_one_call_has_the_bits_of_the_whole_sweep(case, kind, per_box, view):
    """The frame swept as one table of row segments (or box by box) writes what region="all" writes there.

    Interior plus boundary must equal the whole sweep bit for bit: the row-segment sweeps
    use the box sweeps' formulas term for term.  ``view``: the arrays are strided
    sub-blocks of larger ones.
    """
    from hpcml.kernels import _tuning, stencil
    from hpcml.kernels.stencil import diffusion_step

    u, halo, points, _, spacing = case
    if view:  # the same values in a sub-block of a larger array (rows not contiguous)
        big = np.zeros(tuple(s + 3 for s in u.shape), dtype=u.dtype)
        big[(slice(1, -2),) * u.ndim] = u
        u = big[(slice(1, -2),) * u.ndim]
    f = np.random.default_rng(4).standard_normal(u.shape).astype(u.dtype)

    def run(out, region):
        if kind == "laplacian":
            laplacian(u, out, spacing, points=points, halo=halo, region=region)
        elif kind == "jacobi":
            jacobi_step(u, f, out, spacing, halo=halo, region=region)
        else:
            diffusion_step(u, out, tuple(0.1 / (d + 1) for d in range(u.ndim)), halo=halo, region=region)

    whole = np.full(u.shape, 5.0, dtype=u.dtype)
    run(whole, "all")
    parts = np.full(u.shape, 5.0, dtype=u.dtype)
    saved = _tuning.MIN_BYTES
    try:
        if per_box:  # every box large enough to be timed: one call per box, as before
            _tuning.MIN_BYTES = 0
            stencil._PLANS.clear()  # plans and remembered calls made with the usual threshold
            stencil._CALLS.clear()
        run(parts, "interior")
        run(parts, "boundary")
    finally:
        _tuning.MIN_BYTES = saved
        stencil._PLANS.clear()
        stencil._CALLS.clear()
    np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("shape", [(9, 12), (6, 7, 8)])
def test_a_frame_of_small_slabs_is_one_call_and_large_slabs_keep_their_own(monkeypatch, shape):
    """``_cpu_plan``: the frame's 2*ndim slabs in one row-segment call, unless a slab is large enough to be timed."""
    from hpcml.kernels import _tuning, stencil

    u = np.random.default_rng(2).random(shape)
    work = (u, np.zeros_like(u))
    boxes = stencil._boxes_of(u.shape, 1, "boundary")
    name = "lap5" if u.ndim == 2 else "lap7"
    monkeypatch.setattr(stencil, "_PLANS", {})
    (entry,) = stencil._cpu_plan(name, stencil._lap5_cpu, work, boxes)
    _, (segs,), key, candidates, nbytes = entry
    assert (
        key[1] == "segments"
        and candidates == [()]
        and nbytes == 8 * sum(np.prod(np.subtract(hi, lo)) for lo, hi in boxes)
    )
    # every frame cell is in exactly one segment
    covered = np.zeros(shape, int)
    for *lead, a, b, step in segs:
        covered[(*lead, slice(a, b, step))] += 1
    assert (segs[:, -1] > 1).sum() == np.prod(np.subtract(shape, 4)[:-1])  # a middle row's two cells: one line
    frame = np.zeros(shape, int)
    for lo, hi in boxes:
        frame[tuple(slice(a, b) for a, b in zip(lo, hi))] += 1
    np.testing.assert_array_equal(covered, frame)
    assert frame.max() == 1
    monkeypatch.setattr(stencil, "_PLANS", {})
    monkeypatch.setattr(_tuning, "MIN_BYTES", 8 * 9)
    plan = stencil._cpu_plan(name, stencil._lap5_cpu, work, boxes)
    assert len(plan) == len(boxes) == 2 * u.ndim and all(e[0] is stencil._lap5_cpu for e in plan)


@settings(max_examples=40, deadline=None)
@given(
    case=stencil_case(),
    kind=st.sampled_from(["laplacian", "jacobi", "diffusion"]),
    region=st.sampled_from(["all", "interior", "boundary"]),
    order=st.sampled_from(["C", "F", "view"]),
)
def test_a_remembered_call_writes_what_the_full_path_writes(case, kind, region, order):
    """The second call of a signature runs the recorded kernel calls: same bits as the first, on new arrays."""
    from hpcml.kernels import stencil
    from hpcml.kernels.stencil import diffusion_step

    u0, halo, points, _, spacing = case

    def arrays(seed):
        rng = np.random.default_rng(seed)
        u, f = (rng.standard_normal(u0.shape).astype(u0.dtype) for _ in range(2))
        if order == "F":
            u, f = np.asfortranarray(u), np.asfortranarray(f)
        elif order == "view":  # sub-blocks of larger arrays
            big = np.zeros((2, *(s + 2 for s in u0.shape)), dtype=u0.dtype)
            big[(slice(None),) + (slice(1, -1),) * u0.ndim] = np.stack([u, f])
            u, f = big[(0,) + (slice(1, -1),) * u0.ndim], big[(1,) + (slice(1, -1),) * u0.ndim]
        out = np.full(u0.shape, 9.0, dtype=u0.dtype, order="F" if order == "F" else "C")
        return u, f, out

    def run(u, f, out):
        if kind == "laplacian":
            return laplacian(u, out, spacing, points=points, halo=halo, region=region)
        if kind == "jacobi":
            return jacobi_step(u, f, out, spacing, halo=halo, region=region)
        return diffusion_step(u, out, 0.05, halo=halo, region=region)

    stencil._CALLS.clear()
    first = run(*arrays(1)).copy()
    key = stencil._CALLS and next(iter(stencil._CALLS))
    u, f, out = arrays(1)
    assert run(u, f, out) is out
    np.testing.assert_array_equal(out, first)
    if key:  # remembered (a strided 3-D view runs on copies and is not)
        assert len(stencil._CALLS) == 1 and key[-1] == numba.get_num_threads()
    # what can change between two calls of one signature is still checked
    with pytest.raises(ValueError, match="overlap"):
        run(u, f, u)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        run(u, f, out)


def test_remembered_calls_still_refuse_what_the_full_path_refuses():
    """halo=True after halo=1, and unhashable coefficients (taken, not remembered)."""
    from hpcml.kernels import stencil
    from hpcml.kernels.stencil import diffusion_step

    u = np.random.default_rng(0).random((10, 12))
    out = np.zeros_like(u)
    stencil._CALLS.clear()
    diffusion_step(u, out, 0.1)
    diffusion_step(u, out, 0.1)
    assert len(stencil._CALLS) == 1
    with pytest.raises(ValueError, match="halo"):
        diffusion_step(u, out, 0.1, halo=True)
    listed = np.zeros_like(u)
    diffusion_step(u, listed, [0.1, 0.1])
    np.testing.assert_array_equal(listed, out)
    assert len(stencil._CALLS) == 1
