"""History diagnostics (section 10.1) and flux balancing (section 8.3), split-independent.

Every rank computes compensated partial sums of its block; the partials of all
ranks are combined with :func:`math.fsum`, which rounds the exact total once, so
the result does not depend on how the sphere or the ensemble is split.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml.apps.flux.fields import soccer_u0
from hpcml.apps.flux.grid import D2R, KMS_TO_RSH, PI, RSUN2, TWOPI

if TYPE_CHECKING:
    from hpcml.apps.flux.state import FluxContext, FluxState

__all__ = ["Diagnostics"]

N_SUMS = 11  # F+, F-, NP+, NP-, SP+, SP-, e1, e2, axial, err_num, err_den
DIPOLE = 3.0 / (4.0 * PI)


class Diagnostics:
    """Computes history rows; results land on world rank 0."""

    def __init__(self, s: FluxContext) -> None:
        self.s = s
        g, lay = s.grid, s.lay
        j = lay.j_of_row
        ok = (j >= 1) & (j <= g.Nt)
        jj = np.where(ok, j, 1)
        lim = s.cfg["output"]["pole_flux_lat_limit"] * D2R
        self.wt = np.where(ok, g.w_t[jj], 0.0)
        self.sdip = np.where(ok, g.sdip[jj], 0.0)
        self.cdip = np.where(ok, g.cdip[jj], 0.0)
        self.cap = np.where(ok & (g.t[jj] <= lim), 1.0, np.where(ok & (g.t[jj] >= PI - lim), -1.0, 0.0))
        self.wp = lay.cols(g.w_p)
        self.cosw = lay.cols(g.cos_w)
        self.sinw = lay.cols(g.sin_w)
        # Cap areas from the global weights (same on every rank, no communication).
        t = g.t[1 : g.Nt + 1]
        wt = g.w_t[1 : g.Nt + 1]
        wsum = math.fsum(g.w_p[2 : g.M])
        self.npole_area = RSUN2 * math.fsum(wt[t <= lim]) * wsum
        self.spole_area = RSUN2 * math.fsum(wt[t >= PI - lim]) * wsum
        self.mins = np.zeros((lay.nr, 3))
        self.sums = np.zeros((lay.nr, N_SUMS, 2))
        # the group's partials travel as one flat row per rank (see compute)
        self._send = np.zeros(self.mins.size + self.sums.size)
        self._recv = np.zeros((lay.group_comm.Get_size(), self._send.size)) if lay.group_root else None
        # The exact solution of the validation cases: a map times ``efac[r]`` (soccer), or
        # separable, ``ex_rows[i] * ex_cols[c]`` (Gaussians), which diag_partials forms per row.
        self.fex: np.ndarray | None = None
        self.ex_rows = np.zeros(1)
        self.ex_cols = np.zeros(1)
        self.efac = np.ones(lay.nr)
        kind = s.prm.kind
        self.use_ex = kind in ("soccer", "gaussians")
        self.separable = kind == "gaussians"
        if kind == "soccer":
            self.fex = np.zeros((lay.NY, lay.NX))
            # the exact solution uses the un-averaged field, with the seam at p_1
            t = g.t[lay.t0 + 1 : lay.t0 + lay.ny + 1][:, None]
            p = lay.cols(g.p_rep)[lay.c0 : lay.c1][None, :]
            self.fex[lay.i0 : lay.i1, lay.c0 : lay.c1] = soccer_u0(t, p)
        if kind == "gaussians":
            self.th_rows = np.where(ok, g.t[jj], 0.0)
            self.sti_rows = np.where(ok, g.st_i[jj], 0.0)
            self.ph_cols = lay.cols(g.p_rep)
            self.ex_rows = np.zeros(self.th_rows.shape[0])
            self.ex_cols = np.zeros(self.ph_cols.shape[0])
        self.seconds = 0.0
        self.d_rows = None  # device buffers of the per-row quantities (GPU runs)

    # -- exact solutions ------------------------------------------------------------------
    def _exact(self, time: float) -> None:
        s = self.s
        prm = s.prm
        dtau = time - prm.t_start
        if prm.kind == "soccer":
            if prm.advance_diffusion:
                self.efac = np.exp(-42.0 * prm.diff_code[s.lay.r_start : s.lay.r_start + s.lay.nr] * dtau)
        else:
            from hpcml.kernels.flux import gaussian_factors

            vtt = prm.vt_const * KMS_TO_RSH * dtau
            vpt = prm.omega * KMS_TO_RSH * dtau
            ph1 = math.fmod(1.5707963267948966 + vpt, TWOPI)
            ph2 = math.fmod(4.71238898038469 + vpt, TWOPI)
            width = prm.cfg["initial"]["gaussian_width"]
            # separable: an exp per row and two per column, not two per cell (see the kernel)
            gaussian_factors(
                self.th_rows, self.sti_rows, self.ph_cols, 0.7853981633974483, vtt, ph1, ph2, width, self.ex_rows,
                self.ex_cols,
            )  # fmt: skip

    # -- rows ---------------------------------------------------------------------------
    def compute(self, st: FluxState, time: float | None = None, own: bool = False) -> np.ndarray | None:
        """History values ``(n_real, 14)`` of ``st.f`` at ``time`` (default ``st.time``) on world rank 0.

        Collective; None on the other ranks.  ``own``: only this ensemble group's
        realizations, ``(nr, 14)`` on the group's root (collective over the group), so
        that groups write their history rows in parallel; a realization's values are
        combined from the same partial sums either way (``math.fsum``: the same bits).
        """
        from hpcml.kernels.flux import diag_partials

        s, lay = self.s, self.s.lay
        time = st.time if time is None else time
        use_ex = self.use_ex
        if use_ex:
            self._exact(time)
        if s.dev.on_device and not use_ex:
            self._partials_on_device(st.f.data)
        else:
            x = st.host_data()  # the field itself on the CPU; validation runs on a GPU: a host copy
            diag_partials(
                x, self.fex if self.fex is not None else x[0], self.ex_rows, self.ex_cols, self.separable, self.efac,
                use_ex, self.wt, self.wp, self.cosw, self.sinw, self.sdip, self.cdip, self.cap, lay.i0, lay.i1,
                lay.c0, lay.c1, self.mins, self.sums,
            )  # fmt: skip
        comm = lay.group_comm if own else s.world
        if comm.Get_size() == 1:
            parts = [(lay.r_start, self.mins, self.sums)]
        elif own:
            # one group: every rank holds the same realizations, so a fixed-size Gather of
            # the raw partials (no pickling: 80 -> 15 us per history row on 2 ranks)
            self._send[: self.mins.size] = self.mins.ravel()
            self._send[self.mins.size :] = self.sums.ravel()
            comm.Gather(self._send, self._recv, root=0)
            if comm.Get_rank() != 0:
                return None
            k = self.mins.size
            shapes = self.mins.shape, self.sums.shape
            parts = [(lay.r_start, a[:k].reshape(shapes[0]), a[k:].reshape(shapes[1])) for a in self._recv]
        else:
            parts = comm.gather((lay.r_start, self.mins, self.sums), root=0)
            if parts is None:
                return None
        out = self._combine(parts)
        return out[lay.r_start : lay.r_start + lay.nr] if own else out

    def _partials_on_device(self, x: Any) -> None:
        """Per-row quantities on the device, one small copy, the compensated sums on the host."""
        from hpcml.kernels.flux import diag_accumulate
        from hpcml.kernels.flux_cuda import diag_rows

        lay, dev = self.s.lay, self.s.dev
        if self.d_rows is None:
            self.d_rows = dev.put(np.zeros((lay.nr, lay.ny, 10)))
            self.d_w = [dev.put(a) for a in (self.wt, self.wp, self.cosw, self.sinw)]
        diag_rows(dev.name, x, *self.d_w, lay.i0, lay.i1, lay.c0, lay.c1, self.d_rows)
        rows = dev.get(self.d_rows)
        diag_accumulate(rows, self.sdip, self.cdip, self.cap, lay.i0, self.mins, self.sums)

    def _combine(self, parts: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
        """History values of every realization from the ranks' ``(r_start, mins, sums)``.

        Each realization's sums are the ``math.fsum`` of all ranks' (sum, compensation)
        pairs, so the values do not depend on how the ranks split the sphere or the
        ensemble.
        """
        s = self.s
        n = s.prm.n_real
        lo, hi, amin = [math.inf] * n, [-math.inf] * n, [math.inf] * n
        terms: list[list[list[float]]] = [[[] for _ in range(N_SUMS)] for _ in range(n)]
        for r0, mins, sums in parts:  # plain lists: NumPy calls on these few values cost more
            for g, (m, pairs) in enumerate(zip(mins.tolist(), sums.tolist()), start=r0):
                lo[g] = min(lo[g], m[0])
                hi[g] = max(hi[g], m[1])
                amin[g] = min(amin[g], m[2])
                for acc, pair in zip(terms[g], pairs):
                    acc.extend(pair)
        out = np.zeros((n, 14))
        nt, nf = s.grid.Nt, s.grid.Nf
        for g, rows in enumerate(terms):
            tot = [math.fsum(t) for t in rows]
            e1, e2 = DIPOLE * tot[6], DIPOLE * tot[7]
            if self.use_ex:
                num, den = tot[9], tot[10]
                err = math.sqrt(num / den) if den != 0 else math.sqrt(num / (nt * nf))
            else:
                err = 0.0
            out[g] = (
                lo[g], hi[g], amin[g], RSUN2 * tot[0], RSUN2 * tot[1], RSUN2 * tot[2], RSUN2 * tot[3],
                RSUN2 * tot[4], RSUN2 * tot[5], self.npole_area, self.spole_area, math.sqrt(e1 * e1 + e2 * e2),
                DIPOLE * tot[8], err,
            )  # fmt: skip
        return out

    # -- flux balance -------------------------------------------------------------------
    def balance(self, x: np.ndarray) -> None:
        """Multiplicative flux balance of each realization of ``x`` (section 8.3), in place.

        Collective over the ensemble group.
        """
        from hpcml.kernels.flux import diag_partials, flux_rescale

        lay = self.s.lay
        diag_partials(
            x, x[0], self.ex_rows, self.ex_cols, False, self.efac, False, self.wt, self.wp, self.cosw, self.sinw,
            self.sdip, self.cdip, self.cap, lay.i0, lay.i1, lay.c0, lay.c1, self.mins, self.sums,
        )  # fmt: skip
        mine = np.ascontiguousarray(self.sums[:, 0:2, :])
        every = lay.group_comm.allgather(mine)
        for r in range(lay.nr):
            pos = math.fsum(v for part in every for v in part[r, 0])
            neg = math.fsum(v for part in every for v in part[r, 1])
            if pos + neg == 0.0 or neg == 0.0:
                continue
            q = math.sqrt(abs(pos / neg))
            flux_rescale(x[r], q, lay.i0, lay.i1, lay.c0, lay.c1)
