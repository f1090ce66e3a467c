"""Advection in flux form (section 4) and its time integrators (section 5).

Each stage fills the halo of its input, reduces the two polar-cap fluxes along
the pole rows, and applies one fused kernel (WENO3 or upwind fluxes, the
divergence and the stage combination) on the owned cells, on the solver's device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml.apps.flux.grid import PI

if TYPE_CHECKING:
    from hpcml.apps.flux.state import FluxContext, FluxState

__all__ = ["Advection", "PoleCaps"]

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
        self.s, self.fac_n, self.fac_s = s, fac_n, fac_s
        lay, dev = s.lay, s.dev
        nr = lay.nr
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
            out.append((1, lay.nr if lay.owns_north else 0))
        return out

    def reduce(self) -> tuple[Any, Any]:
        """Sum the terms (filled by the caller) into the cap values; ``(north, south)`` device arrays."""
        lay, dev = self.s.lay, self.s.dev
        held = self.rows()
        if not held:
            return self.zero, self.zero
        nr = lay.nr
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
        return self.terms[off : off + self.s.lay.nr]


class Advection:
    """Stage kernels and integrators for one rank's block (the flows are given per call)."""

    def __init__(self, s: FluxContext) -> None:
        self.s = s
        g, lay = s.grid, s.lay
        self.caps = PoleCaps(s, 2.0 / (PI * g.dth[2]), 2.0 / (PI * g.dth[g.Nt]))
        from hpcml.kernels.flux import advect_scratch, row_chunks

        self.n_stages = 0
        self.nch = row_chunks(lay.ny)
        self.scratch = advect_scratch(lay.nx)

    def _caps(self, x: Any, vt: Any) -> tuple[Any, Any]:
        """Cap divergences ``A[1]`` and ``A[N_t]`` per realization (row reductions)."""
        s, lay, geo = self.s, self.s.lay, self.s.dgeo
        up = s.prm.upwind
        for which, off in self.caps.rows():
            q = lay.inorth + 1 if which == 0 else lay.isouth
            s.dev.pole_terms("adv", x, vt, geo["dp"], q, lay.c0, lay.c1, up, self.caps.view(off))
        return self.caps.reduce()

    def stage(self, fl: Any, x: Any, f0: Any, out: Any, a: float, b: float, cdt: float) -> None:
        """``out = a*f0 + b*x - cdt*A(x)`` with the flows ``fl`` on the owned cells, then fill ``out``'s halo.

        A block alone in phi has the kernel fill the periodic phi halo row by row
        (``Device.phi_wrap``): on one rank of the 1cr case the separate fill took
        4 x 26 us a step.
        """
        s, lay, geo = self.s, self.s.lay, self.s.dgeo
        an, as_ = self._caps(x.data, fl.vt)
        self.n_stages += 1
        wrap = s.dev.phi_wrap(out)
        s.dev.advect_stage(
            x.data, f0.data, out.data, fl.vt, fl.vp, fl.at, fl.ap, geo["kind_t"], geo["weno_t"], s.prm.weno,
            geo["weno_p"], geo["sth"], geo["st_i"], geo["dt_i"], geo["dp_i"], lay.i0, lay.i1, lay.c0, lay.c1,
            a, b, cdt, s.prm.upwind, an, as_, lay.inorth, lay.isouth, self.nch, self.scratch, wrap=wrap,
        )  # fmt: skip
        if wrap:
            s.exchanges += 1  # filled by the kernel: still one exchange for the performance model
        else:
            s.exchange(out)

    def advance(self, st: FluxState, fl: Any, dt: float) -> None:
        """Advance ``st.f`` by ``dt`` with the flows ``fl`` (halos valid on entry and exit)."""
        f, b1, b2 = st.f, st.work[0], st.work[1]
        scheme = self.s.prm.time_scheme
        if scheme == "ssprk43":
            half = 0.5 * dt
            self.stage(fl, f, f, b1, 0.0, 1.0, half)
            self.stage(fl, b1, b1, b2, 0.0, 1.0, half)
            self.stage(fl, b2, f, b1, TWO_THIRDS, THIRD, SIXTH * dt)
            self.stage(fl, b1, b1, f, 0.0, 1.0, half)
        elif scheme == "ssprk33":
            self.stage(fl, f, f, b1, 0.0, 1.0, dt)
            self.stage(fl, b1, f, b2, 0.75, 0.25, 0.25 * dt)
            self.stage(fl, b2, f, f, THIRD, TWO_THIRDS, TWO_THIRDS * dt)
        else:
            self.stage(fl, f, f, b1, 0.0, 1.0, dt)
            st.swap_field(b1)
