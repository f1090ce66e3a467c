"""Sources (section 8 of the spec): a static source file and random flux emergence.

:class:`Sources` adds what the run has (HipFT's order: the file, then the emergence)
and applies ``f += dt * S`` on the owned cells.  The static source is a 2-D HipFT file
in G/h on its own grid, interpolated bilinearly onto the nodes as HipFT does (0 outside
its scales; the pole rows keep one value per column, as in HipFT).

Random flux emergence (section 8.2) is interpolated between frames.

Each frame is a field of standard normal draws (the same for every realization)
scaled per realization; the source is ``(1 - a) frame1 + a frame2`` with
``a = (time - t_prev) / lifetime``.  HipFT draws with gfortran's generator, which
cannot be reproduced from Python: here a NumPy ``PCG64`` stream seeded by
``source.seed`` draws the *global* field on every rank (each keeps its block), so
the source is the same for any decomposition and statistically equivalent to
HipFT's, not bit-identical.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml.apps.flux.grid import PI, RSUN2, TWOPI_INV

if TYPE_CHECKING:
    from hpcml.apps.flux.state import FluxContext, FluxState

__all__ = ["FluxEmergence", "Sources"]

log = logging.getLogger("hpcml.apps.flux")

GAUSS_SCALE = PI / np.sqrt(2.0 * PI)  # HipFT multiplies its normal draws by pi / sqrt(2 pi)
RANDOM_SEED = -9999  # HipFT's source_rfe_seed default: seed the generator from the clock


class FluxEmergence:
    """Two-frame random flux emergence for one rank's block (all its realizations)."""

    def __init__(self, s: FluxContext) -> None:
        from hpcml.apps.flux.diagnostics import Diagnostics

        self.s = s
        self.diag = Diagnostics(s)  # flux balance of the frames
        lay, g, prm = s.lay, s.grid, s.prm
        src = s.cfg["source"]
        self.lifetime = float(src["lifetime"])
        self.model = int(src["rfe_model"])
        self.seed = int(src["seed"])
        if self.seed == RANDOM_SEED:
            # HipFT's "no seed": a fresh seed, drawn on rank 0 so that every rank draws the same frames
            fresh = int(np.random.SeedSequence().entropy) % 2**63 if s.world.Get_rank() == 0 else None
            self.seed = int(s.world.bcast(fresh, root=0))
            if s.world.Get_rank() == 0:
                log.info("flux: source.seed = -9999 (HipFT: random); drew seed %d (set it to repeat a run)", self.seed)
        uf = prm.rfe_flux[lay.r_start : lay.r_start + lay.nr] * 1e21  # Mx/h per realization
        rows = np.arange(lay.t0 + 1, lay.t0 + lay.ny + 1)
        cols = np.arange(lay.p0 + 2, lay.p0 + lay.nx + 2)
        if self.model == 1:
            per_cell = uf / (RSUN2 * g.Nt * (g.M - 2))
            area = g.w_t[rows][:, None] * g.dp[cols][None, :]
            self.scale = per_cell[:, None, None] / area[None]
        else:
            self.scale = np.broadcast_to((uf / (RSUN2 * 4.0 * PI))[:, None, None], (lay.nr, lay.ny, lay.nx)).copy()
        # Pole rows: mean over k = 1..M-2, i.e. the seam column weighs dp_1 (not dp_{M-1}).
        w = g.dp[cols].copy()
        if cols[-1] == g.M - 1:
            w[-1] = g.dp[1]
        self.pole_w = w
        self.rng = np.random.Generator(np.random.PCG64(self.seed % 2**64))  # HipFT allows negative seeds
        self.t_prev = prm.t_start
        self.t_next = prm.t_start + self.lifetime
        # generator states before each frame was drawn: a restart redraws both frames
        self.st1 = self._snapshot()
        self.frame1 = self._frame()
        self.st2 = self._snapshot()
        self.frame2 = self._frame()

    # -- frames ---------------------------------------------------------------------------
    def _frame(self) -> np.ndarray:
        """Draw one frame (global draws, local block), average the poles, flux-balance it."""
        s, lay, g = self.s, self.s.lay, self.s.grid
        draws = self.rng.standard_normal((g.Nt, g.Np)) * GAUSS_SCALE  # identical on every rank
        block = draws[lay.t0 : lay.t0 + lay.ny, lay.p0 : lay.p0 + lay.nx]
        frame = s.lay.zeros()
        x = frame.data
        x[:, lay.i0 : lay.i1, lay.c0 : lay.c1] = block[None] * self.scale
        for row in (lay.inorth, lay.isouth):
            if row >= 0:
                terms = np.ascontiguousarray(x[:, row, lay.c0 : lay.c1] * self.pole_w[None, :])
                x[:, row, lay.c0 : lay.c1] = (lay.row_sum(terms) * TWOPI_INV)[:, None]
        self.diag.balance(x)
        return x

    def update(self, time: float) -> None:
        """Advance the frame pair when ``time`` has reached the next frame time."""
        while time >= self.t_next:
            self.t_prev = self.t_next
            self.t_next += self.lifetime
            self.frame1, self.st1 = self.frame2, self.st2
            self.st2 = self._snapshot()
            self.frame2 = self._frame()

    def cut(self, time: float, dt: float) -> tuple[float, bool]:
        """HipFT's time-step cut at frame changes (``min(next frame - time, lifetime / 2)``)."""
        if time + dt >= self.t_next:
            return min(self.t_next - time, 0.5 * self.lifetime), True
        return dt, False

    def alpha(self, time: float) -> float:
        """Interpolation weight of the second frame at ``time``: ``S = (1 - a) frame1 + a frame2``."""
        return (time - self.t_prev) / self.lifetime

    # -- checkpoints ----------------------------------------------------------------------
    def _snapshot(self) -> str:
        st = self.rng.bit_generator.state["state"]
        return f"{st['state']}:{st['inc']}"

    def _set(self, snap: str) -> None:
        state, inc = (int(v) for v in snap.split(":"))
        bg = self.rng.bit_generator.state
        bg["state"] = {"state": state, "inc": inc}
        bg["has_uint32"], bg["uinteger"] = 0, 0
        self.rng.bit_generator.state = bg

    def state(self) -> dict[str, Any]:
        """Replicated restart state: frame times and the generator states before each frame."""
        return {"t_prev": float(self.t_prev), "t_next": float(self.t_next), "rng1": self.st1, "rng2": self.st2}

    def restore(self, st: dict[str, Any]) -> None:
        """Redraw both frames from the saved generator states (bit-identical continuation)."""
        self.t_prev = float(st["t_prev"])
        self.t_next = float(st["t_next"])
        self.st1, self.st2 = str(st["rng1"]), str(st["rng2"])
        self._set(self.st1)
        self.frame1 = self._frame()
        self._set(self.st2)
        self.frame2 = self._frame()


class Sources:
    """What ``source.advance`` adds: the static file source and/or random flux emergence."""

    def __init__(self, s: FluxContext, field: Any = None) -> None:
        self.s = s
        lay, g = s.lay, s.grid
        self.rfe = FluxEmergence(s) if s.prm.rfe_model else None
        self.static = None  # (NY, NX), zero outside the owned cells; on the solver's device
        if field is not None:
            rows = np.arange(lay.t0 + 1, lay.t0 + lay.ny + 1)
            cols = np.arange(lay.p0 + 2, lay.p0 + lay.nx + 2)
            static = np.zeros((lay.NY, lay.NX))
            static[lay.i0 : lay.i1, lay.c0 : lay.c1] = field.at(g.t[rows], g.p[cols])
            self.static = s.dev.put(static)
        self._frames: tuple[Any, Any, Any] | None = None  # (host frame1, device frame1, device frame2)

    def update(self, time: float) -> None:
        """Advance the emergence frames to ``time``."""
        if self.rfe is not None:
            self.rfe.update(time)

    def cut(self, time: float, dt: float) -> tuple[float, bool]:
        """The emergence's time-step cut at frame changes (a static source cuts nothing)."""
        if self.rfe is not None:
            return self.rfe.cut(time, dt)
        return dt, False

    def _device_frames(self) -> tuple[Any, Any]:
        """The two emergence frames on the solver's device (uploaded when they change)."""
        rfe, dev = self.rfe, self.s.dev
        if self._frames is None or self._frames[0] is not rfe.frame1:
            self._frames = (rfe.frame1, dev.put(rfe.frame1), dev.put(rfe.frame2))
        return self._frames[1], self._frames[2]

    def apply(self, st: FluxState, time: float, dt: float) -> None:
        """``st.f += dt * S(time)`` on the owned cells, then refresh the halo (collective)."""
        s, lay = self.s, self.s.lay
        fr1 = fr2 = None
        alpha = 0.0
        if self.rfe is not None:
            fr1, fr2 = self._device_frames()
            alpha = self.rfe.alpha(time)
        s.dev.source_add(st.f.data, self.static, fr1, fr2, alpha, dt, (lay.i0, lay.i1, lay.c0, lay.c1))
        s.exchange(st.f)

    def state(self) -> dict[str, Any]:
        """Restart state (the emergence's frames; a static source has none)."""
        return self.rfe.state() if self.rfe is not None else {}

    def restore(self, st: dict[str, Any]) -> None:
        """Continue from a checkpoint's state."""
        if self.rfe is not None and st:
            self.rfe.restore(st)
