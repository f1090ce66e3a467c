"""Numba-CUDA kernels of the surface flux-transport solver (the GPU side of :mod:`kernels.flux`).

Same arguments and the same per-point arithmetic as the CPU kernels of
:mod:`kernels.flux` (the formulas are written in the same order), one thread per
cell (``x`` = column, ``y`` = row, ``z`` = realization) so that a warp reads
consecutive columns.  Each thread recomputes the fluxes of its own four faces
(a face is computed twice, by its two cells): on a GPU that is cheaper than a
second pass through memory.  Reductions (CFL rate, practical time-step limit)
use atomic max/min, which are exact and order-free; the polar-cap row sums run
one thread per row in HipFT's column order, bit-identical to the CPU's
:func:`~kernels.flux.sequential_row_sums`.

Arrays are CuPy arrays or Numba device arrays (in Numba's CUDA simulator, host
memory); every launch goes through :func:`kernels._common.launch` (CuPy's stream
on a GPU).  No MPI here.
"""

from __future__ import annotations

import functools
import math
from typing import Any

# ``cuda`` must be a module global: the CUDA simulator swaps it for its fake module.
from numba import cuda

from ._common import launch

__all__ = [
    "adv_pole_terms",
    "advect_stage",
    "att_flow_fill",
    "cap_sums",
    "cfl_kappa",
    "diag_rows",
    "diff_pole_terms",
    "diff_stage",
    "lf_alpha",
    "ptl_max",
    "ptl_tau",
    "scaled_add",
    "source_add",
]

BLOCK3 = (32, 4, 1)
_HUGE = 1.7976931348623157e308


def _fit(n: int, most: int) -> int:
    """Threads along one axis of a block: ``most``, or fewer when the extent is smaller."""
    return max(1, min(most, n))


def _cells(nx: int, ny: int, nz: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``(grid, block)`` for one thread per cell of an ``nz x ny x nx`` box.

    The block is :data:`BLOCK3` cut down to the box, so a block narrower than 32
    columns (a small grid, or many ranks along phi) launches no idle threads.  Every
    kernel indexes through ``cuda.grid``, so the block shape changes no result.  It
    matters most in the CUDA simulator, which runs one Python thread per GPU thread.
    """
    block = (_fit(nx, BLOCK3[0]), _fit(ny, BLOCK3[1]), 1)
    grid = (max(1, -(-nx // block[0])), max(1, -(-ny // block[1])), max(1, nz))
    return grid, block


def _line(n: int, nz: int, most: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(grid, block)`` for one thread per element of ``nz`` lines of ``n`` (blocks of up to ``most``)."""
    width = _fit(n, most)
    return (max(1, -(-n // width)), max(1, nz)), (width, 1)


@functools.cache
def _kernels() -> dict[str, Any]:
    @cuda.jit(device=True)
    def upwind_flux(v, f_here, f_before, upwind):  # pragma: no cover - device code
        c = abs(upwind) if v >= 0.0 else -abs(upwind)
        return v * 0.5 * ((1.0 - c) * f_here + (1.0 + c) * f_before)

    @cuda.jit(device=True)
    def weno_side(c, far, oth, al, bo, k, r, e4):  # pragma: no cover - device code
        # kernels.flux._weno_side (the GPU contracts the a*b + c into FMAs itself)
        v = al * (c - far)
        u = bo * (oth - c)
        q0 = c + v
        q1 = k * c + u
        s0 = v * v + e4
        s0 = s0 * s0
        s1 = u * u + e4
        s1 = s1 * s1
        w1 = r * s0
        return (s1 * q0 + w1 * q1) / (s1 + w1)

    @cuda.jit(device=True)
    def weno_pt(gp_m2, gp_m1, gp_0, gm_m1, gm_0, gm_p1, b_m, a_m, r_p, e_m, a_0, b_0, r_m, e_0, k):  # pragma: no cover
        up = weno_side(gp_m1, gp_m2, gp_0, b_m, a_m, k, r_p, e_m)
        um = weno_side(gm_0, gm_p1, gm_m1, a_0, b_0, k, r_m, e_0)
        return um + up

    @cuda.jit(device=True)
    def theta_flux(x, vt, at, kind_t, wt, r, rf, q, c, upwind):  # pragma: no cover - device code
        kq = kind_t[q]
        if kq == 2:
            gp_m2 = 0.5 * x[r, q - 2, c] * (vt[rf, q - 2, c] + at[rf, q - 2, c])
            gp_m1 = 0.5 * x[r, q - 1, c] * (vt[rf, q - 1, c] + at[rf, q - 1, c])
            gp_0 = 0.5 * x[r, q, c] * (vt[rf, q, c] + at[rf, q, c])
            gm_m1 = 0.5 * x[r, q - 1, c] * (vt[rf, q, c] - at[rf, q - 1, c])
            gm_0 = 0.5 * x[r, q, c] * (vt[rf, q + 1, c] - at[rf, q, c])
            gm_p1 = 0.5 * x[r, q + 1, c] * (vt[rf, q + 2, c] - at[rf, q + 1, c])
            return weno_pt(
                gp_m2, gp_m1, gp_0, gm_m1, gm_0, gm_p1, wt[q, 0], wt[q, 1], wt[q, 2], wt[q, 3], wt[q, 4],
                wt[q, 5], wt[q, 6], wt[q, 7], wt[q, 8],
            )  # fmt: skip
        if kq == 1:
            return upwind_flux(vt[rf, q, c], x[r, q, c], x[r, q - 1, c], upwind)
        return 0.0

    @cuda.jit(device=True)
    def phi_flux(x, vp, ap, weno_p, wpt, r, rf, i, c, upwind):  # pragma: no cover - device code
        if weno_p:
            gp_m2 = 0.5 * x[r, i, c - 2] * (vp[rf, i, c - 2] + ap[rf, i, c - 2])
            gp_m1 = 0.5 * x[r, i, c - 1] * (vp[rf, i, c - 1] + ap[rf, i, c - 1])
            gp_0 = 0.5 * x[r, i, c] * (vp[rf, i, c] + ap[rf, i, c])
            gm_m1 = 0.5 * x[r, i, c - 1] * (vp[rf, i, c] - ap[rf, i, c - 1])
            gm_0 = 0.5 * x[r, i, c] * (vp[rf, i, c + 1] - ap[rf, i, c])
            gm_p1 = 0.5 * x[r, i, c + 1] * (vp[rf, i, c + 2] - ap[rf, i, c + 1])
            return weno_pt(
                gp_m2, gp_m1, gp_0, gm_m1, gm_0, gm_p1, wpt[0, c], wpt[1, c], wpt[2, c], wpt[3, c], wpt[4, c],
                wpt[5, c], wpt[6, c], wpt[7, c], wpt[8, c],
            )  # fmt: skip
        return upwind_flux(vp[rf, i, c], x[r, i, c], x[r, i, c - 1], upwind)

    @cuda.jit
    def advect_stage_k(
        x, f0, out, vt, vp, at, ap, kind_t, wt, weno_p, wpt, sth, st_i, dt_i, dp_i,
        i0, i1, c0, c1, a, b, cdt, upwind, apole_n, apole_s, inorth, isouth,
    ):  # pragma: no cover - device code  # fmt: skip
        c, i, r = cuda.grid(3)
        c += c0
        i += i0
        if c >= c1 or i >= i1 or r >= x.shape[0]:
            return
        if i == inorth or i == isouth:  # noqa: PLR1714 - Numba-friendly
            ap_ = apole_n[r] if i == inorth else apole_s[r]
            out[r, i, c] = a * f0[r, i, c] + b * x[r, i, c] - cdt * ap_
            return
        rf = min(r, vt.shape[0] - 1)  # a flow shared by every realization, or one each
        fn = theta_flux(x, vt, at, kind_t, wt, r, rf, i, c, upwind)
        fs = theta_flux(x, vt, at, kind_t, wt, r, rf, i + 1, c, upwind)
        fw = phi_flux(x, vp, ap, weno_p, wpt, r, rf, i, c, upwind)
        fe = phi_flux(x, vp, ap, weno_p, wpt, r, rf, i, c + 1, upwind)
        sti = st_i[i]
        div = (sth[i + 1] * fs - sth[i] * fn) * sti * dt_i[i] + (fe - fw) * sti * dp_i[c]
        if a == 0.0:
            out[r, i, c] = b * x[r, i, c] - cdt * div
        else:
            out[r, i, c] = a * f0[r, i, c] + b * x[r, i, c] - cdt * div

    @cuda.jit
    def adv_pole_terms_k(x, vt, dp, q, c0, c1, upwind, out):  # pragma: no cover - device code
        c, r = cuda.grid(2)
        c += c0
        if c < c1 and r < x.shape[0]:
            rf = min(r, vt.shape[0] - 1)
            out[r, c - c0] = upwind_flux(vt[rf, q, c], x[r, q, c], x[r, q - 1, c], upwind) * dp[c]

    @cuda.jit
    def diff_pole_terms_k(x, dcoef, pole, dp, ia, ib, c0, c1, out):  # pragma: no cover - device code
        c, r = cuda.grid(2)
        c += c0
        if c < c1 and r < x.shape[0]:
            dd = dcoef[r] + dcoef[r]
            out[r, c - c0] = (dd + pole[c]) * (x[r, ib, c] - x[r, ia, c]) * dp[c]

    @cuda.jit
    def cap_sums_k(terms, na, fac_a, sign_a, out_a, fac_b, sign_b, out_b):  # pragma: no cover - device code
        # one thread per row of ``terms`` (rows 0..na-1 -> out_a, the rest -> out_b), HipFT's order
        row = cuda.grid(1)
        if row >= terms.shape[0]:
            return
        s = 0.0
        for k in range(terms.shape[1]):
            s += terms[row, k]
        if row < na:
            out_a[row] = sign_a * (s * fac_a)
        else:
            out_b[row - na] = sign_b * (s * fac_b)

    @cuda.jit
    def diff_stage_k(
        x, xm2, u0, y0, out, dcoef, phi_face, theta_face, var, s2, c2r, c4r, b1, b5,
        i0, i1, c0, c1, mu, nu, kap, mt, gam, lpn, lps, inorth, isouth, mode,
    ):  # pragma: no cover - device code  # fmt: skip
        c, i, r = cuda.grid(3)
        c += c0
        i += i0
        if c >= c1 or i >= i1 or r >= x.shape[0]:
            return
        xc = x[r, i, c]
        if i == inorth or i == isouth:  # noqa: PLR1714 - Numba-friendly
            lv = lpn[r] if i == inorth else lps[r]
        else:
            d = dcoef[r]
            if var:
                t = s2[i]
                k1 = (d + phi_face[i, c]) * t * b1[c]
                k5 = (d + phi_face[i, c + 1]) * t * b5[c]
                k2 = (d + theta_face[i, c]) * c2r[i]
                k4 = (d + theta_face[i + 1, c]) * c4r[i]
            else:
                t = d * s2[i]
                k1 = t * b1[c]
                k5 = t * b5[c]
                k2 = d * c2r[i]
                k4 = d * c4r[i]
            k3 = -(k1 + k2 + k4 + k5)
            lv = k1 * x[r, i, c - 1] + k2 * x[r, i - 1, c] + k3 * xc + k4 * x[r, i + 1, c] + k5 * x[r, i, c + 1]
        if mode == 0:
            out[r, i, c] = lv
        elif mode == 2:
            out[r, i, c] = mu * xc + nu * xm2[r, i, c] + mt * lv + kap * y0[r, i, c]
        else:
            out[r, i, c] = mu * xc + nu * xm2[r, i, c] + kap * u0[r, i, c] + mt * lv + gam * y0[r, i, c]

    @cuda.jit
    def att_flow_fill_k(
        vt, vp, vt_prof, vp_prof, vt_base, vp_base, has_base, f, inv_b0, attenuate, i0, i1, c0, c1, att_lo, att_hi
    ):  # pragma: no cover - device code
        c, i, r = cuda.grid(3)
        if c >= vt.shape[2] or i >= vt.shape[1] or r >= vt.shape[0]:
            return
        a = vt_prof[r, i]
        b = vp_prof[r, i]
        if has_base:
            a = vt_base[i, c] + a
            b = vp_base[i, c] + b
        if attenuate and i >= i0 and i < i1 and c >= c0 and c < c1:
            # 1 - tanh(max|f| / B0) = 2 e / (1 + e), e = min of exp(-2 |f| / B0) (see kernels.flux.flow_fill)
            inv = inv_b0[r]
            e0 = math.exp((abs(f[r, i, c]) * inv) * -2.0)
            if i >= att_lo and i < att_hi:
                e = min(math.exp((abs(f[r, i - 1, c]) * inv) * -2.0), e0)
                a = a * (2.0 * e / (1.0 + e))
            e = min(math.exp((abs(f[r, i, c - 1]) * inv) * -2.0), e0)
            b = b * (2.0 * e / (1.0 + e))
        vt[r, i, c] = a
        vp[r, i, c] = b

    @cuda.jit
    def lf_alpha_k(vt, vp, at, ap, jrow, nt, nrows, i0, i1, c0, c1):  # pragma: no cover - device code
        c, i, r = cuda.grid(3)
        c += c0
        i += i0
        if c >= c1 or i >= i1 or r >= vt.shape[0]:
            return
        j = jrow[i]
        lo = max(1, j - 2) - j
        hi = min(nt, j + 3) - j
        m = abs(vt[r, i + lo, c])
        for d in range(lo + 1, hi + 1):
            m = max(m, abs(vt[r, i + d, c]))
        at[r, i, c] = m
        if j >= 2 and j <= nrows - 1:
            m = abs(vp[r, i, c - 2])
            for d in range(-1, 4):
                m = max(m, abs(vp[r, i, c + d]))
            ap[r, i, c] = m
        else:
            ap[r, i, c] = 0.0

    @cuda.jit
    def cfl_kappa_k(vt, vp, dt_i, st_i, dp_i, ia, ib, c0, c1, out):  # pragma: no cover - device code
        c, i, r = cuda.grid(3)
        c += c0
        i += ia
        if c >= c1 or i >= ib or r >= vt.shape[0]:
            return
        kap = (
            max(abs(vt[r, i, c]), abs(vt[r, i + 1, c])) * dt_i[i]
            + max(abs(vp[r, i, c]), abs(vp[r, i, c + 1])) * st_i[i] * dp_i[c]
        )
        cuda.atomic.max(out, 0, kap)

    @cuda.jit
    def ptl_max_k(y, x, i0, i1, c0, c1, out):  # pragma: no cover - device code
        c, i, r = cuda.grid(3)
        c += c0
        i += i0
        if c >= c1 or i >= i1 or r >= y.shape[0]:
            return
        if abs(x[r, i, c]) > 1e-14:
            cuda.atomic.max(out, 0, abs(y[r, i, c]))

    @cuda.jit
    def ptl_tau_k(y, x, m, ia, ib, c0, c1, out):  # pragma: no cover - device code
        c, i, r = cuda.grid(3)
        c += c0
        i += ia
        if c >= c1 or i >= ib or r >= y.shape[0]:
            return
        yc = y[r, i, c]
        xc = x[r, i, c]
        if abs(yc) != m or abs(xc) <= 1e-14:
            return
        tau = _HUGE
        for n in range(4):
            if n == 0:
                xn, yn = x[r, i - 1, c], y[r, i - 1, c]
            elif n == 1:
                xn, yn = x[r, i + 1, c], y[r, i + 1, c]
            elif n == 2:
                xn, yn = x[r, i, c - 1], y[r, i, c - 1]
            else:
                xn, yn = x[r, i, c + 1], y[r, i, c + 1]
            du = xc - xn
            df = yc - yn
            if du * df < -1e-14:
                tau = min(tau, -du / df)
        cuda.atomic.min(out, 0, tau)

    @cuda.jit
    def diag_rows_k(x, wt, wp, cosw, sinw, i0, i1, c0, c1, out):  # pragma: no cover - device code
        # one thread per (realization, owned row): the ten row quantities of kernels.flux._row_sums
        i, r = cuda.grid(2)
        i += i0
        if i >= i1 or r >= x.shape[0]:
            return
        pos = 0.0
        neg = 0.0
        e1 = 0.0
        e2 = 0.0
        fa = 0.0
        den = 0.0
        lo = _HUGE
        hi = -_HUGE
        amin = _HUGE
        w_i = wt[i]
        for c in range(c0, c1):
            f = x[r, i, c]
            fda = f * (w_i * wp[c])
            pos += max(fda, 0.0)
            neg += min(fda, 0.0)
            e1 += f * (w_i * cosw[c])
            e2 += f * (w_i * sinw[c])
            fa += fda
            lo = min(lo, f)
            hi = max(hi, f)
            amin = min(amin, abs(f))
            den += f * f
        row = out[r, i - i0]
        row[0] = pos
        row[1] = neg
        row[2] = e1
        row[3] = e2
        row[4] = fa
        row[5] = 0.0
        row[6] = den
        row[7] = lo
        row[8] = hi
        row[9] = amin

    @cuda.jit
    def scaled_add_k(y, a, x, b):  # pragma: no cover - device code
        # y = a*y + b*x on the whole array (b == 0: x is not read; a == 0: y is not read)
        c, i, r = cuda.grid(3)
        if c >= y.shape[2] or i >= y.shape[1] or r >= y.shape[0]:
            return
        if b == 0.0:
            y[r, i, c] = a * y[r, i, c]
        elif a == 0.0:
            y[r, i, c] = b * x[r, i, c]
        elif a == 1.0:
            y[r, i, c] = y[r, i, c] + b * x[r, i, c]
        else:
            y[r, i, c] = a * y[r, i, c] + b * x[r, i, c]

    @cuda.jit
    def source_add_k(f, static, has_static, fr1, fr2, has_rfe, alpha, dt, i0, i1, c0, c1):  # pragma: no cover
        c, i, r = cuda.grid(3)
        c += c0
        i += i0
        if c >= c1 or i >= i1 or r >= f.shape[0]:
            return
        src = 0.0
        if has_static:
            src = src + static[i, c]
        if has_rfe:
            src = src + ((1.0 - alpha) * fr1[r, i, c] + alpha * fr2[r, i, c])
        f[r, i, c] += dt * src

    return {
        "advect_stage": advect_stage_k,
        "adv_pole_terms": adv_pole_terms_k,
        "diff_pole_terms": diff_pole_terms_k,
        "cap_sums": cap_sums_k,
        "diff_stage": diff_stage_k,
        "att_flow_fill": att_flow_fill_k,
        "lf_alpha": lf_alpha_k,
        "cfl_kappa": cfl_kappa_k,
        "ptl_max": ptl_max_k,
        "ptl_tau": ptl_tau_k,
        "diag_rows": diag_rows_k,
        "scaled_add": scaled_add_k,
        "source_add": source_add_k,
    }


# ---------------------------------------------------------------- launchers ---
# Each takes the backend ("gpu" or "sim") first, then the CPU kernel's arguments.


def advect_stage(backend: str, x, f0, out, vt, vp, at, ap, kind_t, wt, weno_p, wpt, sth, st_i, dt_i, dp_i,
                 i0, i1, c0, c1, a, b, cdt, upwind, apole_n, apole_s, inorth, isouth) -> None:  # fmt: skip
    """``out = a*f0 + b*x - cdt*A(x)`` on the owned cells (see :func:`kernels.flux.advect_stage`)."""
    grid, block = _cells(c1 - c0, i1 - i0, x.shape[0])
    launch(
        _kernels()["advect_stage"], grid, block, backend, x, f0, out, vt, vp, at, ap, kind_t, wt, bool(weno_p), wpt,
        sth, st_i, dt_i, dp_i, i0, i1, c0, c1, float(a), float(b), float(cdt), float(upwind), apole_n, apole_s,
        inorth, isouth,
    )  # fmt: skip


def adv_pole_terms(backend: str, x, vt, dp, q, c0, c1, upwind, out) -> None:
    """Upwind theta flux x ``dp`` at face row ``q`` per owned column (cap sums)."""
    grid, block = _line(c1 - c0, x.shape[0], 128)
    launch(_kernels()["adv_pole_terms"], grid, block, backend, x, vt, dp, q, c0, c1, float(upwind), out)


def diff_pole_terms(backend: str, x, dcoef, pole, dp, ia, ib, c0, c1, out) -> None:
    """``(2 D_r + pole) * (x[ib] - x[ia]) * dp`` per owned column (cap sums)."""
    grid, block = _line(c1 - c0, x.shape[0], 128)
    launch(_kernels()["diff_pole_terms"], grid, block, backend, x, dcoef, pole, dp, ia, ib, c0, c1, out)


def cap_sums(backend: str, terms, na: int, fac_a: float, sign_a: float, out_a, fac_b: float, sign_b: float,
             out_b) -> None:  # fmt: skip
    """Row sums of ``terms`` in column order: row ``r < na`` -> ``out_a[r] = sign_a (s fac_a)``, the rest: ``out_b``."""
    width = _fit(terms.shape[0], 32)  # one thread per row, a 1-D launch
    blocks = max(1, -(-terms.shape[0] // width))
    launch(
        _kernels()["cap_sums"], blocks, width, backend, terms, na, float(fac_a), float(sign_a), out_a, float(fac_b),
        float(sign_b), out_b,
    )  # fmt: skip


def diff_stage(backend: str, x, xm2, u0, y0, out, dcoef, phi_face, theta_face, var, s2, c2r, c4r, b1, b5,
               i0, i1, c0, c1, mu, nu, kap, mt, gam, lpn, lps, inorth, isouth, mode) -> None:  # fmt: skip
    """Five-point operator alone or fused with a super-time-step stage (uniform or varying diffusivity)."""
    grid, block = _cells(c1 - c0, i1 - i0, x.shape[0])
    launch(
        _kernels()["diff_stage"], grid, block, backend, x, xm2, u0, y0, out, dcoef, phi_face, theta_face, bool(var),
        s2, c2r, c4r, b1, b5, i0, i1, c0, c1, float(mu), float(nu), float(kap), float(mt), float(gam), lpn, lps,
        inorth, isouth, int(mode),
    )  # fmt: skip


def att_flow_fill(backend: str, vt, vp, vt_prof, vp_prof, vt_base, vp_base, has_base, f, inv_b0, attenuate,
                  i0, i1, c0, c1, att_lo, att_hi) -> None:  # fmt: skip
    """Profiles (+ longitude-dependent flows) on every cell, attenuated by ``1 - tanh(max|f| / B0)``."""
    nr, ny, nx = vt.shape
    grid, block = _cells(nx, ny, nr)
    launch(
        _kernels()["att_flow_fill"], grid, block, backend, vt, vp, vt_prof, vp_prof, vt_base, vp_base,
        bool(has_base), f, inv_b0, bool(attenuate), i0, i1, c0, c1, att_lo, att_hi,
    )  # fmt: skip


def lf_alpha(backend: str, vt, vp, at, ap, jrow, nt, nrows, i0, i1, c0, c1) -> None:
    """Local Lax-Friedrichs speeds on the owned cells."""
    grid, block = _cells(c1 - c0, i1 - i0, vt.shape[0])
    launch(_kernels()["lf_alpha"], grid, block, backend, vt, vp, at, ap, jrow, nt, nrows, i0, i1, c0, c1)


def cfl_kappa(backend: str, vt, vp, dt_i, st_i, dp_i, ia, ib, c0, c1, out) -> None:
    """Largest advective rate over rows ``ia..ib-1`` into ``out[0]`` (which the caller zeroes)."""
    grid, block = _cells(c1 - c0, ib - ia, vt.shape[0])
    launch(_kernels()["cfl_kappa"], grid, block, backend, vt, vp, dt_i, st_i, dp_i, ia, ib, c0, c1, out)


def ptl_max(backend: str, y, x, i0, i1, c0, c1, out) -> None:
    """Largest ``|y|`` where ``|x| > 1e-14`` into ``out[0]`` (initialised to -1 by the caller)."""
    grid, block = _cells(c1 - c0, i1 - i0, y.shape[0])
    launch(_kernels()["ptl_max"], grid, block, backend, y, x, i0, i1, c0, c1, out)


def ptl_tau(backend: str, y, x, m, ia, ib, c0, c1, out) -> None:
    """Smallest PTL candidate at cells with ``|y| == m`` into ``out[0]`` (initialised to HUGE)."""
    grid, block = _cells(c1 - c0, ib - ia, y.shape[0])
    launch(_kernels()["ptl_tau"], grid, block, backend, y, x, float(m), ia, ib, c0, c1, out)


def diag_rows(backend: str, x, wt, wp, cosw, sinw, i0, i1, c0, c1, out) -> None:
    """The ten per-row diagnostic quantities of every owned row into ``out`` ``(nr, i1 - i0, 10)``."""
    grid, block = _line(i1 - i0, x.shape[0], 32)
    launch(_kernels()["diag_rows"], grid, block, backend, x, wt, wp, cosw, sinw, i0, i1, c0, c1, out)


def scaled_add(backend: str, y, a: float, x, b: float) -> None:
    """``y = a*y + b*x`` on the whole array (``x`` unread when ``b == 0``)."""
    nr, ny, nx = y.shape
    grid, block = _cells(nx, ny, nr)
    launch(_kernels()["scaled_add"], grid, block, backend, y, float(a), x, float(b))


def source_add(backend: str, f, static, has_static, fr1, fr2, has_rfe, alpha, dt, i0, i1, c0, c1) -> None:
    """``f += dt * (static + (1 - alpha) fr1 + alpha fr2)`` on the owned cells."""
    grid, block = _cells(c1 - c0, i1 - i0, f.shape[0])
    launch(
        _kernels()["source_add"], grid, block, backend, f, static, bool(has_static), fr1, fr2, bool(has_rfe),
        float(alpha), float(dt), i0, i1, c0, c1,
    )  # fmt: skip
