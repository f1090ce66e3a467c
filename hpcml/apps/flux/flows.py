"""Surface flows (section 3): model profiles, files, rigid rotation, attenuation, LF speeds, CFL.

The analytic models depend on latitude only, so each realization's flow is a
per-row profile (``v_theta`` on theta faces, ``v_phi`` on rows) computed once.
Flows that vary with longitude -- the current pair of flow files and a rigid
rotation about a tilted axis -- form one field pair per block, shared by its
realizations, added to the profiles.  A rebuild broadcasts the profiles onto the
block (plus that pair), attenuates with the current field, exchanges halos, and
recomputes the WENO3 Lax-Friedrichs speeds.  Flows are rebuilt at the first step
and then every step when attenuation is on or the flows come from files.

When every realization of the block has the same flow (no attenuation, the same
profile parameters: an ensemble over diffusivities, say) the block holds one flow,
shape ``(1, NY, NX)``, that every realization reads: four fields instead of
``4 nr``, and an advection stage streams three arrays per realization instead of
seven (diffuse_advect_soccer's advection on 2 ranks: 4.3-4.95 -> 4.0-4.1 s).
Kernels index a flow with ``min(r, n_flow - 1)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI

from hpcml.apps.flux.flowfiles import FlowFiles
from hpcml.apps.flux.grid import HUGE, KMS_TO_RSH, MS_TO_RSH, SAFETY, TINY, SphereGrid
from hpcml.apps.flux.layout import Layout

if TYPE_CHECKING:
    from hpcml.apps.flux.state import FluxContext, FluxState

__all__ = ["Flows", "rigid_rotation", "shared_flow"]


class Flows:
    """Velocity and Lax-Friedrichs fields of one rank's block (all its realizations)."""

    def __init__(self, s: FluxContext, files: FlowFiles | None = None) -> None:
        self.s = s
        lay, g, prm = s.lay, s.grid, s.prm
        nr = lay.nr
        rsl = slice(lay.r_start, lay.r_start + nr)
        dev = s.dev
        self.shared = shared_flow(prm, rsl)
        nf = 1 if self.shared else nr  # flows held: one for every realization, or one each
        self.vel = s.new_field(2 * nf)  # [v_theta; v_phi] stacked: one halo exchange
        self.alpha = s.new_field(2 * nf)  # [alpha_theta; alpha_phi]
        self.vt, self.vp = self.vel.data[:nf], self.vel.data[nf:]
        self.at, self.ap = self.alpha.data[:nf], self.alpha.data[nf:]
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
        self.vt_prof = dev.put(np.ascontiguousarray(np.where(face_ok, vt, 0.0)[:nf]))
        self.vp_prof = dev.put(np.ascontiguousarray(np.where(row_ok, vp, 0.0)[:nf]))
        # Flows that vary with longitude (files, tilted rigid rotation): one (NY, NX) field pair
        # shared by the block's realizations, added to the per-row profiles.
        self.face_ok, self.row_ok = face_ok, row_ok
        self.files = files
        self.rigid = rigid_rotation(g, lay, prm.rigid_omega, prm.rigid_axis) if prm.rigid_omega != 0 else None
        self.has_base = self.files is not None or self.rigid is not None
        self.vt_base = dev.put(np.zeros((lay.NY, lay.NX)))
        self.vp_base = dev.put(np.zeros((lay.NY, lay.NX)))
        self._base_loaded = False
        b0 = prm.att_b0[rsl]
        inv_b0 = np.where(b0 > 0, 1.0 / np.where(b0 > 0, b0, 1.0), HUGE)
        self.inv_b0 = inv_b0 if not dev.on_device else dev.put(inv_b0)
        # owned faces 2..nt-1 (theta attenuation); face nt sits in the south ghost row
        own = np.arange(lay.i0, lay.i1)
        att = own[(j[own] >= 2) & (j[own] <= g.nt - 1)]
        self.att_lo, self.att_hi = (int(att[0]), int(att[-1]) + 1) if len(att) else (0, 0)
        # exp(-2|f| / B0) per cell for the attenuation (CPU: scratch of the fill; a GPU kernel computes it inline)
        self.th = np.zeros((nr, lay.NY, lay.NX)) if prm.attenuate and not dev.on_device else np.zeros((nr, 1, 1))
        self.needs_update = True
        self.dt_adv = 0.0

    @property
    def every_step(self) -> bool:
        """Whether the flows are rebuilt every step (they depend on the field, or come from files)."""
        return bool(self.s.prm.attenuate) or self.files is not None

    def host_m_per_s(self) -> tuple[np.ndarray, np.ndarray]:
        """Host copies of the ghosted ``(v_theta, v_phi)`` blocks in m/s, one per realization (for output)."""
        dev, nr = self.s.dev, self.s.lay.nr
        vt, vp = dev.get(self.vt), dev.get(self.vp)
        shape = (nr, *vt.shape[1:])  # a shared flow is every realization's
        return np.broadcast_to(vt, shape) / MS_TO_RSH, np.broadcast_to(vp, shape) / MS_TO_RSH

    def state(self) -> dict[str, Any]:
        """Restart state: the flow files' pair in use (nothing else: the flows are rebuilt)."""
        return self.files.state() if self.files is not None else {}

    def restore(self, st: dict[str, Any]) -> None:
        """Continue with a checkpoint's flow-file pair; the next step rebuilds the flows."""
        if self.files is not None and st:
            self.files.restore(st)
        self._base_loaded = False
        self.needs_update = True

    def _load_base(self) -> None:
        """The longitude-dependent flows: the current file pair plus the rigid rotation."""
        lay = self.s.lay
        vt = np.zeros((lay.NY, lay.NX))
        vp = np.zeros((lay.NY, lay.NX))
        if self.files is not None:
            vt, vp = self.files.read_block(lay)
        if self.rigid is not None:
            vt = vt + self.rigid[0]
            vp = vp + self.rigid[1]
        dev = self.s.dev
        self.vt_base = dev.put(np.where(self.face_ok[:, None], vt, 0.0))
        self.vp_base = dev.put(np.where(self.row_ok[:, None], vp, 0.0))
        self._base_loaded = True

    def rebuild(self, st: FluxState) -> None:
        """Model flows + attenuation with the field ``st.f``, halos, LF speeds and CFL step (at ``st.time``)."""
        s, lay = self.s, self.s.lay
        switched = self.files is not None and self.files.advance(st.time)
        if self.has_base and (switched or not self._base_loaded):
            self._load_base()
        bounds = (lay.i0, lay.i1, lay.c0, lay.c1, self.att_lo, self.att_hi)
        wrap = s.dev.phi_wrap(self.vel)  # a block alone in phi: the kernels fill the phi halos row by row
        s.dev.flows(self, st.f.data, bool(s.prm.attenuate), bounds, wrap)
        self._halo(self.vel, wrap)
        cfl = self._cfl_args()
        if s.prm.weno:  # the LF speeds and the block's largest rate in one sweep
            lf = (self.vt, self.vp, self.at, self.ap, s.dgeo["jrow"], s.grid.nt, s.grid.Nt, lay.i0, lay.i1, lay.c0,
                  lay.c1)  # fmt: skip
            if cfl is None:
                s.dev.lf_alpha(*lf, wrap=wrap)
                kap = 0.0
            else:
                kap = s.dev.lf_alpha_kappa(lf, cfl, wrap=wrap)
            self._halo(self.alpha, wrap)
        else:
            kap = s.dev.cfl_kappa(*cfl) if cfl is not None else 0.0
        self.dt_adv = self.stable_dt(kap)
        self.needs_update = self.every_step

    def _halo(self, fld: Any, wrap: int) -> None:
        """Exchange ``fld``'s halo unless the kernel filled it (``wrap``); counted either way, as the model does."""
        if wrap:
            self.s.exchanges += 1
        else:
            self.s.exchange(fld)

    def _cfl_args(self) -> tuple[Any, ...] | None:
        """:func:`~hpcml.kernels.flux.cfl_kappa`'s arguments for the block's interior rows (None if it has none)."""
        s, lay = self.s, self.s.lay
        inner = lay.inner_rows(s.grid.Nt)
        if inner is None:
            return None
        geo = s.dgeo
        return (self.vt, self.vp, geo["dt_i"], geo["st_i"], geo["dp_i"], *inner, lay.c0, lay.c1)

    def stable_dt(self, kap: float) -> float:
        """Advective step limit of section 5 from the block's largest rate ``kap`` (global over every realization)."""
        s = self.s
        if not math.isfinite(kap):  # a NaN velocity or field: say so instead of stepping by NaN
            raise FloatingPointError(f"flux: the advective rate on this rank is {kap} (a non-finite flow or field)")
        kap = s.world.allreduce(kap, op=MPI.MAX)
        dt = SAFETY * (0.5 / max(kap, TINY))
        if s.prm.time_scheme == "ssprk43":
            dt *= 2.0
        if s.prm.strang:
            dt *= 2.0
        return dt


def shared_flow(prm: Any, rsl: slice) -> bool:
    """Whether every realization in ``rsl`` has the same flow: no attenuation, equal profile parameters.

    Decided from the parameters alone, so every rank of an ensemble group agrees
    (the group exchanges the flow's halo together).  Flow files and a rigid rotation
    are the same for every realization anyway.
    """
    if prm.attenuate:
        return False
    for used, table in ((prm.mf_model == 1, prm.mf), (prm.dr_model == 1, prm.dr)):
        if used:
            rows = np.asarray(table)[rsl]
            if not (rows == rows[:1]).all():
                return False
    return True


def rigid_rotation(
    g: SphereGrid, lay: Layout, omega: float, axis: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Rigid rotation about the unit axis at colatitude/longitude ``axis`` (radians), on the block.

    The velocity is ``omega x r`` with ``|omega|`` such that the speed on the rotation's
    equator is ``omega`` km/s.  It is built from the stream function
    ``psi = omega (a . r) = omega (sin(al) sin(t) cos(p - be) + cos(al) cos(t))`` as
    ``v_theta = (1/sin t) d(psi)/d(phi)`` and ``v_phi = -d(psi)/d(theta)``, both as differences
    of ``psi`` between the corners of each face, so the discrete divergence of every
    cell is zero (up to rounding): a uniform field stays uniform and flux is only
    moved, never made.  ``axis = (0, 0)`` is the ordinary rotation ``v_phi = omega sin t``.
    Returns ``(v_theta, v_phi)`` in R_sun/h on the ghosted block (theta faces / phi faces).
    """
    w = omega * KMS_TO_RSH
    al, be = axis
    j = np.clip(lay.j_of_row, 1, g.nt)
    jn = np.clip(lay.j_of_row + 1, 1, g.nt)
    k = lay.k_of_col  # 2..M-1; k + 1 <= M

    def psi(t: np.ndarray, p: np.ndarray) -> np.ndarray:
        return w * (math.sin(al) * np.sin(t)[:, None] * np.cos(p[None, :] - be) + math.cos(al) * np.cos(t)[:, None])

    th, ph = g.th, g.ph
    vt = (psi(th[j], ph[k + 1]) - psi(th[j], ph[k])) / (np.sin(th[j])[:, None] * g.dp[k][None, :])
    dtn = th[jn] - th[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        vp = -(psi(th[jn], ph[k]) - psi(th[j], ph[k])) / dtn[:, None]
    return np.nan_to_num(vt), np.nan_to_num(vp)
