"""Advection in flux form (section 4) and its time integrators (section 5).

Each stage fills the halo of its input, reduces the two polar-cap fluxes along
the pole rows, and applies one fused Numba kernel (WENO3 or upwind fluxes, the
divergence and the stage combination) on the owned cells.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hpcml.apps.flux.grid import PI

if TYPE_CHECKING:
    from hpcml.apps.flux.solver import FluxSolver
    from hpcml.distarray import DistArray

__all__ = ["Advection"]

THIRD = 1.0 / 3.0
TWO_THIRDS = 2.0 / 3.0
SIXTH = 1.0 / 6.0


class Advection:
    """Stage kernels and integrators for one rank's block."""

    def __init__(self, s: FluxSolver) -> None:
        self.s = s
        g, lay = s.grid, s.lay
        self.fac_n = 2.0 / (PI * g.dth[2])
        self.fac_s = 2.0 / (PI * g.dth[g.Nt])
        self.terms = np.zeros((2 * lay.nr, lay.nx))
        self.zero = np.zeros(lay.nr)
        from hpcml.kernels.flux import advect_scratch, row_chunks

        self.n_stages = 0
        self.nch = row_chunks(lay.ny)
        self.scratch = advect_scratch(lay.nx)

    def _caps(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cap divergences ``A[1]`` and ``A[N_t]`` per realization (row reductions)."""
        from hpcml.kernels.flux import adv_pole_terms

        s, lay = self.s, self.s.lay
        nr = lay.nr
        vt, up, dp = s.flows.vt, s.prm.upwind, s.geo["dp"]
        an = as_ = self.zero
        if lay.owns_north and lay.owns_south:
            adv_pole_terms(x, vt, dp, lay.inorth + 1, lay.c0, lay.c1, up, self.terms[:nr])
            adv_pole_terms(x, vt, dp, lay.isouth, lay.c0, lay.c1, up, self.terms[nr:])
            sums = lay.row_sum(self.terms)
            an, as_ = sums[:nr] * self.fac_n, -(sums[nr:] * self.fac_s)
        elif lay.owns_north:
            adv_pole_terms(x, vt, dp, lay.inorth + 1, lay.c0, lay.c1, up, self.terms[:nr])
            an = lay.row_sum(self.terms[:nr]) * self.fac_n
        elif lay.owns_south:
            adv_pole_terms(x, vt, dp, lay.isouth, lay.c0, lay.c1, up, self.terms[:nr])
            as_ = -(lay.row_sum(self.terms[:nr]) * self.fac_s)
        return an, as_

    def stage(self, x: DistArray, f0: DistArray, out: DistArray, a: float, b: float, cdt: float) -> None:
        """``out = a*f0 + b*x - cdt*A(x)`` on the owned cells, then fill ``out``'s halo."""
        from hpcml.kernels.flux import advect_stage

        s, lay, geo, fl = self.s, self.s.lay, self.s.geo, self.s.flows
        an, as_ = self._caps(x.data)
        self.n_stages += 1
        advect_stage(
            x.data, f0.data, out.data, fl.vt, fl.vp, fl.at, fl.ap, geo["kind_t"], geo["weno_t"], s.prm.weno,
            geo["weno_p"], geo["sth"], geo["st_i"], geo["dt_i"], geo["dp_i"], lay.i0, lay.i1, lay.c0, lay.c1,
            a, b, cdt, s.prm.upwind, an, as_, lay.inorth, lay.isouth, self.nch, self.scratch,
        )  # fmt: skip
        s.exchange(out)

    def advance(self, dt: float) -> None:
        """Advance ``s.f`` by ``dt`` with the configured integrator (halos valid on entry and exit)."""
        s = self.s
        f, b1, b2 = s.f, s.work[0], s.work[1]
        scheme = s.prm.time_scheme
        if scheme == "ssprk43":
            half = 0.5 * dt
            self.stage(f, f, b1, 0.0, 1.0, half)
            self.stage(b1, b1, b2, 0.0, 1.0, half)
            self.stage(b2, f, b1, TWO_THIRDS, THIRD, SIXTH * dt)
            self.stage(b1, b1, f, 0.0, 1.0, half)
        elif scheme == "ssprk33":
            self.stage(f, f, b1, 0.0, 1.0, dt)
            self.stage(b1, f, b2, 0.75, 0.25, 0.25 * dt)
            self.stage(b2, f, f, THIRD, TWO_THIRDS, TWO_THIRDS * dt)
        else:
            self.stage(f, f, b1, 0.0, 1.0, dt)
            s.swap_field(b1, 0)
