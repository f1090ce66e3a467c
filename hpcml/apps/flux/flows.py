"""Surface flows (section 3): model profiles, |B| attenuation, Lax-Friedrichs speeds, CFL.

The analytic models depend on latitude only, so each realization's flow is a
per-row profile (``v_theta`` on theta faces, ``v_phi`` on rows) computed once.
A rebuild broadcasts the profiles onto the block, attenuates with the current
field, exchanges halos, and recomputes the WENO3 Lax-Friedrichs speeds.  Flows
are rebuilt at the first step and then only when attenuation is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from mpi4py import MPI

from hpcml.apps.flux.grid import HUGE, KMS_TO_RSH, MS_TO_RSH, SAFETY, TINY

if TYPE_CHECKING:
    from hpcml.apps.flux.solver import FluxSolver

__all__ = ["Flows"]


class Flows:
    """Velocity and Lax-Friedrichs fields of one rank's block (all its realizations)."""

    def __init__(self, s: FluxSolver) -> None:
        self.s = s
        lay, g, prm = s.lay, s.grid, s.prm
        nr = lay.nr
        rsl = slice(lay.r_start, lay.r_start + nr)
        self.vel = lay.zeros(2)  # [v_theta; v_phi] stacked: one halo exchange
        self.alpha = lay.zeros(2)  # [alpha_theta; alpha_phi]
        self.vt, self.vp = self.vel.data[:nr], self.vel.data[nr:]
        self.at, self.ap = self.alpha.data[:nr], self.alpha.data[nr:]
        j = lay.j_of_row
        face_ok = (j >= 1) & (j <= g.nt)
        row_ok = (j >= 1) & (j <= g.Nt)
        jf = np.where(face_ok, j, 1)
        jr = np.where(row_ok, j, 1)
        sth, cth = g.sth[jf], g.cth[jf]
        st, ct = g.st[jr], g.ct[jr]
        vt = np.zeros((nr, lay.NY))
        vp = np.zeros((nr, lay.NY))
        if prm.mf_model == 1:
            p1, p3, p5 = (prm.mf[rsl, n][:, None] for n in range(3))
            c2 = cth * cth
            c3 = c2 * cth
            c5 = c2 * c2 * cth
            vt = vt - MS_TO_RSH * sth * (p1 * cth + p3 * c3 + p5 * c5)
        if prm.vt_const != 0:
            vt = vt + prm.vt_const * KMS_TO_RSH
        if prm.dr_model == 1:
            p0, p2, p4 = (prm.dr[rsl, n][:, None] for n in range(3))
            c2 = ct * ct
            vp = vp + MS_TO_RSH * st * (p0 + p2 * c2 + p4 * (c2 * c2))
        if prm.omega != 0:
            vp = vp + prm.omega * KMS_TO_RSH * st
        self.vt_prof = np.ascontiguousarray(np.where(face_ok, vt, 0.0))
        self.vp_prof = np.ascontiguousarray(np.where(row_ok, vp, 0.0))
        b0 = prm.att_b0[rsl]
        self.inv_b0 = np.where(b0 > 0, 1.0 / np.where(b0 > 0, b0, 1.0), HUGE)
        # owned faces 2..nt-1 (theta attenuation); face nt sits in the south ghost row
        own = np.arange(lay.i0, lay.i1)
        att = own[(j[own] >= 2) & (j[own] <= g.nt - 1)]
        self.att_lo, self.att_hi = (int(att[0]), int(att[-1]) + 1) if len(att) else (0, 0)
        self.th = np.zeros((nr, lay.NY, lay.NX)) if prm.attenuate else np.zeros((nr, 1, 1))
        self.needs_update = True
        self.dt_adv = 0.0

    @property
    def every_step(self) -> bool:
        """Whether the flows depend on the field (rebuilt every step)."""
        return bool(self.s.prm.attenuate)

    def rebuild(self) -> None:
        """Model flows + attenuation with the current field, halos, LF speeds and CFL step."""
        from hpcml.kernels.flux import flow_fill, lf_alpha

        s, lay = self.s, self.s.lay
        if s.prm.attenuate:
            # tanh(|f| / B0) once per cell (NumPy's SIMD tanh: ~8x Numba's scalar libm
            # call; element results do not depend on the array's extent)
            th = self.th
            np.abs(s.f.data, out=th)
            th *= self.inv_b0[:, None, None]
            np.tanh(th, out=th)
        flow_fill(
            self.vt, self.vp, self.vt_prof, self.vp_prof, self.th, bool(s.prm.attenuate),
            lay.i0, lay.i1, lay.c0, lay.c1, self.att_lo, self.att_hi,
        )  # fmt: skip
        s.exchange(self.vel)
        if s.prm.weno:
            lf_alpha(
                self.vt, self.vp, self.at, self.ap, lay.j_of_row, s.grid.nt, s.grid.Nt, lay.i0, lay.i1, lay.c0, lay.c1
            )
            s.exchange(self.alpha)
        self.dt_adv = self.stable_dt()
        self.needs_update = self.every_step

    def stable_dt(self) -> float:
        """Advective step limit of section 5 (global minimum over every realization)."""
        from hpcml.kernels.flux import cfl_kappa

        s, lay, g = self.s, self.s.lay, self.s.grid
        j = lay.j_of_row
        rows = np.arange(lay.i0, lay.i1)
        inner = rows[(j[rows] >= 2) & (j[rows] <= g.Nt - 1)]
        kap = 0.0
        if len(inner):
            geo = s.geo
            kap = cfl_kappa(
                self.vt,
                self.vp,
                geo["dt_i"],
                geo["st_i"],
                geo["dp_i"],
                int(inner[0]),
                int(inner[-1]) + 1,
                lay.c0,
                lay.c1,
            )
        kap = s.world.allreduce(kap, op=MPI.MAX)
        dt = SAFETY * (0.5 / max(kap, TINY))
        if s.prm.time_scheme == "ssprk43":
            dt *= 2.0
        if s.prm.strang:
            dt *= 2.0
        return dt
