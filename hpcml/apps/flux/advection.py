"""Advection in flux form (section 4) and its time integrators (section 5).

Each stage fills the halo of its input, reduces the two polar-cap fluxes along
the pole rows, and applies one fused kernel (WENO3 or upwind fluxes, the
divergence and the stage combination) on the owned cells, on the solver's device.

A block that holds whole realizations on the CPU (alone in its ensemble group, so no
stage needs a halo exchange) advances a whole step in one kernel call
(:func:`hpcml.kernels.flux.advect_step`), group by group: all stages of a step for the
first few realizations, then the next few (:func:`realization_groups`), instead of each
stage over every realization.  Realizations do not interact within a step, so the bits
are the same; a group's field, stage buffers and flows stay in the cache from one stage
to the next.  One stage of the 1cr case streams seven 2.7 MB arrays over 5
realizations, more than a 2-core share of the L3 holds: 4 stages, 1 rank x 1 thread,
13.4-14.4 ms a step stage by stage, 11.5-12.2 ms one realization at a time (2 threads:
6.6-8.8 against 5.6-6.6 ms; session 14, Zen 3 host).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml.apps.flux.grid import PI

if TYPE_CHECKING:
    from hpcml.apps.flux.state import FluxContext, FluxState

__all__ = ["ADVECT_GROUP_BYTES", "Advection", "PoleCaps", "realization_groups", "stage_table"]

#: Bytes of field, stage buffers and flows per realization group of the grouped advance
#: (:func:`realization_groups`): a group of 1cr (180 x 360, 3.8 MB) is one realization.
ADVECT_GROUP_BYTES = 4 << 20
#: Arrays one realization's advection step touches: field, two stage buffers, four flows.
ADVECT_ARRAYS = 7

THIRD = 1.0 / 3.0
TWO_THIRDS = 2.0 / 3.0
SIXTH = 1.0 / 6.0


class PoleCaps:
    """Cap values of the two pole rows per realization, from per-column terms summed along the row.

    The terms are formed on the device; the row sums run in HipFT's column order
    (bit-identical for every split).  When the pole row lies on one rank they are
    summed by one device call into persistent cap arrays (no host round trip, no
    temporaries); otherwise the terms go through the host and
    :meth:`Layout.row_sum <hpcml.apps.flux.layout.Layout.row_sum>`.
    The results are device arrays ``north[r]``, ``south[r]`` (HipFT's sign: the south
    value is minus its sum).
    """

    def __init__(self, s: FluxContext, fac_n: float, fac_s: float) -> None:
        """Caps of the block's realizations, scaled by ``fac_n`` / ``fac_s``."""
        self.s, self.fac_n, self.fac_s = s, fac_n, fac_s
        lay, dev = s.lay, s.dev
        nr = self.nr = lay.nr
        both = lay.owns_north and lay.owns_south
        self.terms = dev.put(np.zeros((2 * nr if both else nr, lay.nx)))
        self.zero = dev.put(np.zeros(nr))
        self.north = dev.put(np.zeros(nr))
        self.south = dev.put(np.zeros(nr))
        self.local_sums = lay.row_comm.Get_size() == 1  # else: through the host

    def rows(self) -> list[tuple[int, int]]:
        """``(which, offset)`` for each pole row this block holds: 0 = north, 1 = south, terms offset."""
        lay = self.s.lay
        out = []
        if lay.owns_north:
            out.append((0, 0))
        if lay.owns_south:
            out.append((1, self.nr if lay.owns_north else 0))
        return out

    def reduce(self) -> tuple[Any, Any]:
        """Sum the terms (filled by the caller) into the cap values; ``(north, south)`` device arrays."""
        lay, dev = self.s.lay, self.s.dev
        held = self.rows()
        if not held:
            return self.zero, self.zero
        nr = self.nr
        if self.local_sums:
            outs = [(self.fac_n, 1.0, self.north) if w == 0 else (self.fac_s, -1.0, self.south) for w, _ in held]
            dev.cap_sums(self.terms, nr, *outs[0], *outs[-1])
            return (self.north if lay.owns_north else self.zero), (self.south if lay.owns_south else self.zero)
        sums = lay.row_sum(np.ascontiguousarray(dev.get(self.terms)))
        north, south = self.zero, self.zero
        for which, off in held:
            part = sums[off : off + nr]
            if which == 0:
                north = dev.put(part * self.fac_n) if dev.on_device else part * self.fac_n
            else:
                south = dev.put(-(part * self.fac_s)) if dev.on_device else -(part * self.fac_s)
        return north, south

    def view(self, off: int) -> Any:
        """The terms rows of one pole (``off`` from :meth:`rows`)."""
        return self.terms[off : off + self.nr]


def realization_groups(nr: int, cells: int, budget: int = ADVECT_GROUP_BYTES) -> list[slice]:
    """Realizations ``0..nr-1`` in consecutive groups of ``budget // (ADVECT_ARRAYS * 8 * cells)`` (at least 1).

    ``cells``: ghosted cells of one realization's block.  Groups are as even as the
    count allows (7 realizations of budget 3 -> 3, 2, 2), so no group is a short tail.
    """
    per = max(1, budget // (ADVECT_ARRAYS * 8 * max(cells, 1)))
    n = -(-nr // per)  # groups
    return [slice((nr * g) // n, (nr * (g + 1)) // n) for g in range(n)]


#: One explicit stage: ``(x, f0, out, a, b, cdt)`` (buffer indices and coefficients), see :func:`stage_table`
Stage = tuple[int, int, int, float, float, float]


def stage_table(scheme: str, dt: float) -> list[Stage]:
    """The stages of one step: ``(x, f0, out, a, b, cdt)`` for ``out = a*f0 + b*x - cdt*A(x)``.

    Buffers: 0 the field, 1 and 2 the two work buffers.  SSPRK(4,3) and SSPRK(3,3)
    end in the field; forward Euler ends in buffer 1 (the caller swaps it in).
    """
    if scheme == "ssprk43":
        half = 0.5 * dt
        return [(0, 0, 1, 0.0, 1.0, half), (1, 1, 2, 0.0, 1.0, half), (2, 0, 1, TWO_THIRDS, THIRD, SIXTH * dt),
                (1, 1, 0, 0.0, 1.0, half)]  # fmt: skip
    if scheme == "ssprk33":
        return [
            (0, 0, 1, 0.0, 1.0, dt),
            (1, 0, 2, 0.75, 0.25, 0.25 * dt),
            (2, 0, 0, THIRD, TWO_THIRDS, TWO_THIRDS * dt),
        ]
    return [(0, 0, 1, 0.0, 1.0, dt)]


class Advection:
    """Stage kernels and integrators for one rank's block (the flows are given per call)."""

    def __init__(self, s: FluxContext) -> None:
        self.s = s
        g, lay = s.grid, s.lay
        self.fac = (2.0 / (PI * g.dth[2]), 2.0 / (PI * g.dth[g.Nt]))
        self.caps = PoleCaps(s, *self.fac)
        from hpcml.kernels.flux import advect_scratch, row_chunks

        self.n_stages = 0
        self.nch = row_chunks(lay.ny)
        self.scratch = advect_scratch(lay.nx)
        self.group_bytes = ADVECT_GROUP_BYTES
        #: whole steps in one kernel call where the block allows (:meth:`_step`); False: stage by stage
        self.fused = True
        self._fixed: dict[tuple[str, int], tuple[np.ndarray, ...]] = {}
        self.cap_n = np.zeros(lay.nr)
        self.cap_s = np.zeros(lay.nr)

    def _caps(self, x: Any, vt: Any, caps: PoleCaps) -> tuple[Any, Any]:
        """Cap divergences ``A[1]`` and ``A[N_t]`` per realization of ``x`` (row reductions)."""
        s, lay, geo = self.s, self.s.lay, self.s.dgeo
        up = s.prm.upwind
        for which, off in caps.rows():
            q = lay.inorth + 1 if which == 0 else lay.isouth
            s.dev.pole_terms("adv", x, vt, geo["dp"], q, lay.c0, lay.c1, up, caps.view(off))
        return caps.reduce()

    def stage(self, fl: Any, x: Any, f0: Any, out: Any, a: float, b: float, cdt: float) -> None:
        """``out = a*f0 + b*x - cdt*A(x)`` with the flows ``fl`` on the owned cells, then fill ``out``'s halo.

        A block alone in phi has the kernel fill the periodic phi halo row by row
        (``Device.phi_wrap``): on one rank of the 1cr case the separate fill took
        4 x 26 us a step.
        """
        s, lay, geo = self.s, self.s.lay, self.s.dgeo
        wrap = s.dev.phi_wrap(out)
        vt, vp, at, ap = fl.vt, fl.vp, fl.at, fl.ap
        self.n_stages += 1
        an, as_ = self._caps(x.data, vt, self.caps)
        s.dev.advect_stage(
            x.data, f0.data, out.data, vt, vp, at, ap, geo["kind_t"], geo["weno_t"], s.prm.weno,
            geo["weno_p"], geo["sth"], geo["st_i"], geo["dt_i"], geo["dp_i"], lay.i0, lay.i1, lay.c0, lay.c1,
            a, b, cdt, s.prm.upwind, an, as_, lay.inorth, lay.isouth, self.nch, self.scratch, wrap=wrap,
        )  # fmt: skip
        if wrap:
            s.exchanges += 1  # filled by the kernel: still one exchange for the performance model
        else:
            s.exchange(out)

    def advance(self, st: FluxState, fl: Any, dt: float) -> None:
        """Advance ``st.f`` by ``dt`` with the flows ``fl`` (halos valid on entry and exit)."""
        bufs = (st.f, st.work[0], st.work[1])
        table = stage_table(self.s.prm.time_scheme, dt)
        if self.fused and self._step(bufs, fl, table):
            self.n_stages += len(table)  # the kernel filled every halo: count as the model does
            self.s.exchanges += len(table)
        else:
            for x, f0, out, a, b, cdt in table:
                self.stage(fl, bufs[x], bufs[f0], bufs[out], a, b, cdt)
        if table[-1][2] != 0:  # forward Euler ends in a work buffer
            st.swap_field(bufs[table[-1][2]])

    def _step(self, bufs: tuple[Any, Any, Any], fl: Any, table: list[Stage]) -> bool:
        """Every stage of the step in one device call (:func:`hpcml.kernels.flux.advect_step`); False if not possible.

        Possible for a block holding whole realizations (``phi_wrap``, both poles) on a
        device with that kernel: the kernel sums the caps itself and no stage exchanges
        a halo.  Realizations go in the groups of :meth:`groups`.
        """
        s, lay, geo = self.s, self.s.lay, self.s.dgeo
        wrap = s.dev.phi_wrap(bufs[0])
        if not wrap or not (lay.owns_north and lay.owns_south):
            return False
        key = (self.s.prm.time_scheme, self.group_bytes)
        fixed = self._fixed.get(key)
        if fixed is None:
            bounds = [0] + [g.stop for g in realization_groups(lay.nr, lay.NY * lay.NX, self.group_bytes)]
            cols = list(zip(*table))
            fixed = self._fixed[key] = (
                *(np.array(c, dtype=np.int64) for c in cols[:3]),
                np.array(bounds, dtype=np.int64),
            )
        src, base, dst, bounds = fixed
        coef = np.array([row[3:] for row in table]).T.copy()
        return s.dev.advect_step(
            bufs[0].data, bufs[1].data, bufs[2].data, fl.vt, fl.vp, fl.at, fl.ap, geo["kind_t"], geo["weno_t"],
            s.prm.weno, geo["weno_p"], geo["sth"], geo["st_i"], geo["dt_i"], geo["dp_i"], geo["dp"], lay.i0, lay.i1,
            lay.c0, lay.c1, s.prm.upwind, lay.inorth, lay.isouth, self.fac[0], self.fac[1], wrap, self.nch,
            self.scratch, src, base, dst, coef[0], coef[1], coef[2], bounds, self.cap_n, self.cap_s,
        )  # fmt: skip
