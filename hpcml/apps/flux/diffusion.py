"""Diffusion on the sphere (section 6): operator, explicit limit, RKL2/RKG2 STS, PTL subcycling.

The diffusivity of realization ``r`` is ``D_r = coef_factor * coef_r``, plus, with a
diffusivity map or HipFT's grid term, a part that varies over the sphere and is
the same for every realization (:mod:`hpcml.apps.flux.diffusivity`).  The
five-point coefficients are products of per-row and per-column geometry factors
with ``D_r`` (plus the face values of the varying part) and are formed on the fly:
a uniform stage streams only the four STS vectors and writes one, a varying one
also streams the two face-diffusivity arrays; there are no coefficient arrays.

A block that holds whole realizations (one rank per ensemble group) with a uniform
diffusivity runs all the stages of a super-step in one compiled call on the CPU
(``kernels.flux.diff_sts_stages``): the same bits, without a Python round trip per stage.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from hpcml.apps.flux.advection import PoleCaps
from hpcml.apps.flux.diffusivity import VariableDiffusivity
from hpcml.apps.flux.grid import HUGE, PI, SAFETY

if TYPE_CHECKING:
    from hpcml.apps.flux.state import FluxContext, FluxState

__all__ = ["Diffusion", "sts_coefficients", "sts_stages"]

MAX_CYCLES = 59  # HipFT's automatic subcycling stops at 59 cycles


def sts_stages(method: str, tau: float, dt_e: float) -> int:
    """Number of super-time-step stages for a step ``tau`` (odd, at least 3)."""
    if method == "rkl2":
        s = math.ceil(0.5 * (math.sqrt(9.0 + 16.0 * tau / dt_e) - 1.0))
    else:
        s = math.ceil(0.5 * (math.sqrt(25.0 + 24.0 * tau / dt_e) - 3.0))
    s = max(s, 3)
    if s % 2 == 0:
        s += 1
    return s


def sts_coefficients(method: str, s: int) -> tuple[np.ndarray, ...]:
    """``mu, nu, mu_tilde, gamma_tilde`` (index = stage, 1..s) of RKL2 or RKG2 (fresh copies of kept arrays).

    Every diffusion cycle asks for them; the Python loops cost tens of microseconds a call.
    """
    return tuple(a.copy() for a in _sts_coefficients(method, s))


@functools.lru_cache(maxsize=256)
def _sts_coefficients(method: str, s: int) -> tuple[np.ndarray, ...]:
    mu, nu, mt, gt = (np.zeros(s + 1) for _ in range(4))
    b = np.zeros(s + 1)
    if method == "rkl2":
        w = 4.0 / (s * s + s - 2.0)
        b[0:3] = 1.0 / 3.0
        for j in range(3, s + 1):
            b[j] = (j * j + j - 2.0) / (2.0 * j * (j + 1.0))
        mt[1] = 4.0 / (3.0 * (s * s + s - 2.0))
        if s >= 2:
            mu[2], nu[2], mt[2], gt[2] = 1.5, -0.5, 1.5 * w, -w
        for j in range(3, s + 1):
            mu[j] = (b[j] / b[j - 1]) * (2.0 - 1.0 / j)
            nu[j] = (b[j] / b[j - 2]) * (1.0 / j - 1.0)
            mt[j] = mu[j] * w
            gt[j] = (b[j - 1] - 1.0) * mt[j]
    else:
        w = 6.0 / ((s + 4.0) * (s - 1.0))
        b[0], b[1], b[2] = 1.0, 1.0 / 3.0, 1.0 / 15.0
        for j in range(3, s + 1):
            b[j] = 4.0 * (j - 1.0) * (j + 4.0) / (3.0 * j * (j + 1.0) * (j + 2.0) * (j + 3.0))
        mt[1] = w
        if s >= 2:
            mu[2], nu[2], mt[2], gt[2] = 0.5, -0.1, 0.5 * w, 0.0
        for j in range(3, s + 1):
            mu[j] = (b[j] / b[j - 1]) * (2.0 + 1.0 / j)
            nu[j] = -(b[j] / b[j - 2]) * (1.0 + 1.0 / j)
            mt[j] = mu[j] * w
            gt[j] = (0.5 * j * (j + 1.0) * b[j - 1] - 1.0) * mt[j]
    return mu, nu, mt, gt


class Diffusion:
    """Operator, stable step and the diffusion advance of one rank's block."""

    def __init__(self, s: FluxContext, field: Any = None) -> None:
        self.s = s
        g, lay, dev = s.grid, s.lay, s.dev
        self.dcoef_host = np.ascontiguousarray(s.prm.diff_code[lay.r_start : lay.r_start + lay.nr])
        self.dcoef = dev.put(self.dcoef_host)
        self.caps = PoleCaps(s, 1.0 / (PI * g.dth[2] * g.dth[2]), 1.0 / (PI * g.dth[g.Nt] * g.dth[g.Nt]))
        self.var: VariableDiffusivity | None = None
        self.kvar: Any = None  # the varying diffusivity's arrays on the device
        if s.prm.diff_map or s.prm.diff_grid:
            self.var = VariableDiffusivity(g, lay, field, s.prm.diff_grid, s.prm.diff_factor)
            self.kvar = self.var.on(dev)
        zeros = np.zeros(lay.NX)
        self.pole_n = dev.put(self.var.pole_north if self.var is not None else zeros)
        self.pole_s = dev.put(self.var.pole_south if self.var is not None else zeros)
        self.dt_e = self.explicit_dt()
        self.last_s = 0
        self.cycles = 0
        self.n_stages = 0  # fused operator + STS stages (for the benchmark's traffic model)
        self.n_applies = 0  # operator-only applications (PTL and Y0)

    # -- geometry ------------------------------------------------------------------------
    @staticmethod
    def factors(g) -> dict[str, np.ndarray]:
        """Per-row and per-column factors of the five-point coefficients (1-based arrays)."""
        n, m = g.Nt, g.M
        s2 = g.st_i * g.st_i
        c2 = np.zeros(n + 2)
        c4 = np.zeros(n + 2)
        j = np.arange(2, n)
        c2[j] = g.sth[j] * g.dth_i[j] * g.dt_i[j] * g.st_i[j]
        c4[j] = g.sth[j + 1] * g.dth_i[j + 1] * g.dt_i[j] * g.st_i[j]
        b1 = np.zeros(m + 2)
        b5 = np.zeros(m + 2)
        k = np.arange(2, m)
        b1[k] = g.dph_i[k] * g.dp_i[k]
        b5[k] = g.dph_i[k + 1] * g.dp_i[k]
        return {"s2": s2, "c2": c2, "c4": c4, "b1": b1, "b5": b5}

    def explicit_dt(self) -> float:
        """Gershgorin limit ``0.95 * 2 / max(sum |c|)`` over interior cells and all realizations.

        Built from the global 1-D factors, so every rank gets the same value without communication.
        """
        g, prm = self.s.grid, self.s.prm
        if self.var is not None:
            return self._explicit_dt_var()
        fa = self.factors(g)
        j = np.arange(2, g.Nt)[:, None]
        k = np.arange(2, g.M)[None, :]
        lam = 0.0
        for d in np.unique(prm.diff_code):
            t = d * fa["s2"][j]
            k1 = t * fa["b1"][k]
            k5 = t * fa["b5"][k]
            k2 = d * fa["c2"][j]
            k4 = d * fa["c4"][j]
            k3 = -(k1 + k2 + k4 + k5)
            lam = max(lam, float(np.max(np.abs(k1) + np.abs(k2) + np.abs(k3) + np.abs(k4) + np.abs(k5))))
        return SAFETY * 2.0 / lam if lam > 0 else HUGE

    def _explicit_dt_var(self) -> float:
        """Gershgorin limit with a varying diffusivity: the block's rows, then a global maximum."""
        s, g, lay, v = self.s, self.s.grid, self.s.lay, self.var
        geo = s.geo
        j = lay.j_of_row
        rows = np.arange(lay.i0, lay.i1)
        rows = rows[(j[rows] >= 2) & (j[rows] <= g.Nt - 1)]
        cols = slice(lay.c0, lay.c1)
        lam = 0.0
        if len(rows):
            fw = v.phi_face[rows, lay.c0 : lay.c1]
            fe = v.phi_face[rows, lay.c0 + 1 : lay.c1 + 1]
            fn = v.theta_face[rows, cols]
            fs = v.theta_face[rows + 1, cols]
            s2, c2, c4 = geo["s2"][rows, None], geo["c2"][rows, None], geo["c4"][rows, None]
            b1, b5 = geo["b1"][None, cols], geo["b5"][None, cols]
            for d in np.unique(self.dcoef_host):
                k1 = (d + fw) * s2 * b1
                k5 = (d + fe) * s2 * b5
                k2 = (d + fn) * c2
                k4 = (d + fs) * c4
                k3 = -(k1 + k2 + k4 + k5)
                lam = max(lam, float(np.max(np.abs(k1) + np.abs(k2) + np.abs(k3) + np.abs(k4) + np.abs(k5))))
        # every realization counts, not only this group's: the step is global
        lam = s.world.allreduce(lam, op=MPI.MAX)
        return SAFETY * 2.0 / lam if lam > 0 else HUGE

    # -- operator pieces -------------------------------------------------------------------
    def _caps(self, x: Any) -> tuple[Any, Any]:
        s, lay = self.s, self.s.lay
        dp = s.dgeo["dp"]
        for which, off in self.caps.rows():
            pole, ia = (self.pole_n, lay.inorth) if which == 0 else (self.pole_s, lay.isouth - 1)
            s.dev.pole_terms("diff", x, self.dcoef, pole, dp, ia, ia + 1, lay.c0, lay.c1, self.caps.view(off))
        return self.caps.reduce()

    def apply(self, x: Any, out: Any) -> None:
        """``out = L(x)`` on the owned cells, then fill ``out``'s halo."""
        self.n_applies += 1
        xd = x.data
        self._kernel(xd, xd, xd, xd, out, 0.0, 0.0, 0.0, 0.0, 0.0, 0)

    def _kernel(self, x, xm2, u0, y0, out, mu, nu, kap, mt, gam, mode) -> None:
        """The fused stage kernel for this diffusivity (uniform per realization, or varying), then ``out``'s halo.

        A block alone in phi on the CPU has the kernel fill its phi halo row by row
        (:meth:`Device.phi_wrap`); otherwise the halo is exchanged after the kernel.
        """
        s = self.s
        lay, geo = s.lay, s.dgeo
        ln, ls = self._caps(x)
        wrap = s.dev.phi_wrap(out)
        s.dev.diff_stage(
            self.kvar, x, xm2, u0, y0, out.data, self.dcoef, geo["s2"], geo["c2"], geo["c4"], geo["b1"], geo["b5"],
            lay.i0, lay.i1, lay.c0, lay.c1, mu, nu, kap, mt, gam, ln, ls, lay.inorth, lay.isouth, mode, wrap=wrap,
        )  # fmt: skip
        if wrap:
            s.exchanges += 1  # filled by the kernel: still one exchange for the performance model
        else:
            s.exchange(out)

    def stage(self, x, xm2, u0, y0, out, mu, nu, kap, mt, gam, mode: int = 1) -> None:
        """One fused stage into ``out`` (DistArrays), then its halo (``mode``: see ``diff_stage``)."""
        self.n_stages += 1
        self._kernel(x.data, xm2.data, u0.data, y0.data, out, mu, nu, kap, mt, gam, mode)

    # -- time stepping -------------------------------------------------------------------
    def ptl(self, st: FluxState, tau_in: float, y: Any) -> float:
        """Practical time-step limit from ``y = L(f)`` (section 6.5; global over all ranks)."""
        s, lay, g = self.s, self.s.lay, self.s.grid
        x = st.f.data
        m = s.dev.ptl_max(y.data, x, lay.i0, lay.i1, lay.c0, lay.c1)
        m = s.world.allreduce(m, op=MPI.MAX)
        if m <= 0.0:
            return HUGE
        inner = lay.inner_rows(g.Nt)
        tau = HUGE
        if inner is not None:
            tau = s.dev.ptl_tau(y.data, x, m, *inner, lay.c0, lay.c1)
        tau = SAFETY * s.world.allreduce(tau, op=MPI.MIN)
        return max(tau, tau_in)

    def super_step(self, st: FluxState, tau: float, y: Any) -> None:
        """Advance ``st.f`` by ``tau``; ``y`` holds ``L(f)`` on entry (it becomes ``Y0``)."""
        s = self.s
        method = s.prm.diff_method
        u0 = st.f
        if method == "euler":
            n = max(1, math.ceil(tau / self.dt_e))
            h = tau / n
            cur = u0
            for i in range(n):
                out = st.work[i % 2] if cur is not st.work[i % 2] else st.work[(i + 1) % 2]
                self.stage(cur, cur, cur, cur, out, 1.0, 0.0, 0.0, h, 0.0)
                cur = out
            self.last_s = n
            st.swap_field(cur)
            return
        nst = sts_stages(method, tau, self.dt_e)
        mu, nu, mt, gt = sts_coefficients(method, nst)
        # Stages on increments v_j = u_j - u_0: L is linear and 1 - mu - nu + nu + mu = 1,
        # so v_j = mu v_{j-1} + nu v_{j-2} + mu~ tau L(v_{j-1}) + (mu~ + gamma~) Y0 with
        # v_0 = 0, v_1 = mu~_1 Y0: u_0 is not streamed by every stage (4 streams, not 5).
        y0 = y
        dev = s.dev
        w = st.work
        if self._all_stages(st, y0, nst, tau, mu, nu, mt, gt):
            self.last_s = nst
            st.swap_field(w[(4 - nst) % 3])  # where diff_sts_stages leaves u_s
            return
        dev.scaled_add(y0.data, tau, None, 0.0)  # Y0 = tau L(u0), pointwise (halo included)
        v1 = w[0]
        dev.scaled_add(v1.data, 0.0, y0.data, float(mt[1]))
        prev2, prev1 = v1, v1  # nu_2 multiplies v_0 = 0: pass v_1 with nu = 0
        free = [w[1], w[2]]
        for j in range(2, nst + 1):
            out = free.pop()
            nu_j = 0.0 if j == 2 else float(nu[j])
            self.stage(prev1, prev2, prev1, y0, out, float(mu[j]), nu_j, float(mt[j] + gt[j]), float(mt[j] * tau), 0.0,
                       mode=2)  # fmt: skip
            if prev2 is not prev1:
                free.append(prev2)
            prev2, prev1 = prev1, out
        dev.scaled_add(prev1.data, 1.0, u0.data, 1.0)  # u_s = u_0 + v_s (halo included)
        self.last_s = nst
        st.swap_field(prev1)

    def _all_stages(self, st: FluxState, y0: Any, nst: int, tau: float, mu: Any, nu: Any, mt: Any, gt: Any) -> bool:
        """The super-step in one device call when the block holds whole realizations (see ``diff_sts_stages``).

        ``Y0 = tau L(u0)``, ``v_1``, stages ``2..nst`` and ``u0 + v_nst``: the same bits as
        the scaled adds and the stage-by-stage loop; False (nothing done) where the
        device or the block cannot.  On one rank per ensemble group the loop's Python
        and dispatch cost (cap terms, cap sums and the stage, 30-70 us per stage) was a
        quarter of a 2-realization stage, and the three whole-array scaled adds cost
        1.4 ms a step on 1cr (1 rank x 1 thread) against their share of the kernel's
        sweep over planes in the cache.
        """
        s, lay, w = self.s, self.s.lay, st.work
        wrap = s.dev.phi_wrap(w[0])
        if not wrap or self.var is not None or not (lay.owns_north and lay.owns_south):
            return False
        geo = s.dgeo
        nu_j = nu.copy()
        nu_j[2] = 0.0  # nu_2 multiplies v_0 = 0
        done = s.dev.diff_sts_stages(
            w[0].data, w[1].data, w[2].data, y0.data, st.f.data, self.dcoef, geo["s2"], geo["c2"], geo["c4"],
            geo["b1"], geo["b5"], self.pole_n, self.pole_s, geo["dp"], self.caps.fac_n, self.caps.fac_s, lay.i0,
            lay.i1, lay.c0, lay.c1, lay.inorth, lay.isouth, mu, nu_j, mt * tau, mt + gt, nst, float(tau),
            float(mt[1]), wrap,
        )  # fmt: skip
        if done:
            self.n_stages += nst - 1
            s.exchanges += nst - 1  # the kernel fills the halos: still one exchange each for the model
        return done

    def advance(
        self, st: FluxState, dt: float, t_step: float, on_cycle: Callable[[float, int], None] | None = None
    ) -> None:
        """Diffuse ``st.f`` over ``dt``: fixed subcycles or automatic PTL cycles.

        ``on_cycle(elapsed, cycles_estimate)`` is called after every cycle (history rows
        with ``subcycle_rows``).
        """
        s = self.s
        y = st.ybuf
        nsub = s.prm.subcycles
        if nsub > 0:
            for _ in range(nsub):
                self.apply(st.f, y)
                self.super_step(st, dt / nsub, y)
            self.cycles = nsub
            return
        tau, elapsed, i = 0.0, 0.0, 1
        while True:
            self.apply(st.f, y)
            tau = self.ptl(st, tau, y)
            last = False
            if elapsed + tau >= dt:
                tau, last = dt - elapsed, True
            if i == MAX_CYCLES:
                tau, last = dt - elapsed, True
            before = elapsed
            self.super_step(st, tau, y)
            elapsed += tau
            if on_cycle is not None:
                on_cycle(t_step + elapsed, math.ceil((dt - before) / tau) if tau > 0 else 0)
            if last:
                break
            i += 1
        self.cycles = i
