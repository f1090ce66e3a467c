"""The flux-transport driver: setup, the main loop of section 7, history and outputs.

One :class:`FluxSolver` lives on every rank.  It owns the block of ``B_r`` for its
ensemble group's realizations (a ghosted ``(nr, NY, NX)`` array), the flows, the
operators and the time-step state.  Global decisions (the time step, the
practical diffusion limit) are reductions over ``COMM_WORLD`` because all
realizations share one time step, as in HipFT.
"""

from __future__ import annotations

import logging
import time as _time
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.apps.flux.advection import Advection
from hpcml.apps.flux.diagnostics import Diagnostics
from hpcml.apps.flux.diffusion import Diffusion
from hpcml.apps.flux.fields import bipolar_map, gaussian_blobs, load_map_block, soccer_ball, soccer_u0
from hpcml.apps.flux.flows import Flows
from hpcml.apps.flux.grid import TWOPI_INV, SphereGrid, read_map_info
from hpcml.apps.flux.history import HistoryWriter
from hpcml.apps.flux.layout import Layout, choose_split
from hpcml.apps.flux.params import Params
from hpcml.config import ConfigError
from hpcml.distarray import DistArray

__all__ = ["FluxSolver"]

log = logging.getLogger("hpcml.apps.flux")


class FluxSolver:
    """Surface flux transport of an ensemble of realizations on the sphere.

    Parameters
    ----------
    config
        A full ``flux`` configuration (see ``hpcml/defaults/flux.toml``).
    comm
        Communicator of all ranks taking part (split into ensemble groups).
    """

    def __init__(self, config: dict[str, Any], comm: MPI.Comm | None = None) -> None:
        self.cfg = config
        self.world = MPI.COMM_WORLD if comm is None else comm
        self.prm = prm = Params(config)
        self.map_info = None
        if prm.map_path:
            self.map_info = info = read_map_info(prm.map_path, "grid.map")
            nt, nf = info.shape[-2], info.shape[-1]
            gen = (prm.res_nt, prm.res_np)
            if gen not in ((0, 0), (nt, nf)):
                raise ConfigError(
                    f"grid.map {prm.map_path!r} is {nt} x {nf} (theta x phi) but grid.res_nt x res_np = "
                    f"{gen[0]} x {gen[1]}; set them to the map's size or to 0"
                )
            if info.n_slices not in (1, prm.n_real):
                raise ConfigError(
                    f"grid.map {prm.map_path!r} holds {info.n_slices} realizations but realizations.n = "
                    f"{prm.n_real}; a 3-D map needs one slice per realization"
                )
            self.grid = SphereGrid(info.t, info.p, prm.weno_eps)
        else:
            self.grid = SphereGrid.uniform(prm.res_nt, prm.res_np, prm.weno_eps)
        dec = config["decomposition"]
        ens, dims = choose_split(self.world.Get_size(), prm.n_real, dec["ensemble"], tuple(dec["dims"]))
        self.halo_method = dec["halo_method"]
        self.lay = lay = Layout(self.grid, prm.n_real, self.world, ens, dims)
        self._geometry()
        self.f = lay.zeros()
        self.work = [lay.zeros() for _ in range(3)]
        self.ybuf = lay.zeros()
        self.diag = Diagnostics(self)
        self.u0_exact = None
        self._initial_field()
        self.flows = Flows(self) if prm.advance_flow else None
        self.adv = Advection(self) if prm.advance_flow else None
        self.diff = Diffusion(self) if prm.advance_diffusion else None
        self.time = prm.t_start
        self.step = 0
        self.dt = 0.0
        self.dt_flag = True
        self.dt_adv_used = 0.0
        self.hist_rows = 0
        self.timers = {"advection": 0.0, "diffusion": 0.0, "analysis": 0.0, "flows": 0.0, "output": 0.0}
        self.history: HistoryWriter | None = None

    # -- setup ----------------------------------------------------------------------------
    def _geometry(self) -> None:
        """Slice the global 1-D geometry to this block (local ghosted indexing)."""
        g, lay = self.grid, self.lay
        nt, n = g.nt, g.Nt
        kind = np.zeros(n + 2, dtype=np.int64)
        if self.prm.weno:
            kind[2] = kind[n] = 1
            kind[3:n] = 2
        else:
            kind[2 : n + 1] = 1
        j = lay.j_of_row
        ok = (j >= 1) & (j <= n + 1)
        kind_t = np.zeros(lay.NY, dtype=np.int64)
        kind_t[ok] = kind[j[ok]]
        fa = Diffusion.factors(g)
        self.geo = {
            "kind_t": kind_t,
            "weno_t": lay.row_table(g.weno_t, 3, n - 1),
            "weno_p": np.ascontiguousarray(lay.col_table(g.weno_p).T),
            "sth": lay.rows(g.sth, 1, nt),
            "st_i": lay.rows(g.st_i, 1, n),
            "dt_i": lay.rows(g.dt_i, 1, n),
            "dp_i": lay.cols(g.dp_i),
            "dp": lay.cols(g.dp),
            "s2": lay.rows(fa["s2"], 1, n),
            "c2": lay.rows(fa["c2"], 1, n),
            "c4": lay.rows(fa["c4"], 1, n),
            "b1": lay.cols(fa["b1"]),
            "b5": lay.cols(fa["b5"]),
        }

    def _initial_field(self) -> None:
        prm, lay, x = self.prm, self.lay, self.f.data
        ini = self.cfg["initial"]
        if prm.kind == "map" or (self.map_info is not None and prm.kind == "map"):
            ok = load_map_block(x, lay, self.map_info, lay.r_start, prm.n_real)
            if not self.world.allreduce(ok, op=MPI.LAND):
                raise ValueError(f"grid.map {prm.map_path!r} contains non-finite values")
        elif prm.kind == "soccer":
            soccer_ball(x, lay)
        elif prm.kind == "gaussians":
            gaussian_blobs(x, lay, ini["gaussian_width"])
        elif prm.kind == "bipolar":
            bipolar_map(x, lay, ini["regions"], ini["seed"], ini["peak"], ini["polar"])
        if prm.kind == "soccer":
            # The exact solution uses the un-averaged field, with the seam at p_1.
            u0 = np.zeros((lay.NY, lay.NX))
            t = self.grid.t[lay.t0 + 1 : lay.t0 + lay.ny + 1][:, None]
            p = lay.cols(self.grid.p_rep)[lay.c0 : lay.c1][None, :]
            u0[lay.i0 : lay.i1, lay.c0 : lay.c1] = soccer_u0(t, p)
            self.u0_exact = u0
        self.exchange(self.f)
        self._average_poles(self.f)
        if ini["flux_balance"]:
            self.diag.balance(x)
        if ini["mult_fac"] != 1.0:
            x[:, lay.i0 : lay.i1, lay.c0 : lay.c1] *= ini["mult_fac"]
        self.exchange(self.f)

    def _average_poles(self, da: DistArray) -> None:
        """Replace each pole row by its ``dp``-weighted mean over the unique columns."""
        lay, x, dp = self.lay, da.data, self.geo["dp"][self.lay.c0 : self.lay.c1]
        for row in (lay.inorth, lay.isouth):
            if row < 0:
                continue
            terms = np.ascontiguousarray(x[:, row, lay.c0 : lay.c1] * dp[None, :])
            means = lay.row_sum(terms) * TWOPI_INV
            x[:, row, :] = means[:, None]

    # -- small helpers ----------------------------------------------------------------------
    def exchange(self, da: DistArray) -> None:
        """Fill the halo of ``da`` (faces only: every stencil here is axis-aligned)."""
        da.exchange_halos(method=self.halo_method, corners=False)

    def swap_field(self, da: DistArray) -> None:
        """Make ``da`` the field; the old field takes ``da``'s place among the work arrays."""
        for i, w in enumerate(self.work):
            if w is da:
                self.work[i] = self.f
                self.f = da
                return
        if self.ybuf is da:
            self.ybuf, self.f = self.f, da
            return
        raise ValueError("swap_field: not a work array")

    @property
    def rank0(self) -> bool:
        """World rank 0 (writes histories and logs)."""
        return self.world.Get_rank() == 0

    # -- history ---------------------------------------------------------------------------
    def _num_values(self, cycles_override: int | None = None) -> tuple[list[float], list[int]]:
        dt_adv = self.flows.dt_adv if self.flows is not None else 0.0
        dt_e = self.diff.dt_e if self.diff is not None else 0.0
        s = self.diff.last_s if self.diff is not None else 0
        cyc = self.diff.cycles if self.diff is not None else 0
        if cycles_override is not None:
            cyc = cycles_override
        return [self.dt, dt_adv, self.dt_adv_used, dt_e], [s, cyc]

    def _history_due(self, t: float) -> bool:
        c = self.cfg["output"]["history_cadence"]
        return c <= 0 or t >= self.prm.t_start + self.hist_rows * c

    def write_history(self, t: float, cycles_override: int | None = None, force: bool = False) -> None:
        """Analyse the field and add a history row if the cadence allows (collective)."""
        if not self.cfg["output"]["history"] and not force:
            return
        if not force and not self._history_due(t):
            return
        t0 = _time.perf_counter()
        rows = self.diag.compute(t)
        self.hist_rows += 1
        if rows is not None:
            self.last_row = rows
            if self.history is not None:
                reals, ints = self._num_values(cycles_override)
                self.history.add(self.step, t, rows, reals, ints)
        self.timers["analysis"] += _time.perf_counter() - t0

    # -- time step --------------------------------------------------------------------------
    def _update_dt(self) -> None:
        prm = self.prm
        if self.dt_flag:
            dt = prm.t_end - self.time
            if self.flows is not None:
                dt = min(dt, self.flows.dt_adv)
            dt = min(dt, prm.dt_max)
            if dt < prm.dt_min and self.rank0:
                log.warning("flux: time step %.3e is below time.dt_min = %.3e", dt, prm.dt_min)
            self.dt = dt
            self.dt_flag = False
        cad = self.cfg["output"]["map_cadence"]
        if cad > 0 and self.next_map_time is not None and self.time + self.dt >= self.next_map_time:
            self.dt = self.next_map_time - self.time
            self.dt_flag = True
        if self.time + self.dt >= prm.t_end:
            self.dt = prm.t_end - self.time
            self.dt_flag = False

    # -- the run ---------------------------------------------------------------------------
    def step_once(self) -> None:
        """One step of the main loop (flows, time step, transport, history)."""
        prm = self.prm
        if self.flows is not None and self.flows.needs_update:
            t0 = _time.perf_counter()
            self.flows.rebuild()
            self.dt_flag = True
            self.timers["flows"] += _time.perf_counter() - t0
        self._update_dt()
        dt = self.dt
        t_step = self.time
        self.step += 1
        sub_rows = self.cfg["output"]["subcycle_rows"]
        if prm.strang:
            self._advect(0.5 * dt)
            self._diffuse(dt, t_step, sub_rows)
            self._advect(0.5 * dt)
        else:
            self._advect(dt)
            self._diffuse(dt, t_step, sub_rows)
        self.time = t_step + dt
        self.write_history(self.time)

    def _advect(self, dt: float) -> None:
        if self.adv is None:
            return
        t0 = _time.perf_counter()
        self.adv.advance(dt)
        self.dt_adv_used = dt
        self.timers["advection"] += _time.perf_counter() - t0

    def _diffuse(self, dt: float, t_step: float, sub_rows: bool) -> None:
        if self.diff is None:
            return
        t0 = _time.perf_counter()
        cb = None
        if sub_rows:

            def cb(t: float, est: int) -> None:
                ta = _time.perf_counter()
                self.write_history(t, cycles_override=est)
                nonlocal t0
                t0 += _time.perf_counter() - ta  # analysis time is not diffusion time

        self.diff.advance(dt, t_step, cb)
        self.timers["diffusion"] += _time.perf_counter() - t0

    def run(self, history_dir: str | Path | None = None) -> dict[str, Any]:
        """Run from the current state to ``time.end``; return a summary (same on every rank)."""
        prm = self.prm
        if history_dir is not None and self.rank0 and self.cfg["output"]["history"]:
            self.history = HistoryWriter(history_dir, prm.n_real)
        self.next_map_time = None
        cad = self.cfg["output"]["map_cadence"]
        if cad > 0:
            self.next_map_time = prm.t_start + cad
        self.write_history(self.time)
        t0 = _time.perf_counter()
        while self.time < prm.t_end:
            self.step_once()
            if self.next_map_time is not None and self.time >= self.next_map_time:
                self.next_map_time += cad
        wall = self.world.allreduce(_time.perf_counter() - t0, op=MPI.MAX)
        if self.history is not None:
            self.history.flush()
        return {"steps": self.step, "time": self.time, "seconds": wall}

    def gather_field(self) -> np.ndarray | None:
        """All realizations ``(n_real, N_t, Np)`` (unique columns) on world rank 0."""
        lay = self.lay
        block = lay.gather_group(self.f.data)
        parts = self.world.gather((lay.r_start, block) if lay.group_root else None, root=0)
        if parts is None:
            return None
        out = np.zeros((self.prm.n_real, self.grid.Nt, self.grid.Np))
        for item in parts:
            if item is not None:
                r0, b = item
                out[r0 : r0 + b.shape[0]] = b
        return out
