"""The flux kernels' halo and cap shortcuts against the plain NumPy steps they replace.

``periodic_phi_fill`` and the ``wrap`` argument of the diffusion stage kernels fill the
phi halo of a block alone in phi (the CPU path skips the halo exchange); ``cap_sums``
forms the pole-cap values in one call; ``diff_sts_stages`` runs every stage of a
super-step in one call.  Each must give the same bits as the host code it stands for,
for any block shape, halo width and stage mode.  ``diag_partials``
(the history sums, with the exact solution as a map or formed per row from separable
factors) is checked against NumPy and ``math.fsum``; the WENO3 face flux (the grid's
coefficient rows and the kernel's rewritten weights) against section 4.4's formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hpcml.kernels.flux import (
    _weno_pt,
    cap_sums,
    diag_partials,
    diff_pole_terms,
    diff_scratch,
    diff_stage,
    diff_stage_var,
    diff_sts_stages,
    periodic_phi_fill,
    sequential_row_sums,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcml.apps.flux.diffusion import sts_coefficients
from hpcml.apps.flux.grid import WENO_COLS, SphereGrid

blocks = st.tuples(st.integers(1, 3), st.integers(3, 9), st.integers(2, 12), st.integers(1, 3), st.integers(0, 2**31))


def _numpy_fill(x: np.ndarray, r0: int, r1: int, h: int, nx: int) -> None:
    # the slice copies of hpcml.apps.flux.device._periodic_self_copy
    x[:, r0:r1, :h] = x[:, r0:r1, nx : nx + h]
    x[:, r0:r1, nx + h :] = x[:, r0:r1, h : 2 * h]


@settings(max_examples=40, deadline=None)
@given(blocks)
def test_periodic_phi_fill_equals_slice_copies(block):
    nr, ny, nx, h, seed = block
    nx = max(nx, h)
    x = np.random.default_rng(seed).standard_normal((nr, ny + 2 * h, nx + 2 * h))
    ref = x.copy()
    _numpy_fill(ref, h, h + ny, h, nx)
    periodic_phi_fill(x, h, h + ny, h, nx)
    assert np.array_equal(x, ref)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 50), st.booleans(), st.integers(0, 2**31))
def test_cap_sums_equal_host_sums(nr, ncol, both, seed):
    rng = np.random.default_rng(seed)
    terms = rng.standard_normal((2 * nr if both else nr, ncol)) * 10.0 ** rng.integers(-3, 4, ncol)
    fac_n, fac_s = rng.uniform(0.1, 3.0, 2)
    north, south = np.full(nr, np.nan), np.full(nr, np.nan)
    if both:
        cap_sums(terms, nr, fac_n, 1.0, north, fac_s, -1.0, south)
        sums = sequential_row_sums(terms)
        assert np.array_equal(north, sums[:nr] * fac_n)
        assert np.array_equal(south, -(sums[nr:] * fac_s))
    else:
        cap_sums(terms, nr, fac_s, -1.0, south, fac_s, -1.0, south)
        assert np.array_equal(south, -(sequential_row_sums(terms) * fac_s))
        assert np.isnan(north).all()


@settings(max_examples=30, deadline=None)
@given(blocks, st.sampled_from([0, 1, 2]), st.booleans())
def test_diffusion_stage_wrap_equals_stage_then_fill(block, mode, varying):
    nr, ny, nx, h, seed = block
    nx = max(nx, h)
    rng = np.random.default_rng(seed)
    shape = (nr, ny + 2 * h, nx + 2 * h)
    x, xm2, u0, y0 = (rng.standard_normal(shape) for _ in range(4))
    dcoef = rng.uniform(0.5, 2.0, nr)
    s2, c2, c4 = (rng.uniform(0.5, 2.0, shape[1]) for _ in range(3))
    b1, b5 = (rng.uniform(0.5, 2.0, shape[2]) for _ in range(2))
    lpn, lps = rng.standard_normal(nr), rng.standard_normal(nr)
    i0, i1, c0, c1 = h, h + ny, h, h + nx
    inorth, isouth = (i0, i1 - 1) if ny >= 2 else (-1, -1)
    coefs = (0.7, 0.2, 0.1, 0.05, 0.3)
    pf = rng.uniform(0.0, 1.0, (shape[1], shape[2] + 1))  # varying diffusivity: west faces (+ the last east)
    tf = rng.uniform(0.0, 1.0, (shape[1] + 1, shape[2]))  # north faces (+ the last south)
    outs = []
    for wrap in (0, h):
        out = np.zeros(shape)
        if varying:
            diff_stage_var(x, xm2, u0, y0, out, dcoef, pf, tf, s2, c2, c4, b1, b5, i0, i1, c0, c1, *coefs,
                           lpn, lps, inorth, isouth, mode, wrap, diff_scratch(nx))  # fmt: skip
        else:
            diff_stage(x, xm2, u0, y0, out, dcoef, s2, c2, c4, b1, b5, i0, i1, c0, c1, *coefs,
                       lpn, lps, inorth, isouth, mode, wrap)  # fmt: skip
        if wrap == 0:
            _numpy_fill(out, i0, i1, h, nx)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])


def _stages_one_by_one(w, y0, dcoef, geo, pole_n, pole_s, dp, fac_n, fac_s, box, coefs, nst, h):
    """Stages 2..nst as ``Diffusion.super_step`` runs them: cap terms, cap sums, stage, rotation."""
    i0, i1, c0, c1 = box
    mu, nu, mt, kap = coefs
    nr, nx = y0.shape[0], c1 - c0
    prev2 = prev1 = w[0]
    free = [w[1], w[2]]
    for j in range(2, nst + 1):
        out = free.pop()
        tn, ts = np.zeros((nr, nx)), np.zeros((nr, nx))
        diff_pole_terms(prev1, dcoef, pole_n, dp, i0, i0 + 1, c0, c1, tn)
        diff_pole_terms(prev1, dcoef, pole_s, dp, i1 - 2, i1 - 1, c0, c1, ts)
        ln, ls = np.zeros(nr), np.zeros(nr)
        cap_sums(np.concatenate([tn, ts]), nr, fac_n, 1.0, ln, fac_s, -1.0, ls)
        diff_stage(prev1, prev2, prev1, y0, out, dcoef, *geo, i0, i1, c0, c1, mu[j], nu[j], kap[j], mt[j], 0.0,
                   ln, ls, i0, i1 - 1, 2, h)  # fmt: skip
        if prev2 is not prev1:
            free.append(prev2)
        prev2, prev1 = prev1, out
    return prev1


@settings(max_examples=30, deadline=None)
@given(blocks, st.sampled_from([3, 5, 7, 9]), st.sampled_from(["rkl2", "rkg2"]), st.booleans(), st.integers(1, 4))
def test_sts_stages_in_one_call_equal_stage_by_stage(block, nst, method, parallel, shares):
    """Any ``shares``: whole realizations per share, the rest split by rows (1-3 realizations on 1-4 shares)."""
    nr, ny, nx, h, seed = block
    ny, nx = max(ny, 3), max(nx, h)
    rng = np.random.default_rng(seed)
    shape = (nr, ny + 2 * h, nx + 2 * h)
    dcoef = rng.uniform(0.5, 2.0, nr)
    geo = [rng.uniform(0.5, 2.0, shape[1]) for _ in range(3)] + [rng.uniform(0.5, 2.0, shape[2]) for _ in range(2)]
    pole_n, pole_s, dp = (rng.uniform(0.0, 1.0, shape[2]) for _ in range(3))
    fac_n, fac_s = rng.uniform(0.1, 3.0, 2)
    mu, nu, mt, gt = sts_coefficients(method, nst)
    nu[2] = 0.0
    coefs = (mu, nu, mt * 0.01, mt + gt)
    box = (h, h + ny, h, h + nx)
    common = (dcoef, geo, pole_n, pole_s, dp, fac_n, fac_s, box, coefs, nst, h)
    # the reference: the scaled adds of Diffusion.super_step, then the stages one by one
    tau, m1 = float(rng.uniform(0.1, 2.0)), float(mt[1])
    u0 = rng.standard_normal(shape)
    ly = rng.standard_normal(shape)  # L(u0) on entry
    y0 = ly * tau
    v1 = y0 * m1
    # stale values in the planes the stages write must not matter
    ref = [v1.copy(), rng.standard_normal(shape), rng.standard_normal(shape)]
    last = _stages_one_by_one(ref, y0, *common)
    last = last + u0
    got = [rng.standard_normal(shape) for _ in range(3)]
    yk = ly.copy()
    k = diff_sts_stages.parallel if parallel else diff_sts_stages.serial
    k(*got, yk, u0, dcoef, *geo, pole_n, pole_s, dp, fac_n, fac_s, *box, box[0], box[1] - 1, *coefs, nst, tau, m1, h,
      shares)  # fmt: skip
    assert np.array_equal(yk, y0)  # Y0 = tau L(u0), the whole ghosted plane
    owned = (slice(None), slice(h, h + ny), slice(None))  # rows the stages write (ghost columns included)
    assert np.array_equal(got[(4 - nst) % 3][owned], last[owned])


def _reference_partials(x, fex_r, wt, wp, cosw, sinw, sdip, cdip, cap, use_ex):
    """One realization's diagnostics from NumPy and ``math.fsum``: mins and the 11 exact sums."""
    f = x
    w = wt[:, None] * wp[None, :]
    fw = f * w
    pos, neg = np.maximum(fw, 0.0), np.minimum(fw, 0.0)
    north, south = cap[:, None] > 0, cap[:, None] < 0
    terms = [
        pos, neg, np.where(north, pos, 0.0), np.where(north, neg, 0.0), np.where(south, pos, 0.0),
        np.where(south, neg, 0.0), sdip[:, None] * f * wt[:, None] * cosw[None, :],
        sdip[:, None] * f * wt[:, None] * sinw[None, :], cdip[:, None] * fw,
        (f - fex_r) ** 2 if use_ex else np.zeros_like(f), np.abs(f) * np.abs(fex_r) if use_ex else f * f,
    ]  # fmt: skip
    sums = [(math.fsum(t.ravel()), math.fsum(np.abs(t).ravel())) for t in terms]
    mins = (f.min(), max(f.max(), np.finfo(np.float64).tiny), np.abs(f).min())
    return mins, sums


@settings(max_examples=40, deadline=None)
@given(blocks, st.sampled_from(["none", "map", "separable"]))
def test_diag_partials_match_numpy_reference(block, exact):
    """Every partial sum and extremum of the owned block against NumPy + ``math.fsum``, per realization.

    The exact solution comes as a map (``efac[r] * fex``), as separable row and
    column factors (``efac[r] * ex_rows[i] * ex_cols[c]``, formed per row by the
    kernel), or not at all; the row sums are scaled by the row weight after the sum.
    """
    nr, ny, nx, h, seed = block
    rng = np.random.default_rng(seed)
    NY, NX = ny + 2 * h, nx + 2 * h
    x = rng.standard_normal((nr, NY, NX)) * 100.0
    rows, cols = rng.standard_normal(NY) * 50.0, rng.standard_normal(NX)
    efac = rng.uniform(0.5, 1.5, nr)
    wt, wp, cosw, sinw, sdip, cdip = (rng.uniform(0.1, 1.0, n) for n in (NY, NX, NX, NX, NY, NY))
    cap = rng.integers(-1, 2, NY).astype(np.float64)
    outer = np.multiply(rows[:, None], cols[None, :])
    fex = np.zeros((NY, NX)) if exact != "map" else outer
    mins, sums = np.full((nr, 3), np.nan), np.full((nr, 11, 2), np.nan)
    i0, i1, c0, c1 = h, h + ny, h, h + nx
    diag_partials(
        x, fex, rows, cols, exact == "separable", efac, exact != "none", wt, wp, cosw, sinw, sdip, cdip, cap,
        i0, i1, c0, c1, mins, sums,
    )  # fmt: skip
    own = (slice(i0, i1), slice(c0, c1))
    for r in range(nr):
        want_mins, want_sums = _reference_partials(
            x[r][own], efac[r] * outer[own], wt[i0:i1], wp[c0:c1], cosw[c0:c1], sinw[c0:c1], sdip[i0:i1],
            cdip[i0:i1], cap[i0:i1], exact != "none",
        )  # fmt: skip
        np.testing.assert_array_equal(mins[r], want_mins)
        for q, (want, scale) in enumerate(want_sums):
            got = sums[r, q, 0] + sums[r, q, 1]
            assert abs(got - want) <= 1e-13 * scale, (r, q, got, want, scale)


def _weno_half_textbook(c, far, oth, al, bc, bo, d0, d1, eps):
    """One half of section 4.4 as written: q0, q1, beta, two weights, each normalised."""
    q0 = (1 + al) * c - al * far
    q1 = bc * c + bo * oth
    beta0 = 4 * (al * (c - far)) ** 2
    beta1 = 4 * (bo * (oth - c)) ** 2
    w0 = d0 / (eps + beta0) ** 2
    w1 = d1 / (eps + beta1) ** 2
    return w0 / (w0 + w1) * q0 + w1 / (w0 + w1) * q1


def _weno_face_textbook(g: list[float], co: dict[str, float]) -> float:
    """F_J = u- + u+ of section 4.4 (u+ from the left on G+, u- from the right on G-)."""
    gp_m2, gp_m1, gp_0, gm_m1, gm_0, gm_p1 = g
    up = _weno_half_textbook(
        gp_m1, gp_m2, gp_0, co["b_jm"], co["b_j0"], co["a_jm"], co["dP_jm"], co["dMC_jm"], co["eps_jm"]
    )
    um = _weno_half_textbook(
        gm_0, gm_p1, gm_m1, co["a_j0"], co["a_jm"], co["b_j0"], co["dM_j0"], co["dCP_j0"], co["eps_j0"]
    )
    return um + up


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=6, max_size=6),
    st.lists(st.floats(0.02, 0.98), min_size=4, max_size=4),
    st.lists(st.floats(0.05, 1.0), min_size=4, max_size=4),
    st.floats(1e-4, 0.2),
    st.floats(1e-4, 0.2),
)
def test_weno_face_flux_equals_the_spec_formula(g, ab, d, eps_m, eps_0):
    """The WENO3 table row (grid.WENO_COLS) and the kernel's face flux give section 4.4's value.

    The coefficients are drawn independently, as at the phi seam where HipFT's periodic
    copies make ``b_J + a_{J-1}`` differ from 1, so the rewritten ``q1 = k*c + u`` and the
    ``s1/(s1 + r*s0)`` weights are checked in general, not only on uniform grids.
    """
    co = {"a_jm": ab[0], "b_jm": ab[1], "a_j0": ab[2], "b_j0": ab[3], "dP_jm": d[0], "dMC_jm": d[1]}
    co.update(dM_j0=d[2], dCP_j0=d[3], eps_jm=eps_m, eps_j0=eps_0)
    c = {k: np.zeros(2) for k in ("a", "b", "dM", "dCP", "dP", "dMC")}
    c["a"][:] = co["a_jm"], co["a_j0"]
    c["b"][:] = co["b_jm"], co["b_j0"]
    c["dP"][0], c["dMC"][0], c["dM"][1], c["dCP"][1] = d
    c["dM"][0] = c["dCP"][0] = c["dP"][1] = c["dMC"][1] = np.nan  # not part of this face's row
    row = SphereGrid._weno_row(c, np.array([eps_m, eps_0]), 0, 1)
    assert len(row) == len(WENO_COLS)
    got = _weno_pt(*g, *row)
    want = _weno_face_textbook(g, co)
    # the two forms round differently: compare against the size of the terms summed
    scale = max(abs(x) for x in g)
    assert abs(got - want) <= 1e-13 * scale + 1e-300, (got, want)


def _reference_reductions(y, x, vt, vp, dt_i, st_i, dp_i, i0, i1, c0, c1):
    # the three reductions written out in NumPy: PTL maximum, PTL candidates, CFL rate
    xo, yo = x[:, i0:i1, c0:c1], y[:, i0:i1, c0:c1]
    mask = np.abs(xo) > 1e-14
    m = float(np.max(np.abs(yo)[mask])) if mask.any() else -1.0
    tau = np.finfo(np.float64).max
    for r, ii, cc in zip(*np.nonzero((np.abs(y[:, i0:i1, c0:c1]) == m) & mask)):
        i, c = ii + i0, cc + c0
        for di, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            du = x[r, i, c] - x[r, i + di, c + dc]
            df = y[r, i, c] - y[r, i + di, c + dc]
            if du * df < -1e-14:
                tau = min(tau, -du / df)
    rows = slice(i0, i1)
    kt = np.maximum(np.abs(vt[:, rows, c0:c1]), np.abs(vt[:, i0 + 1 : i1 + 1, c0:c1])) * dt_i[rows, None]
    kp = np.maximum(np.abs(vp[:, rows, c0:c1]), np.abs(vp[:, rows, c0 + 1 : c1 + 1]))
    kap = float(np.max(kt + kp * st_i[rows, None] * dp_i[None, c0:c1])) if i1 > i0 else 0.0
    return m, tau, kap


@settings(max_examples=40, deadline=None)
@given(blocks, st.booleans(), st.booleans())
def test_ptl_and_cfl_reductions_equal_numpy_serial_or_parallel(block, parallel, ties):
    """Per-row partial maxima/minima reduced after the loop: NumPy's value, with one thread or several."""
    from hpcml.kernels import flux
    from hpcml.kernels.flux import cfl_kappa, ptl_max, ptl_tau

    nr, ny, nx, h, seed = block
    rng = np.random.default_rng(seed)
    shape = (nr, ny + 2 * h, nx + 2 * h)
    x, y = rng.standard_normal(shape), rng.standard_normal(shape)
    if ties:  # several cells share the maximum, some next to a tiny x
        y[:, h, h] = 3.0
        y[0, h + ny - 1, h + nx - 1] = -3.0
        x[0, h, h] = 1e-15
    vt = rng.standard_normal((nr, shape[1] + 1, shape[2]))
    vp = rng.standard_normal((nr, shape[1], shape[2] + 1))
    dt_i, st_i, dp_i = rng.random(shape[1] + 1) + 0.5, rng.random(shape[1]) + 0.5, rng.random(shape[2] + 1) + 0.5
    i0, i1, c0, c1 = h, h + ny, h, h + nx
    pick = (lambda k: k.parallel) if parallel else (lambda k: k.serial)
    m, tau, kap = _reference_reductions(y, x, vt, vp, dt_i, st_i, dp_i, i0, i1, c0, c1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flux, "ptl_partials", pick(flux.ptl_partials))
        assert ptl_max(y, x, i0, i1, c0, c1) == m
        if m > 0:
            assert ptl_tau(y, x, m, i0, i1, c0, c1) == tau
    np.testing.assert_allclose(pick(cfl_kappa)(vt, vp, dt_i, st_i, dp_i, i0, i1, c0, c1), kap, rtol=1e-15)


@settings(max_examples=40, deadline=None)
@given(blocks, st.integers(0, 6), st.integers(0, 3), st.booleans())
def test_lf_speeds_and_rate_in_one_sweep_equal_the_two_kernels_and_numpy(block, j_first, inset, parallel):
    """``lf_alpha_kappa``: the LF speeds of ``lf_alpha`` (checked against NumPy's six-face
    window maxima, clamped near the poles) and the rate of ``cfl_kappa`` over interior
    rows ``ia..ib`` inside the owned ones, bit for bit, on one thread or several; with
    ``wrap`` the owned rows' phi halo as well."""
    from hpcml.kernels.flux import cfl_kappa, lf_alpha, lf_alpha_kappa

    nr, ny, nx, _, seed = block
    h = 3  # the window reaches three rows and columns beyond the owned ones
    rng = np.random.default_rng(seed)
    NY, NX = ny + 2 * h, nx + 2 * h
    vt = rng.standard_normal((nr, NY + 1, NX))
    vp = rng.standard_normal((nr, NY, NX + 1))
    i0, i1, c0, c1 = h, h + ny, h, h + nx
    jrow = np.arange(NY) - i0 + 1 + j_first  # global row of each local row (row 1: the north pole)
    nt = int(jrow[i1 - 1]) + (1 if j_first % 2 else 3)  # the south pole on or past the last owned row
    nrows = nt - 1
    ia, ib = min(i0 + inset, i1), max(i1 - inset, min(i0 + inset, i1))
    dt_i, st_i, dp_i = rng.random(NY + 1) + 0.5, rng.random(NY) + 0.5, rng.random(NX + 1) + 0.5
    pick = (lambda k: k.parallel) if parallel else (lambda k: k.serial)
    at1, ap1, at2, ap2 = (np.full((nr, NY, NX), np.nan) for _ in range(4))
    pick(lf_alpha)(vt, vp, at1, ap1, jrow, nt, nrows, i0, i1, c0, c1, 0)
    kap1 = pick(cfl_kappa)(vt, vp, dt_i, st_i, dp_i, ia, ib, c0, c1)
    kap2 = pick(lf_alpha_kappa)(vt, vp, at2, ap2, jrow, nt, nrows, i0, i1, c0, c1, 0, dt_i, st_i, dp_i, ia, ib)
    assert kap2 == kap1
    np.testing.assert_array_equal(at2, at1)
    np.testing.assert_array_equal(ap2, ap1)
    if nx >= h:  # the kernels fill the owned rows' phi halo (wrap) as the exchange's slice copies do
        at3, ap3, at4, ap4 = (np.full((nr, NY, NX), np.nan) for _ in range(4))
        pick(lf_alpha)(vt, vp, at3, ap3, jrow, nt, nrows, i0, i1, c0, c1, h)
        kap3 = pick(lf_alpha_kappa)(vt, vp, at4, ap4, jrow, nt, nrows, i0, i1, c0, c1, h, dt_i, st_i, dp_i, ia, ib)
        assert kap3 == kap1
        for a in (at1, ap1):
            _numpy_fill(a, i0, i1, h, nx)
        for got in (at3, at4):
            np.testing.assert_array_equal(got, at1)
        for got in (ap3, ap4):
            np.testing.assert_array_equal(got, ap1)
    for i in range(i0, i1):
        j = int(jrow[i])
        lo, hi = max(1, j - 2) - j, min(nt, j + 3) - j
        want_t = np.abs(vt[:, i + lo : i + hi + 1, c0:c1]).max(axis=1)
        np.testing.assert_array_equal(at1[:, i, c0:c1], want_t)
        win = np.stack([np.abs(vp[:, i, c0 + d : c1 + d]) for d in range(-2, 4)])
        want_p = win.max(axis=0) if 2 <= j <= nrows - 1 else np.zeros((nr, nx))
        np.testing.assert_array_equal(ap1[:, i, c0:c1], want_p)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300_000), st.sampled_from([(2.5, 0.0), (0.0, -1.5), (1.0, 1.0), (0.75, 3.0)]), st.booleans())
def test_scaled_add_gives_the_numpy_statements_bits(n, ab, parallel):
    from hpcml.kernels.flux import scaled_add

    from hpcml.apps.flux.device import numpy_scaled_add

    a, b = ab
    rng = np.random.default_rng(n)
    y, x = rng.standard_normal(n), rng.standard_normal(n)
    want = y.copy()
    numpy_scaled_add(want, a, x, b)
    (scaled_add.parallel if parallel else scaled_add.serial)(y, a, x, b)
    np.testing.assert_array_equal(y, want)
