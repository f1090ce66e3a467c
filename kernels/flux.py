"""Node-local kernels of the surface flux-transport solver (HipFT numerics), no MPI.

Every kernel works on one rank's ghosted block of shape ``(nr, NY, NX)``
(realizations, theta rows, phi columns), C order, float64.  Index arguments
``i0, i1`` (rows) and ``c0, c1`` (columns) bound the owned cells in local
ghosted coordinates; per-row and per-column geometry arrays are already sliced
to the block (length ``NY`` / ``NX``).  Pole rows are passed as local row
indices (``-1`` when this block does not hold that pole); their values come from
row sums the caller reduces across ranks (see ``hpcml.apps.flux.layout``).

Per-point arithmetic never depends on the block bounds or the thread count, so
any decomposition gives the same bits.  No ``fastmath``: contraction into FMAs
would differ between vectorised and remainder loops.  Where a fused multiply-add
pays (the WENO3 faces) it is written out as ``_intrinsics.fma`` (``llvm.fma``), which is
fused in every loop version alike.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from hpcml.jit import kernel

from ._intrinsics import bits_f64 as _bits_f64
from ._intrinsics import f64_bits as _f64_bits
from ._intrinsics import fma as _fma

__all__ = [
    "adv_pole_terms",
    "advect_scratch",
    "advect_stage",
    "advect_step",
    "cap_sums",
    "cfl_kappa",
    "diag_accumulate",
    "diag_partials",
    "diff_pole_terms",
    "diff_scratch",
    "diff_stage",
    "diff_stage_var",
    "diff_sts_stages",
    "flow_fill",
    "flux_rescale",
    "gaussian_factors",
    "lf_alpha",
    "lf_alpha_kappa",
    "periodic_phi_fill",
    "ptl_max",
    "ptl_partials",
    "ptl_tau",
    "row_chunks",
    "scaled_add",
    "sequential_row_sums",
]

_TINY = float(np.finfo(np.float64).tiny)
_HUGE = float(np.finfo(np.float64).max)


def row_chunks(nrow: int) -> int:
    """Row chunks per realization: enough to feed every thread, few enough to reuse faces."""
    return max(1, min(nrow, 2 * numba.get_num_threads()))


def advect_scratch(nx: int) -> np.ndarray:
    """Per-thread work rows of :func:`advect_stage`: ``(threads, 13, nx + 4)`` (tens of KiB each)."""
    return np.zeros((numba.config.NUMBA_NUM_THREADS, 13, nx + 4))


def diff_scratch(nx: int) -> np.ndarray:
    """Per-thread coefficient rows of :func:`diff_stage_var`: ``(threads, 4, nx)``."""
    return np.zeros((numba.config.NUMBA_NUM_THREADS, 4, nx))


@njit(cache=True, error_model="numpy")
def sequential_row_sums(terms: np.ndarray) -> np.ndarray:
    """Sum each row of ``terms`` left to right (HipFT's loop order, not pairwise)."""
    n, m = terms.shape
    out = np.zeros(n)
    for r in range(n):
        s = 0.0
        for k in range(m):
            s += terms[r, k]
        out[r] = s
    return out


@njit(cache=True, error_model="numpy")
def cap_sums(terms, na, fac_a, sign_a, out_a, fac_b, sign_b, out_b):
    """Row sums of ``terms`` in column order: row ``r < na`` -> ``out_a[r] = sign_a (s fac_a)``, the rest: ``out_b``.

    The CPU twin of :func:`hpcml.kernels.flux_cuda.cap_sums` for a pole row held by one
    rank: the same bits as :func:`sequential_row_sums` scaled on the host, in one call
    (the host path's temporaries and Python cost about 60 us per stage).
    """
    for row in range(terms.shape[0]):
        s = 0.0
        for k in range(terms.shape[1]):
            s += terms[row, k]
        if row < na:
            out_a[row] = sign_a * (s * fac_a)
        else:
            out_b[row - na] = sign_b * (s * fac_b)


@njit(cache=True)
def periodic_phi_fill(x, r0, r1, h, nx):
    """Fill the ``h`` phi ghost columns of rows ``r0:r1`` from the opposite edge (a block alone in phi).

    The same copies as two NumPy slice assignments, without NumPy's per-row iterator
    cost on a 2-column-wide strided view (40 us against 10 us for a 4 x 180 x 360 block).
    """
    for r in range(x.shape[0]):
        for i in range(r0, r1):
            _wrap_row(x[r], i, h, h + nx, h)


@njit(cache=True, inline="always")
def _wrap_row(out, i, c0, c1, h):  # pragma: no cover - compiled
    # The h phi ghosts on each side of row i from the opposite edge (c0 == h).  The
    # diffusion stage kernels call it right after writing a row, while the row is
    # still in L1 (a separate fill missed the cache on every row: about 50 us per
    # stage of a 4 x 180 x 360 block).
    for c in range(h):
        out[i, c0 - h + c] = out[i, c1 - h + c]
        out[i, c1 + c] = out[i, c0 + c]


# ---------------------------------------------------------------------------------------
# advection
# ---------------------------------------------------------------------------------------
@njit(cache=True, inline="always", error_model="numpy")
def _upwind(v, f_here, f_before, upwind):
    """First-order upwind flux ``v * (...)`` with HipFT's ``sign(upwind, v)``."""
    c = abs(upwind) if v >= 0.0 else -abs(upwind)
    return v * 0.5 * ((1.0 - c) * f_here + (1.0 + c) * f_before)


@njit(cache=True, inline="always", error_model="numpy")
def _weno_row(g0, g1, g2, h1, h2, h3, out, n, b_m, a_m, r_p, e_m, a_0, b_0, r_m, e_0, k_):
    """WENO3 fluxes of one theta face row from split-flux rows (scalar coefficients)."""
    for k in range(n):
        out[k] = _weno_pt(g0[k], g1[k], g2[k], h1[k], h2[k], h3[k], b_m, a_m, r_p, e_m, a_0, b_0, r_m, e_0, k_)


@njit(cache=True, inline="always", error_model="numpy")
def _weno_side(c, far, oth, al, bo, k, r, e4):
    """One upwind-biased half of a WENO3 face flux (section 4.4 of the spec).

    ``c`` is the split flux of the upwind cell, ``far`` the one beyond it and
    ``oth`` the one across the face; the coefficients are a row of
    :data:`hpcml.apps.flux.grid.WENO_COLS`.  With ``v = al*(c - far)`` and
    ``u = bo*(oth - c)`` the candidates are ``q0 = c + v`` and ``q1 = k*c + u``, and
    the normalised weights ``w0/(w0+w1)`` (``w = d/(eps+beta)^2``, ``beta = 4v^2``
    or ``4u^2``) are ``s1/(s1 + r*s0)`` with ``s = (v^2 + eps/4)^2``: one division
    and ten multiplications (four fused with an addition), where the textbook form
    takes four divisions and sixteen multiplications.  Only the rounding changes,
    identically for every decomposition.
    """
    v = al * (c - far)
    u = bo * (oth - c)
    q0 = c + v
    q1 = _fma(k, c, u)
    s0 = _fma(v, v, e4)
    s0 = s0 * s0
    s1 = _fma(u, u, e4)
    s1 = s1 * s1
    w1 = r * s0
    return _fma(s1, q0, w1 * q1) / (s1 + w1)


@njit(cache=True, inline="always", error_model="numpy")
def _weno_pt(gp_m2, gp_m1, gp_0, gm_m1, gm_0, gm_p1, b_m, a_m, r_p, e_m, a_0, b_0, r_m, e_0, k):
    """WENO3 flux at one face: the G+ part from the left plus the G- part from the right."""
    up = _weno_side(gp_m1, gp_m2, gp_0, b_m, a_m, k, r_p, e_m)
    um = _weno_side(gm_0, gm_p1, gm_m1, a_0, b_0, k, r_m, e_0)
    return um + up


@njit(cache=True, inline="always", error_model="numpy")
def _split_row(x, v, al, gp, gm, r, rf, i, c0, c1, nx):
    """Theta split fluxes G+ / G- of row ``i`` (owned columns) into ``gp`` / ``gm`` (flow ``rf``)."""
    xr = x[r, i, c0:c1]
    v0 = v[rf, i, c0:c1]
    v1 = v[rf, i + 1, c0:c1]
    a = al[rf, i, c0:c1]
    for k in range(nx):
        gp[k] = 0.5 * xr[k] * (v0[k] + a[k])
        gm[k] = 0.5 * xr[k] * (v1[k] - a[k])


@njit(cache=True, inline="always", error_model="numpy")
def _theta_faces(x, vt, gp, gm, q, kq, wt, fr, r, rf, c0, c1, nx, upwind):
    """Theta fluxes of face row ``q`` into ``fr``; ``gp``/``gm`` hold rows q-2..q+1 in a ring of 4."""
    if kq == 2:
        _weno_row(
            gp[(q - 2) % 4], gp[(q - 1) % 4], gp[q % 4], gm[(q - 1) % 4], gm[q % 4], gm[(q + 1) % 4], fr, nx,
            wt[q, 0], wt[q, 1], wt[q, 2], wt[q, 3], wt[q, 4], wt[q, 5], wt[q, 6], wt[q, 7], wt[q, 8],
        )  # fmt: skip
    elif kq == 1:
        vr = vt[rf, q, c0:c1]
        xh = x[r, q, c0:c1]
        xb = x[r, q - 1, c0:c1]
        for k in range(nx):
            fr[k] = _upwind(vr[k], xh[k], xb[k], upwind)
    else:
        for k in range(nx):
            fr[k] = 0.0


@kernel(cache=True, error_model="numpy")
def advect_stage(
    x, f0, out, vt, vp, at, ap, kind_t, wt, weno_p, wpt, sth, st_i, dt_i, dp_i,
    i0, i1, c0, c1, a, b, cdt, upwind, apole_n, apole_s, inorth, isouth, wrap, nch, scratch,
):  # fmt: skip
    """One explicit stage ``out = a*f0 + b*x - cdt*A(x)`` on the owned cells.

    ``A`` is the flux-form divergence of section 4 of the spec: theta faces by
    ``kind_t`` per local face row (0 unused, 1 upwind, 2 WENO3 with the per-row
    table ``wt``), phi faces WENO3 (transposed per-column table ``wpt``, shape
    ``(9, NX)``; both tables hold ``grid.WENO_COLS``) when ``weno_p`` else upwind.
    Pole rows take the cap values ``apole_n[r]`` / ``apole_s[r]`` computed by the
    caller.  The flows hold one realization each or one shared by all
    (``vt.shape[0] == 1``): realization ``r`` reads flow ``min(r, vt.shape[0] - 1)``.

    ``wrap > 0`` (a block alone in phi, ``c0 == wrap``): each row's ``wrap`` phi ghosts
    on both sides are filled from the opposite edge right after the row is written,
    while it is in L1, instead of by a halo exchange after the stage.

    Work is split into ``nch`` row chunks per realization (see :func:`row_chunks`).
    A chunk sweeps its rows keeping the theta split fluxes of four rows in a ring,
    so every split flux and every theta face is computed once and the working set
    stays in L1/L2; ``scratch`` (:func:`advect_scratch`) holds each thread's rows.
    All inner loops are unit-stride with zero-based counters, so they vectorise.
    """
    nr = x.shape[0]
    # argument groups as tuples: a call with more than 30 arguments compiles to f(*args), which
    # Numba cannot inline
    flows = (vt, vp, at, ap)
    geo = (kind_t, wt, weno_p, wpt, sth, st_i, dt_i, dp_i)
    box = (i0, i1, c0, c1, wrap, nch)
    poles = (apole_n, apole_s, inorth, isouth)
    for task in prange(nr * nch):
        _advect_chunk(x, f0, out, flows, geo, box, (a, b, cdt, upwind), poles, scratch[numba.get_thread_id()],
                      task // nch, task % nch)  # fmt: skip


@njit(cache=True, inline="always", error_model="numpy")
def _advect_chunk(x, f0, out, flows, geo, box, coef, poles, sc, r, ch):  # pragma: no cover - compiled
    """Row chunk ``ch`` of realization ``r`` of :func:`advect_stage` (``sc``: this thread's scratch rows).

    ``flows = (vt, vp, at, ap)``, ``geo = (kind_t, wt, weno_p, wpt, sth, st_i, dt_i, dp_i)``,
    ``box = (i0, i1, c0, c1, wrap, nch)``, ``coef = (a, b, cdt, upwind)``,
    ``poles = (apole_n, apole_s, inorth, isouth)``: :func:`advect_stage`'s arguments.
    """
    vt, vp, at, ap = flows
    kind_t, wt, weno_p, wpt, sth, st_i, dt_i, dp_i = geo
    i0, i1, c0, c1, wrap, nch = box
    a, b, cdt, upwind = coef
    apole_n, apole_s, inorth, isouth = poles
    nx = c1 - c0
    nrow = i1 - i0
    rf = min(r, vt.shape[0] - 1)
    ra = i0 + (nrow * ch) // nch
    rb = i0 + (nrow * (ch + 1)) // nch
    gp = sc[0:4]
    gm = sc[4:8]
    fn = sc[8]
    fs = sc[9]
    gpp = sc[10]  # phi G+ on columns c0-2..c1+1
    gmp = sc[11]
    fp = sc[12]  # phi fluxes on faces c0..c1
    for m in range(ra - 2, ra + 2):
        _split_row(x, vt, at, gp[m % 4], gm[m % 4], r, rf, m, c0, c1, nx)
    _theta_faces(x, vt, gp, gm, ra, kind_t[ra], wt, fn, r, rf, c0, c1, nx, upwind)
    for i in range(ra, rb):
        _split_row(x, vt, at, gp[(i + 2) % 4], gm[(i + 2) % 4], r, rf, i + 2, c0, c1, nx)
        _theta_faces(x, vt, gp, gm, i + 1, kind_t[i + 1], wt, fs, r, rf, c0, c1, nx, upwind)
        orow = out[r, i, c0:c1]
        frow = f0[r, i, c0:c1]
        xrow = x[r, i, c0:c1]
        if i == inorth or i == isouth:  # noqa: PLR1714 - Numba-friendly
            ap_ = apole_n[r] if i == inorth else apole_s[r]
            for k in range(nx):
                orow[k] = a * frow[k] + b * xrow[k] - cdt * ap_
        else:
            if weno_p:
                xw = x[r, i, c0 - 2 : c1 + 2]
                v0 = vp[rf, i, c0 - 2 : c1 + 2]
                v1 = vp[rf, i, c0 - 1 : c1 + 3]
                al = ap[rf, i, c0 - 2 : c1 + 2]
                for k in range(nx + 4):
                    gpp[k] = 0.5 * xw[k] * (v0[k] + al[k])
                    gmp[k] = 0.5 * xw[k] * (v1[k] - al[k])
                # 1-D row views keep every load unit-stride (a 2-D column slice does not vectorise)
                w0 = wpt[0, c0 : c1 + 1]
                w1 = wpt[1, c0 : c1 + 1]
                w2 = wpt[2, c0 : c1 + 1]
                w3 = wpt[3, c0 : c1 + 1]
                w4 = wpt[4, c0 : c1 + 1]
                w5 = wpt[5, c0 : c1 + 1]
                w6 = wpt[6, c0 : c1 + 1]
                w7 = wpt[7, c0 : c1 + 1]
                w8 = wpt[8, c0 : c1 + 1]
                for k in range(nx + 1):
                    fp[k] = _weno_pt(
                        gpp[k], gpp[k + 1], gpp[k + 2], gmp[k + 1], gmp[k + 2], gmp[k + 3],
                        w0[k], w1[k], w2[k], w3[k], w4[k], w5[k], w6[k], w7[k], w8[k],
                    )  # fmt: skip
            else:
                vr = vp[rf, i, c0 : c1 + 1]
                xh = x[r, i, c0 : c1 + 1]
                xb = x[r, i, c0 - 1 : c1]
                for k in range(nx + 1):
                    fp[k] = _upwind(vr[k], xh[k], xb[k], upwind)
            s_n = sth[i]
            s_s = sth[i + 1]
            sti = st_i[i]
            dti = dt_i[i]
            dpi = dp_i[c0:c1]
            if a == 0.0:  # 3 of the 4 SSPRK(4,3) stages: one stream less (same values)
                for k in range(nx):
                    div = (s_s * fs[k] - s_n * fn[k]) * sti * dti + (fp[k + 1] - fp[k]) * sti * dpi[k]
                    orow[k] = b * xrow[k] - cdt * div
            else:
                for k in range(nx):
                    div = (s_s * fs[k] - s_n * fn[k]) * sti * dti + (fp[k + 1] - fp[k]) * sti * dpi[k]
                    orow[k] = a * frow[k] + b * xrow[k] - cdt * div
        if wrap > 0:
            _wrap_row(out[r], i, c0, c1, wrap)
        fn, fs = fs, fn


@njit(cache=True, error_model="numpy")
def adv_pole_terms(x, vt, dp, q, c0, c1, upwind, out):
    """Upwind theta flux x ``dp`` at face row ``q`` (face 2 or N_t) for the cap sums."""
    for r in range(x.shape[0]):
        for c in range(c0, c1):
            out[r, c - c0] = _adv_cap_term(x, vt, dp, q, upwind, r, c)


@njit(cache=True, inline="always", error_model="numpy")
def _adv_cap_term(x, vt, dp, q, upwind, r, c):  # pragma: no cover - compiled
    # One column's term of a cap sum; flow min(r, nflows - 1): one shared by every realization, or one each.
    return _upwind(vt[min(r, vt.shape[0] - 1), q, c], x[r, q, c], x[r, q - 1, c], upwind) * dp[c]


@njit(cache=True, inline="always", error_model="numpy")
def _adv_cap(x, vt, dp, q, c0, c1, upwind, r):  # pragma: no cover - compiled
    """Row sum of :func:`adv_pole_terms` for realization ``r``, in column order (the bits of ``cap_sums``)."""
    s = 0.0
    for c in range(c0, c1):
        s += _adv_cap_term(x, vt, dp, q, upwind, r, c)
    return s


@kernel(cache=True, error_model="numpy")
def advect_step(
    f, b1, b2, vt, vp, at, ap, kind_t, wt, weno_p, wpt, sth, st_i, dt_i, dp_i, dp, i0, i1, c0, c1, upwind,
    inorth, isouth, fac_n, fac_s, wrap, nch, scratch, src, base, dst, ca, cb, cc, bounds, cap_n, cap_s,
):  # fmt: skip
    """Every stage of one advection step on a block holding whole realizations, in one call.

    Stage ``s`` is :func:`advect_stage` with ``x = bufs[src[s]]``, ``f0 = bufs[base[s]]``,
    ``out = bufs[dst[s]]`` (``bufs = (f, b1, b2)``) and ``a, b, cdt = ca[s], cb[s],
    cc[s]``, its two cap values summed just before it as :func:`adv_pole_terms` +
    :func:`cap_sums` do (the same bits).  Realizations ``bounds[g]..bounds[g+1]-1`` take
    every stage before the next group starts, so a group's arrays stay in the cache;
    realizations do not interact within a step.  ``cap_n``/``cap_s`` (one slot per
    realization) receive the caps.  Needs both poles and every column in the block:
    ``wrap`` > 0 fills the phi halo as each row is written, and no stage needs an
    exchange.  On the 1cr case one step was 20 Python calls of ``advect_stage`` with
    two cap-term kernels and a cap sum each (about 25 us of Python a call, serial while
    the other threads wait).
    """
    bufs = (f, b1, b2)
    flows = (vt, vp, at, ap)
    geo = (kind_t, wt, weno_p, wpt, sth, st_i, dt_i, dp_i)
    box = (i0, i1, c0, c1, wrap, nch)
    poles = (cap_n, cap_s, inorth, isouth)
    for g in range(bounds.size - 1):
        g0 = bounds[g]
        g1 = bounds[g + 1]
        for st in range(src.size):
            x = bufs[src[st]]
            f0 = bufs[base[st]]
            out = bufs[dst[st]]
            for r in range(g0, g1):
                cap_n[r] = _adv_cap(x, vt, dp, inorth + 1, c0, c1, upwind, r) * fac_n
                cap_s[r] = -(_adv_cap(x, vt, dp, isouth, c0, c1, upwind, r) * fac_s)
            coef = (ca[st], cb[st], cc[st], upwind)
            for task in prange((g1 - g0) * nch):
                _advect_chunk(x, f0, out, flows, geo, box, coef, poles, scratch[numba.get_thread_id()],
                              g0 + task // nch, task % nch)  # fmt: skip


@njit(cache=True, inline="always", error_model="numpy")
def _max_bits(part):  # pragma: no cover - compiled
    # The largest bits of the non-negative doubles in ``part`` (0 if empty): a NaN wins.
    kbits = 0
    for q in range(part.size):
        kbits = max(kbits, _f64_bits(part[q]))
    return kbits


@njit(cache=True, inline="always", error_model="numpy")
def _kappa_row(vt, vp, dt_i, st_i, dpi, r, i, c0, c1):  # pragma: no cover - compiled
    """Largest advective rate of row ``i`` of realization ``r`` (owned columns)."""
    v0 = vt[r, i, c0:c1]
    v1 = vt[r, i + 1, c0:c1]
    w0 = vp[r, i, c0:c1]
    w1 = vp[r, i, c0 + 1 : c1 + 1]
    dti = dt_i[i]
    sti = st_i[i]
    kbits = 0  # +0.0: every rate is a sum of magnitudes, so the int64 maximum is the float one
    for k in range(c1 - c0):
        kap = max(abs(v0[k]), abs(v1[k])) * dti + max(abs(w0[k]), abs(w1[k])) * sti * dpi[k]
        kbits = max(kbits, _f64_bits(kap))
    return _bits_f64(kbits)


@kernel(cache=True, error_model="numpy")
def cfl_kappa(vt, vp, dt_i, st_i, dp_i, ia, ib, c0, c1):
    """Largest advective rate ``kappa`` over rows ``ia..ib-1`` (interior rows only).

    A maximum is order-independent, so each (realization, row) task keeps its own
    maximum (an int64 maximum of the rates' bits, which vectorises: Numba's float
    ``max`` did not, even with ``fastmath``, 0.8 ns a cell) and the tasks' maxima are
    reduced after the parallel loop: the same value for any thread count.  A NaN rate
    (a NaN flow) is the result: the float ``max`` ignored it, and the step came from
    the other cells.
    """
    nrow = max(ib - ia, 0)
    part = np.zeros(vt.shape[0] * nrow)
    dpi = dp_i[c0:c1]
    for task in prange(vt.shape[0] * nrow):
        part[task] = _kappa_row(vt, vp, dt_i, st_i, dpi, task // nrow, ia + task % nrow, c0, c1)
    return _bits_f64(_max_bits(part))


# ---------------------------------------------------------------------------------------
# flows
# ---------------------------------------------------------------------------------------
# exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln(2)/2 (Cody-Waite reduction, ln 2 in two parts)
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 to 32 bits: n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2^52: t + _SHIFT holds round(t) in its low mantissa bits
_SHIFT_BITS = int(np.array(_SHIFT).view(np.int64))
_EXP_MIN = -700.0  # exp(-700) ~ 1e-304: 2^n stays a normal number


@njit(cache=True, inline="always", error_model="numpy")
def _att_exp_row(f, ib, t, m):
    """``t[k] = exp(-2 |f[k]| ib)`` for ``k < m``, in one loop that vectorises (SIMD ``exp``).

    ``n = round(x / ln 2)`` is read from the low mantissa bits of ``x / ln 2 + _SHIFT``,
    which also become the exponent bits of ``2^n`` (bit casts, no conversion).
    ``exp(r)`` on ``|r| <= ln(2)/2`` is its Taylor polynomial to degree 13 (truncation
    below 1e-17) in Estrin's scheme (a short dependency chain) with every ``a*b + c`` one
    ``fma`` (rounded once, the same bits in vector and scalar code), summed onto 1 last:
    within 1 ulp of the correctly rounded ``exp`` (checked on a few million arguments),
    the same bits for every decomposition.  Arguments below ``_EXP_MIN`` give
    ``exp(_EXP_MIN)`` (an attenuation factor of 1e-304 instead of 0).  Scalar libm
    ``exp`` (and NumPy's, without AVX-512) costs about 10 ns a cell.  Measured on the
    Zen 3 VM, one thread, 5 x 182 x 363 cells: three loops (a first pass for ``2^n``
    through an int64 view, then the polynomial) with separate multiplies and adds 0.85
    ms, this loop with ``fma`` 0.61 ms.
    """
    for k in range(m):
        x = max(-2.0 * (abs(f[k]) * ib), _EXP_MIN)
        s = _fma(x, _LOG2E, _SHIFT)
        n = s - _SHIFT
        r = _fma(n, -_LN2_LO, _fma(n, -_LN2_HI, x))
        r2 = r * r
        r4 = r2 * r2
        q0 = _fma(r2, _fma(r, 1.0 / 6.0, 0.5), r)
        q1 = _fma(r2, _fma(r, 1.0 / 5040.0, 1.0 / 720.0), _fma(r, 1.0 / 120.0, 1.0 / 24.0))
        q2 = _fma(r2, _fma(r, 1.0 / 39916800.0, 1.0 / 3628800.0), _fma(r, 1.0 / 362880.0, 1.0 / 40320.0))
        q3 = _fma(r, 1.0 / 6227020800.0, 1.0 / 479001600.0)
        p = 1.0 + _fma(r4 * r4, _fma(r4, q3, q2), _fma(r4, q1, q0))
        t[k] = p * _bits_f64((_f64_bits(s) - _SHIFT_BITS + 1023) << 52)


@kernel(cache=True, error_model="numpy")
def flow_fill(
    vt, vp, vt_prof, vp_prof, vt_base, vp_base, has_base, f, inv_b0, th, attenuate, i0, i1, c0, c1, att_t_lo, att_t_hi,
    wrap,
):  # fmt: skip
    """Broadcast per-row velocity profiles and apply |B| attenuation on the owned cells.

    ``vt_prof[r, i]`` / ``vp_prof[r, i]`` hold the model flows on every local row; with
    ``has_base`` the longitude-dependent flows ``vt_base[i, c]`` / ``vp_base[i, c]`` (the
    same for every realization: flow files, tilted rigid rotation) are added.
    With ``attenuate``, a first pass writes ``th = exp(-2 |f| inv_b0[r])`` (``inv_b0 = 1/B0``)
    into the scratch block ``th`` on the cells the faces need (owned rows and the row
    above, owned columns and the one to the left), with the SIMD :func:`_att_exp_row`.
    Attenuation multiplies ``v_theta`` on owned face rows ``att_t_lo..att_t_hi-1`` (faces
    2..nt-1) and ``v_phi`` on owned rows by HipFT's ``1 - tanh(max|f| / B0)``, evaluated as
    ``2 e / (1 + e)`` with ``e = min(th)`` of the two cells sharing the face (``exp`` is
    monotone): one ``exp`` per cell instead of a ``tanh`` per face, and no cancellation
    where the flow is strongly attenuated.  It differs from HipFT's factor by rounding.

    ``wrap > 0`` (a block alone in phi, ``c0 == wrap``): each owned row's phi ghosts are
    filled from the opposite edge once the row is final, instead of by a halo exchange.
    """
    nr, ny, nx = vt.shape
    ncol = c1 - c0
    if attenuate:
        ia = max(i0 - 1, 0)
        nrow = i1 - ia
        for task in prange(nr * nrow):
            r = task // nrow
            i = ia + task % nrow
            _att_exp_row(f[r, i, c0 - 1 : c1], inv_b0[r], th[r, i, c0 - 1 : c1], ncol + 1)
    for task in prange(nr * ny):
        r = task // ny
        i = task % ny
        a = vt_prof[r, i]
        b = vp_prof[r, i]
        vtr = vt[r, i]
        vpr = vp[r, i]
        if has_base:
            bt = vt_base[i]
            bp = vp_base[i]
            for c in range(nx):
                vtr[c] = bt[c] + a
                vpr[c] = bp[c] + b
        else:
            for c in range(nx):
                vtr[c] = a
                vpr[c] = b
        if attenuate and i >= i0 and i < i1:
            t0 = th[r, i, c0:c1]
            if i >= att_t_lo and i < att_t_hi:
                tn = th[r, i - 1, c0:c1]
                o = vt[r, i, c0:c1]
                for k in range(ncol):
                    e = min(tn[k], t0[k])
                    o[k] = o[k] * (2.0 * e / (1.0 + e))
            tw = th[r, i, c0 - 1 : c1 - 1]
            o = vp[r, i, c0:c1]
            for k in range(ncol):
                e = min(tw[k], t0[k])
                o[k] = o[k] * (2.0 * e / (1.0 + e))
        if wrap > 0 and i >= i0 and i < i1:
            _wrap_row(vt[r], i, c0, c1, wrap)
            _wrap_row(vp[r], i, c0, c1, wrap)


@njit(cache=True, inline="always", error_model="numpy")
def _lf_row(vt, vp, at, ap, r, i, jrow, nt, nrows, c0, c1, wrap):  # pragma: no cover - compiled
    """The LF speeds of row ``i`` of realization ``r`` (see :func:`lf_alpha`), its phi ghosts if ``wrap``."""
    ncol = c1 - c0
    j = jrow[i]
    lo = max(1, j - 2) - j
    hi = min(nt, j + 3) - j
    o = at[r, i, c0:c1]
    if lo == -2 and hi == 3:  # every row but the four next to the poles: one pass over six rows
        v0 = vt[r, i - 2, c0:c1]
        v1 = vt[r, i - 1, c0:c1]
        v2 = vt[r, i, c0:c1]
        v3 = vt[r, i + 1, c0:c1]
        v4 = vt[r, i + 2, c0:c1]
        v5 = vt[r, i + 3, c0:c1]
        for k in range(ncol):
            m01 = max(abs(v0[k]), abs(v1[k]))
            m23 = max(abs(v2[k]), abs(v3[k]))
            m45 = max(abs(v4[k]), abs(v5[k]))
            o[k] = max(m01, m23, m45)
    else:
        v = vt[r, i + lo, c0:c1]
        for k in range(ncol):
            o[k] = abs(v[k])
        for d in range(lo + 1, hi + 1):
            v = vt[r, i + d, c0:c1]
            for k in range(ncol):
                o[k] = max(o[k], abs(v[k]))
    o = ap[r, i, c0:c1]
    if j >= 2 and j <= nrows - 1:
        v = vp[r, i, c0 - 2 : c1 + 4]  # faces c0-2..c1+3
        for k in range(ncol):
            m01 = max(abs(v[k]), abs(v[k + 1]))
            m23 = max(abs(v[k + 2]), abs(v[k + 3]))
            m45 = max(abs(v[k + 4]), abs(v[k + 5]))
            o[k] = max(m01, m23, m45)
    else:
        for k in range(ncol):
            o[k] = 0.0
    if wrap > 0:
        _wrap_row(at[r], i, c0, c1, wrap)
        _wrap_row(ap[r], i, c0, c1, wrap)


@kernel(cache=True, error_model="numpy")
def lf_alpha(vt, vp, at, ap, jrow, nt, nrows, i0, i1, c0, c1, wrap):
    """Local Lax-Friedrichs speeds on the owned cells (section 4.3).

    ``alpha_theta`` spans faces ``max(1, j-2)..min(nt, j+3)``; ``alpha_phi`` faces
    ``k-2..k+3`` (periodic through the halo) on rows 2..N_t-1, 0 on the pole rows.
    Both six-face windows are the max of three two-face maxima (no temporaries).
    ``wrap > 0``: each row's phi ghosts are filled as in :func:`flow_fill`.
    """
    nr = vt.shape[0]
    nrow = i1 - i0
    for task in prange(nr * nrow):
        _lf_row(vt, vp, at, ap, task // nrow, i0 + task % nrow, jrow, nt, nrows, c0, c1, wrap)


@kernel(cache=True, error_model="numpy")
def lf_alpha_kappa(vt, vp, at, ap, jrow, nt, nrows, i0, i1, c0, c1, wrap, dt_i, st_i, dp_i, ia, ib):
    """:func:`lf_alpha` and :func:`cfl_kappa` in one sweep: the LF speeds, and the largest rate.

    Both read the same velocity rows; here a row's rate is taken while they are in L1
    instead of in a second pass over ``vt`` and ``vp`` (1cr, 1 thread: 0.6 ms a step).
    ``ia..ib`` (the interior rows) must lie within ``i0..i1``.  The same values as the two
    kernels: the speeds are maxima of magnitudes, and each task keeps its own maximum.
    """
    nr = vt.shape[0]
    nrow = i1 - i0
    part = np.zeros(nr * nrow)
    dpi = dp_i[c0:c1]
    for task in prange(nr * nrow):
        r = task // nrow
        i = i0 + task % nrow
        _lf_row(vt, vp, at, ap, r, i, jrow, nt, nrows, c0, c1, wrap)
        if i >= ia and i < ib:
            part[task] = _kappa_row(vt, vp, dt_i, st_i, dpi, r, i, c0, c1)
    return _bits_f64(_max_bits(part))


# ---------------------------------------------------------------------------------------
# diffusion
# ---------------------------------------------------------------------------------------
@njit(cache=True, inline="always", error_model="numpy")
def _cap_term(dd, pole, x_b, x_a, dp):  # pragma: no cover - compiled
    # One column's diffusive flux through a pole cap's face (diff_pole_terms, diff_sts_stages).
    return (dd + pole) * (x_b - x_a) * dp


@njit(cache=True, error_model="numpy")
def diff_pole_terms(x, dcoef, pole, dp, ia, ib, c0, c1, out):
    """``(D_a + D_b) * (x[ib] - x[ia]) * dp`` per owned column, for the cap sums.

    ``D_a + D_b = 2 dcoef[r] + pole[c]``: ``pole`` is the realization-independent part of a
    variable diffusivity (zeros for a uniform one).
    """
    for r in range(x.shape[0]):
        dd = dcoef[r] + dcoef[r]
        for c in range(c0, c1):
            out[r, c - c0] = _cap_term(dd, pole[c], x[r, ib, c], x[r, ia, c], dp[c])


@njit(cache=True, inline="always", error_model="numpy")
def _sts_row(o, xw, xn, xc, xs, xe, xm, yy, t, k2, k4, bw, be, mu, nu, mt, kap, nx):  # pragma: no cover - compiled
    # One interior row of an RKL2/RKG2 stage on increments (diff_stage's mode 2).
    for k in range(nx):
        k1 = t * bw[k]
        k5 = t * be[k]
        k3 = -(k1 + k2 + k4 + k5)
        lv = k1 * xw[k] + k2 * xn[k] + k3 * xc[k] + k4 * xs[k] + k5 * xe[k]
        o[k] = mu * xc[k] + nu * xm[k] + mt * lv + kap * yy[k]


@njit(cache=True, inline="always", error_model="numpy")
def _sts_pole_row(o, xc, xm, yy, lv, mu, nu, mt, kap, nx):  # pragma: no cover - compiled
    # A pole row of the same stage: the operator is the row's cap value ``lv``.
    for k in range(nx):
        o[k] = mu * xc[k] + nu * xm[k] + mt * lv + kap * yy[k]


@kernel(cache=True, error_model="numpy")
def diff_stage(
    x, xm2, u0, y0, out, dcoef, s2, c2r, c4r, b1, b5, i0, i1, c0, c1,
    mu, nu, kap, mt, gam, lpn, lps, inorth, isouth, mode, wrap,
):  # fmt: skip
    """Five-point operator of section 6.2, alone or fused with a super-time-step stage.

    ``mode == 0``: ``out = L(x)``.  ``mode == 1``: ``out = mu*x + nu*xm2 + kap*u0 +
    mt*L(x) + gam*y0`` (explicit Euler: ``mu = 1``, ``mt = dt``, the rest 0).
    ``mode == 2``: one RKL2/RKG2 stage on increments ``v = u - u0``:
    ``out = mu*x + nu*xm2 + mt*L(x) + kap*y0`` (``u0`` is not read: 4 streams, not 5).  The
    coefficients are ``D_r`` times per-row (``s2 = 1/sin^2``, ``c2r``, ``c4r``) and
    per-column (``b1``, ``b5``) factors, formed on the fly; pole rows take the
    cap values ``lpn[r]`` / ``lps[r]``.  ``wrap > 0`` (a block alone in phi, ``wrap`` = its
    phi halo width, ``c0 == wrap``): each row's phi ghosts are filled too, as
    :func:`periodic_phi_fill` would.
    """
    nr = x.shape[0]
    nrow = i1 - i0
    nx = c1 - c0
    bw = b1[c0:c1]
    be = b5[c0:c1]
    for task in prange(nr * nrow):
        r = task // nrow
        i = i0 + task % nrow
        o = out[r, i, c0:c1]
        xc = x[r, i, c0:c1]
        if i == inorth or i == isouth:  # noqa: PLR1714 - Numba-friendly
            lv = lpn[r] if i == inorth else lps[r]
            if mode == 0:
                for k in range(nx):
                    o[k] = lv
            elif mode == 2:
                _sts_pole_row(o, xc, xm2[r, i, c0:c1], y0[r, i, c0:c1], lv, mu, nu, mt, kap, nx)
            else:
                xm = xm2[r, i, c0:c1]
                uu = u0[r, i, c0:c1]
                yy = y0[r, i, c0:c1]
                for k in range(nx):
                    o[k] = mu * xc[k] + nu * xm[k] + kap * uu[k] + mt * lv + gam * yy[k]
            _wrap_row(out[r], i, c0, c1, wrap)
            continue
        d = dcoef[r]
        t = d * s2[i]
        k2 = d * c2r[i]
        k4 = d * c4r[i]
        xw = x[r, i, c0 - 1 : c1 - 1]
        xe = x[r, i, c0 + 1 : c1 + 1]
        xn = x[r, i - 1, c0:c1]
        xs = x[r, i + 1, c0:c1]
        if mode == 0:
            for k in range(nx):
                k1 = t * bw[k]
                k5 = t * be[k]
                k3 = -(k1 + k2 + k4 + k5)
                o[k] = k1 * xw[k] + k2 * xn[k] + k3 * xc[k] + k4 * xs[k] + k5 * xe[k]
        elif mode == 2:
            _sts_row(o, xw, xn, xc, xs, xe, xm2[r, i, c0:c1], y0[r, i, c0:c1], t, k2, k4, bw, be, mu, nu, mt, kap, nx)
        else:
            xm = xm2[r, i, c0:c1]
            uu = u0[r, i, c0:c1]
            yy = y0[r, i, c0:c1]
            for k in range(nx):
                k1 = t * bw[k]
                k5 = t * be[k]
                k3 = -(k1 + k2 + k4 + k5)
                lv = k1 * xw[k] + k2 * xn[k] + k3 * xc[k] + k4 * xs[k] + k5 * xe[k]
                o[k] = mu * xc[k] + nu * xm[k] + kap * uu[k] + mt * lv + gam * yy[k]
        _wrap_row(out[r], i, c0, c1, wrap)


@kernel(cache=True, error_model="numpy")
def diff_sts_stages(
    w0, w1, w2, y0, u0, dcoef, s2, c2r, c4r, b1, b5, pole_n, pole_s, dp, fac_n, fac_s, i0, i1, c0, c1,
    inorth, isouth, mu, nu, mt, kap, nst, tau, m1, wrap, shares,
):  # fmt: skip
    """One RKL2/RKG2 super-step on increments, for a block that holds whole realizations.

    The block holds both poles and every column (one rank per ensemble group), so a
    stage needs no halo exchange: the cap values are summed here and each row's phi
    ghosts filled as it is written.  One call replaces ``nst - 1`` rounds of
    :func:`diff_pole_terms`, :func:`cap_sums` and :func:`diff_stage` (mode 2) and gives
    their bits: the same per-point arithmetic, the cap sums in column order.  Each
    realization runs all its stages in turn (``prange`` over realizations), so its
    planes stay in the cache from one stage to the next.

    Per realization, around the stages and on the whole ghosted plane, it also does
    what :meth:`Diffusion.super_step <hpcml.apps.flux.diffusion.Diffusion.super_step>`
    does with three passes of :func:`scaled_add` otherwise, with their roundings: on
    entry ``y0`` holds ``L(u0)`` and becomes ``Y0 = tau L(u0)``, ``w0`` gets ``v_1 = m1 Y0``;
    the stages rotate through ``w0, w1, w2`` as the stage-by-stage loop does, and
    ``u_nst = u0 + v_nst`` ends in ``(w0, w1, w2)[(4 - nst) % 3]``, while the plane is in
    the cache.  ``mu, nu, mt, kap`` are
    per stage (index ``j``; ``nu[2] = 0``, ``mt = mu~ tau``, ``kap = mu~ + gamma~``);
    ``fac_n, fac_s`` scale the north and south cap sums (the south value is negated);
    ``pole_n, pole_s`` are the realization-independent parts of the pole-face diffusivity.

    ``shares`` (the thread count): realizations go whole to the threads while they divide
    evenly; the rest (fewer than ``shares``) are split into ``shares`` row chunks, stage
    by stage (a parallel loop per stage, the caps summed between them), so no thread
    waits on another's extra realization.  1cr on 2 threads had 3 realizations on one
    thread and 2 on the other; one 512 x 1024 realization (diffuse_dipole) had one
    thread idle.  The bits do not depend on ``shares``.
    """
    nr = w0.shape[0]
    whole = (nr // shares) * shares
    for r in prange(whole):
        _sts_entry(y0[r], w0[r], 0, w0.shape[1], tau, m1)
        planes = (w0[r], w1[r], w2[r])
        p2, p1, out = 0, 0, 2  # plane indices: v_{j-2}, v_{j-1}, v_j (stage 2 writes w2)
        for j in range(2, nst + 1):
            lvn, lvs = _sts_caps(planes[p1], dcoef[r], pole_n, pole_s, dp, fac_n, fac_s, c0, c1, inorth, isouth)
            _sts_rows(planes[out], planes[p1], planes[p2], y0[r], dcoef[r], s2, c2r, c4r, b1, b5, i0, i1, c0, c1,
                      inorth, isouth, lvn, lvs, mu[j], nu[j], mt[j], kap[j], wrap)  # fmt: skip
            # v_{j-1} -> v_{j-2}, v_j -> v_{j-1}; v_{j+1} goes where v_{j-2} was (stage 2: the spare plane)
            p2, p1, out = p1, out, (1 if j == 2 else p2)
        _sts_exit(planes[p1], u0[r], 0, w0.shape[1])
    rest = nr - whole
    if rest == 0:
        return
    nch = shares
    ny = w0.shape[1]
    for task in prange(rest * nch):
        r = whole + task // nch
        ch = task % nch
        _sts_entry(y0[r], w0[r], (ny * ch) // nch, (ny * (ch + 1)) // nch, tau, m1)
    cap_n = np.empty(rest)
    cap_s = np.empty(rest)
    bufs = (w0, w1, w2)
    p2, p1, out = 0, 0, 2
    nrow = i1 - i0
    for j in range(2, nst + 1):
        for q in range(rest):
            cap_n[q], cap_s[q] = _sts_caps(bufs[p1][whole + q], dcoef[whole + q], pole_n, pole_s, dp, fac_n, fac_s,
                                           c0, c1, inorth, isouth)  # fmt: skip
        for task in prange(rest * nch):
            q = task // nch
            r = whole + q
            ch = task % nch
            _sts_rows(bufs[out][r], bufs[p1][r], bufs[p2][r], y0[r], dcoef[r], s2, c2r, c4r, b1, b5,
                      i0 + (nrow * ch) // nch, i0 + (nrow * (ch + 1)) // nch, c0, c1, inorth, isouth, cap_n[q],
                      cap_s[q], mu[j], nu[j], mt[j], kap[j], wrap)  # fmt: skip
        p2, p1, out = p1, out, (1 if j == 2 else p2)
    for task in prange(rest * nch):
        r = whole + task // nch
        ch = task % nch
        _sts_exit(bufs[p1][r], u0[r], (ny * ch) // nch, (ny * (ch + 1)) // nch)


@njit(cache=True, inline="always", error_model="numpy")
def _sts_entry(yr, vr, ra, rb, tau, m1):  # pragma: no cover - compiled
    # Rows ra..rb-1 of the whole ghosted plane: Y0 = tau L(u0) in place, v_1 = m1 Y0.
    for i in range(ra, rb):
        yi = yr[i]
        vi = vr[i]
        for k in range(yr.shape[1]):
            yi[k] = yi[k] * tau
            vi[k] = yi[k] * m1


@njit(cache=True, inline="always", error_model="numpy")
def _sts_exit(vr, ur, ra, rb):  # pragma: no cover - compiled
    # Rows ra..rb-1 of the whole ghosted plane: u_nst = u0 + v_nst, halo included.
    for i in range(ra, rb):
        vi = vr[i]
        ui = ur[i]
        for k in range(vr.shape[1]):
            vi[k] = vi[k] + ui[k]


@njit(cache=True, inline="always", error_model="numpy")
def _sts_caps(p1, d, pole_n, pole_s, dp, fac_n, fac_s, c0, c1, inorth, isouth):  # pragma: no cover - compiled
    # The two cap values of plane p1 (one realization), summed in column order.
    dd = d + d
    sn = 0.0
    for c in range(c0, c1):
        sn += _cap_term(dd, pole_n[c], p1[inorth + 1, c], p1[inorth, c], dp[c])
    ss = 0.0
    for c in range(c0, c1):
        ss += _cap_term(dd, pole_s[c], p1[isouth, c], p1[isouth - 1, c], dp[c])
    return sn * fac_n, -(ss * fac_s)


@njit(cache=True, inline="always", error_model="numpy")
def _sts_rows(out, p1, p2, yr, d, s2, c2r, c4r, b1, b5, ra, rb, c0, c1, inorth, isouth, lvn, lvs, m_j, n_j, t_j, k_j,
              wrap):  # fmt: skip  # pragma: no cover - compiled
    # Rows ra..rb-1 of one stage of one realization (planes out, p1 = v_{j-1}, p2 = v_{j-2}).
    nx = c1 - c0
    bw = b1[c0:c1]
    be = b5[c0:c1]
    for i in range(ra, rb):
        o = out[i, c0:c1]
        xc = p1[i, c0:c1]
        if i == inorth or i == isouth:  # noqa: PLR1714 - Numba-friendly
            lv = lvn if i == inorth else lvs
            _sts_pole_row(o, xc, p2[i, c0:c1], yr[i, c0:c1], lv, m_j, n_j, t_j, k_j, nx)
        else:
            _sts_row(o, p1[i, c0 - 1 : c1 - 1], p1[i - 1, c0:c1], xc, p1[i + 1, c0:c1], p1[i, c0 + 1 : c1 + 1],
                     p2[i, c0:c1], yr[i, c0:c1], d * s2[i], d * c2r[i], d * c4r[i], bw, be, m_j, n_j, t_j, k_j,
                     nx)  # fmt: skip
        _wrap_row(out, i, c0, c1, wrap)


@kernel(cache=True, error_model="numpy")
def diff_stage_var(
    x, xm2, u0, y0, out, dcoef, phi_face, theta_face, s2, c2r, c4r, b1, b5, i0, i1, c0, c1,
    mu, nu, kap, mt, gam, lpn, lps, inorth, isouth, mode, wrap, scratch,
):  # fmt: skip
    """:func:`diff_stage` with a diffusivity that varies over the sphere.

    The face diffusivities are ``dcoef[r] + phi_face[i, c]`` (west face of cell ``(i, c)``;
    east: column ``c + 1``) and ``dcoef[r] + theta_face[i, c]`` (north face; south: row
    ``i + 1``), times the same geometry factors as :func:`diff_stage`.  ``scratch`` holds
    each thread's four coefficient rows, ``(threads, 4, nx)``; ``wrap`` as there.
    """
    nr = x.shape[0]
    nrow = i1 - i0
    nx = c1 - c0
    bw = b1[c0:c1]
    be = b5[c0:c1]
    for task in prange(nr * nrow):
        r = task // nrow
        i = i0 + task % nrow
        o = out[r, i, c0:c1]
        xc = x[r, i, c0:c1]
        if i == inorth or i == isouth:  # noqa: PLR1714 - Numba-friendly
            lv = lpn[r] if i == inorth else lps[r]
            xm = xm2[r, i, c0:c1]
            uu = u0[r, i, c0:c1]
            yy = y0[r, i, c0:c1]
            for k in range(nx):
                if mode == 0:
                    o[k] = lv
                elif mode == 2:
                    o[k] = mu * xc[k] + nu * xm[k] + mt * lv + kap * yy[k]
                else:
                    o[k] = mu * xc[k] + nu * xm[k] + kap * uu[k] + mt * lv + gam * yy[k]
            _wrap_row(out[r], i, c0, c1, wrap)
            continue
        d = dcoef[r]
        sc = scratch[numba.get_thread_id()]
        k1 = sc[0]
        k2 = sc[1]
        k4 = sc[2]
        k5 = sc[3]
        fw = phi_face[i, c0:c1]
        fe = phi_face[i, c0 + 1 : c1 + 1]
        fn = theta_face[i, c0:c1]
        fs = theta_face[i + 1, c0:c1]
        t = s2[i]
        cn = c2r[i]
        cs = c4r[i]
        for k in range(nx):
            k1[k] = (d + fw[k]) * t * bw[k]
            k5[k] = (d + fe[k]) * t * be[k]
            k2[k] = (d + fn[k]) * cn
            k4[k] = (d + fs[k]) * cs
        xw = x[r, i, c0 - 1 : c1 - 1]
        xe = x[r, i, c0 + 1 : c1 + 1]
        xn = x[r, i - 1, c0:c1]
        xs = x[r, i + 1, c0:c1]
        if mode == 0:
            for k in range(nx):
                k3 = -(k1[k] + k2[k] + k4[k] + k5[k])
                o[k] = k1[k] * xw[k] + k2[k] * xn[k] + k3 * xc[k] + k4[k] * xs[k] + k5[k] * xe[k]
        elif mode == 2:
            xm = xm2[r, i, c0:c1]
            yy = y0[r, i, c0:c1]
            for k in range(nx):
                k3 = -(k1[k] + k2[k] + k4[k] + k5[k])
                lv = k1[k] * xw[k] + k2[k] * xn[k] + k3 * xc[k] + k4[k] * xs[k] + k5[k] * xe[k]
                o[k] = mu * xc[k] + nu * xm[k] + mt * lv + kap * yy[k]
        else:
            xm = xm2[r, i, c0:c1]
            uu = u0[r, i, c0:c1]
            yy = y0[r, i, c0:c1]
            for k in range(nx):
                k3 = -(k1[k] + k2[k] + k4[k] + k5[k])
                lv = k1[k] * xw[k] + k2[k] * xn[k] + k3 * xc[k] + k4[k] * xs[k] + k5[k] * xe[k]
                o[k] = mu * xc[k] + nu * xm[k] + kap * uu[k] + mt * lv + gam * yy[k]
        _wrap_row(out[r], i, c0, c1, wrap)


@njit(cache=True, inline="always", error_model="numpy")
def _ptl_row_max(y, x, r, i, c0, c1):  # pragma: no cover - compiled
    # Largest |y| in row i where |x| > 1e-14 (-1 if none), NaN |y| skipped.  An int64
    # maximum of the magnitudes' bits (their order is the float order; -1 is below every
    # one): it vectorises, Numba's float max with its NaN rule does not.
    yr = y[r, i, c0:c1]
    xr = x[r, i, c0:c1]
    mb = -1
    for c in range(c1 - c0):
        a = abs(yr[c])
        mb = max(mb, _f64_bits(a) if abs(xr[c]) > 1e-14 and a == a else -1)  # noqa: PLR0124 - NaN test
    return _bits_f64(mb) if mb >= 0 else -1.0


@njit(cache=True, inline="always", error_model="numpy")
def _ptl_row_tau(y, x, m, r, i, c0, c1):  # pragma: no cover - compiled
    # Smallest PTL candidate (section 6.5) of row i's cells where |y| == m: over the four
    # neighbours n with (x - x_n)(y - y_n) < -1e-14, the step -(x - x_n) / (y - y_n).
    tau = _HUGE
    yr = y[r, i, c0:c1]
    xr = x[r, i, c0:c1]
    hits = 0  # a vectorised count first: the maximum sits in a few cells of the whole block
    for c in range(c1 - c0):
        hits += 1 if abs(yr[c]) == m and abs(xr[c]) > 1e-14 else 0
    if hits == 0:
        return tau
    for c in range(c0, c1):
        if abs(y[r, i, c]) != m or abs(x[r, i, c]) <= 1e-14:
            continue
        for di, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            du = x[r, i, c] - x[r, i + di, c + dc]
            df = y[r, i, c] - y[r, i + di, c + dc]
            if du * df < -1e-14:
                tau = min(tau, -du / df)
    return tau


@kernel(cache=True, error_model="numpy")
def ptl_partials(y, x, m, i0, i1, c0, c1, candidates):
    """Per (realization, row) of rows ``i0..i1-1``: the PTL maximum, or with ``candidates`` the PTL step.

    Without ``candidates``: the largest ``|y|`` where ``|x| > 1e-14`` (-1 if none).  With
    it: the smallest step candidate of section 6.5 at the cells where ``|y| == m``.
    The partials are reduced by :func:`ptl_max` / :func:`ptl_tau`; maxima and minima do
    not depend on the order, so any thread count gives the same value.
    """
    nrow = max(i1 - i0, 0)
    part = np.empty(y.shape[0] * nrow)
    for task in prange(y.shape[0] * nrow):
        r = task // nrow
        i = i0 + task % nrow
        part[task] = _ptl_row_tau(y, x, m, r, i, c0, c1) if candidates else _ptl_row_max(y, x, r, i, c0, c1)
    return part


def ptl_max(y: np.ndarray, x: np.ndarray, i0: int, i1: int, c0: int, c1: int) -> float:
    """Largest ``|y|`` where ``|x| > 1e-14`` on the owned cells (-1 if none)."""
    part = ptl_partials(y, x, 0.0, i0, i1, c0, c1, False)
    return float(part.max()) if part.size else -1.0


def ptl_tau(y: np.ndarray, x: np.ndarray, m: float, ia: int, ib: int, c0: int, c1: int) -> float:
    """PTL step candidates (section 6.5) at interior cells where ``|y| == m``: their minimum."""
    part = ptl_partials(y, x, m, ia, ib, c0, c1, True)
    return float(part.min()) if part.size else _HUGE


@kernel(cache=True, error_model="numpy")
def scaled_add(y, a, x, b):
    """``y = a*y + b*x`` element-wise on flat C-contiguous arrays (``x`` unread when ``b == 0``).

    The same roundings as the NumPy statements it replaces (``y *= a``, ``y = b*x``,
    ``y += x``, ``y = a*y + b*x``; no fused multiply-add), in parallel chunks.
    """
    n = y.size
    nch = max(1, min(64, n // 65536))
    for ch in prange(nch):
        lo = (n * ch) // nch
        hi = (n * (ch + 1)) // nch
        if b == 0.0:
            for k in range(lo, hi):
                y[k] = y[k] * a
        elif a == 0.0:
            for k in range(lo, hi):
                y[k] = x[k] * b
        elif a == 1.0 and b == 1.0:
            for k in range(lo, hi):
                y[k] = y[k] + x[k]
        else:
            for k in range(lo, hi):
                y[k] = y[k] * a + x[k] * b


# ---------------------------------------------------------------------------------------
# diagnostics
# ---------------------------------------------------------------------------------------
@njit(cache=True, inline="always", error_model="numpy")
def _acc(s, r, q, v):
    """Neumaier compensated accumulation of ``v`` into ``s[r, q, 0:2]``."""
    a = s[r, q, 0]
    t = a + v
    if abs(a) >= abs(v):
        s[r, q, 1] += (a - t) + v
    else:
        s[r, q, 1] += (v - t) + a
    s[r, q, 0] = t


@njit(cache=True, error_model="numpy", fastmath=True)
def _row_sums(xr, er, efac, use_ex, wr, cw, sw, out):
    """Plain sums over one row (vectorised: fastmath only reorders these diagnostics).

    ``out[0:7]`` = F+, F-, e1, e2, sum f dA, err_num, err_den with the column weights
    ``wr``, ``cw``, ``sw`` only: the caller scales the first five by the row's weight
    (one product per row instead of three per cell).  The extrema are
    :func:`_row_extrema`'s: in the same loop they keep LLVM from vectorising the sums
    (86 against 21 + 22 us on a 90 x 360 block).
    """
    pos = 0.0
    neg = 0.0
    e1 = 0.0
    e2 = 0.0
    fa = 0.0
    num = 0.0
    den = 0.0
    for k in range(xr.shape[0]):
        f = xr[k]
        fda = f * wr[k]
        pos += max(fda, 0.0)
        neg += min(fda, 0.0)
        e1 += f * cw[k]
        e2 += f * sw[k]
        fa += fda
        if use_ex:
            e = efac * er[k]
            d = f - e
            num += d * d
            den += abs(f) * abs(e)
        else:
            den += f * f
    out[0] = pos
    out[1] = neg
    out[2] = e1
    out[3] = e2
    out[4] = fa
    out[5] = num
    out[6] = den


@njit(cache=True, error_model="numpy", fastmath=True)
def _row_extrema(xr, out):
    """``out[7:10]`` = min, max and min |f| of one row, folded into the values already there."""
    lo = out[7]
    hi = out[8]
    amin = out[9]
    for k in range(xr.shape[0]):
        f = xr[k]
        lo = min(lo, f)
        hi = max(hi, f)
        amin = min(amin, abs(f))
    out[7] = lo
    out[8] = hi
    out[9] = amin


@kernel(cache=True, error_model="numpy")
def diag_partials(
    x, fex, ex_rows, ex_cols, sep, efac, use_ex, wt, wp, cosw, sinw, sdip, cdip, cap, i0, i1, c0, c1, mins, sums,
):  # fmt: skip
    """Per-realization partial diagnostics of the owned block.

    ``mins[r] = (min f, max f, min |f|)``; ``sums[r, q] = (sum, compensation)`` for
    q = F+, F-, NP+, NP-, SP+, SP-, e1, e2, axial, err_num, err_den.  Row sums are
    plain (vectorised) over the column weights and scaled by the row weight; rows
    are accumulated with Neumaier compensation, and the caller combines ranks'
    partials with ``math.fsum``, so results agree across decompositions to about
    one rounding of a row sum.
    ``cap[i]`` is +1 for north-cap rows, -1 for south-cap rows, 0 otherwise.
    With ``use_ex`` the exact solution of realization ``r`` is ``efac[r] * fex``, or with
    ``sep`` (a separable solution) ``(ex_rows[i] * efac[r]) * ex_cols[c]``, formed one row
    at a time in L1 instead of writing and re-reading a block-sized outer product every
    history row.  Each value depends only on its row and column, so every split
    evaluates the same numbers.
    """
    nr = x.shape[0]
    wpr = wp[c0:c1]
    cwr = cosw[c0:c1]
    swr = sinw[c0:c1]
    for r in prange(nr):
        for q in range(11):
            sums[r, q, 0] = 0.0
            sums[r, q, 1] = 0.0
        rs = np.empty(10)
        rs[7] = _HUGE
        rs[8] = _TINY
        rs[9] = _HUGE
        for i in range(i0, i1):
            xr = x[r, i, c0:c1]
            if sep:
                _row_sums(xr, ex_cols[c0:c1], ex_rows[i] * efac[r], use_ex, wpr, cwr, swr, rs)
            else:
                _row_sums(xr, fex[i, c0:c1], efac[r], use_ex, wpr, cwr, swr, rs)
            _row_extrema(xr, rs)
            w_i = wt[i]
            for q in range(5):
                rs[q] *= w_i
            _acc_row(sums, r, rs, cap[i], sdip[i], cdip[i])
        mins[r, 0] = rs[7]
        mins[r, 1] = rs[8]
        mins[r, 2] = rs[9]


@njit(cache=True, inline="always", error_model="numpy")
def _acc_row(sums, r, rs, cap_i, sdip_i, cdip_i):
    """Add one row's quantities ``rs`` (see :func:`_row_sums`) to realization ``r``'s sums."""
    _acc(sums, r, 0, rs[0])
    _acc(sums, r, 1, rs[1])
    if cap_i > 0:
        _acc(sums, r, 2, rs[0])
        _acc(sums, r, 3, rs[1])
    elif cap_i < 0:
        _acc(sums, r, 4, rs[0])
        _acc(sums, r, 5, rs[1])
    _acc(sums, r, 6, sdip_i * rs[2])
    _acc(sums, r, 7, sdip_i * rs[3])
    _acc(sums, r, 8, cdip_i * rs[4])
    _acc(sums, r, 9, rs[5])
    _acc(sums, r, 10, rs[6])


@njit(cache=True, error_model="numpy")
def diag_accumulate(rows, sdip, cdip, cap, i0, mins, sums):
    """:func:`diag_partials` from precomputed row quantities ``rows[r, i - i0, 0:10]`` (a GPU's rows)."""
    nr, ny = rows.shape[0], rows.shape[1]
    for r in range(nr):
        for q in range(11):
            sums[r, q, 0] = 0.0
            sums[r, q, 1] = 0.0
        lo = _HUGE
        hi = _TINY
        amin = _HUGE
        for n in range(ny):
            i = i0 + n
            rs = rows[r, n]
            lo = min(lo, rs[7])
            hi = max(hi, rs[8])
            amin = min(amin, rs[9])
            _acc_row(sums, r, rs, cap[i], sdip[i], cdip[i])
        mins[r, 0] = lo
        mins[r, 1] = hi
        mins[r, 2] = amin


@njit(cache=True, error_model="numpy")
def gaussian_factors(th_rows, sti_rows, ph_cols, th0, vtt, ph1, ph2, width, rows, cols):
    """Row and column factors of the two-Gaussian validation solution at one time.

    ``exp(-(dth^2 + dph^2)/w) = exp(-dth^2/w) exp(-dph^2/w)`` and both blobs share the
    theta factor, so ``rows[i] = sti_rows[i] exp(-(theta_i - th0 - vtt)^2/w)``
    (``sti_rows`` is zero outside the owned rows) and ``cols[c]`` is the difference of
    the two blobs' phi factors (centres ``ph1``, ``ph2``): an exp per row and two per
    column instead of two per cell, in one call (as a NumPy expression it cost 80 us
    per history row in small-array overheads).
    """
    for i in range(rows.shape[0]):
        d = th_rows[i] - th0 - vtt
        rows[i] = sti_rows[i] * np.exp(-(d * d) / width)
    for c in range(cols.shape[0]):
        d1 = ph_cols[c] - ph1
        d2 = ph_cols[c] - ph2
        cols[c] = np.exp(-(d2 * d2) / width) - np.exp(-(d1 * d1) / width)


@njit(cache=True, error_model="numpy")
def flux_rescale(x, q, i0, i1, c0, c1):
    """Flux balance of one realization: positive values / ``q``, the others * ``q``."""
    for i in range(i0, i1):
        for c in range(c0, c1):
            v = x[i, c]
            x[i, c] = v / q if v > 0.0 else v * q
