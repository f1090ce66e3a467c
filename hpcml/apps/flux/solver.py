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

from hpcml.apps import restart
from hpcml.apps.flux.advection import Advection
from hpcml.apps.flux.assimilation import Assimilation, check_maps
from hpcml.apps.flux.device import DeviceField, backend_name, resolve_device
from hpcml.apps.flux.diagnostics import Diagnostics
from hpcml.apps.flux.diffusion import Diffusion
from hpcml.apps.flux.fields import bipolar_map, gaussian_blobs, load_map_block, soccer_ball, soccer_u0
from hpcml.apps.flux.flowfiles import FlowFiles
from hpcml.apps.flux.flows import Flows
from hpcml.apps.flux.grid import TWOPI_INV, SphereGrid, read_map_info
from hpcml.apps.flux.history import HistoryWriter
from hpcml.apps.flux.inputs import read_field
from hpcml.apps.flux.layout import Layout, choose_split
from hpcml.apps.flux.params import Params
from hpcml.apps.flux.sources import Sources
from hpcml.config import ConfigError
from hpcml.jit import work_clock
from hpcml.runtime import comm_or_world

__all__ = ["SOLUTION_KEYS", "FluxSolver"]

log = logging.getLogger("hpcml.apps.flux")

#: Config values that determine the solution (a checkpoint written with others is refused).
#: The map cadence is one: steps are cut to land on map times.
SOLUTION_KEYS = (
    "grid", "initial", "time.start", "time.dt_max", "realizations", "flow", "diffusion", "source",
    "assimilation", "splitting", "output.map_cadence",
)  # fmt: skip


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
        self.world = comm_or_world(comm)
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
        if prm.assimilate:
            check_maps(config["assimilation"], self.grid.Nt, self.grid.Nf)
        # input files are opened and checked here, on every rank, before the first collective
        self.flow_files = None
        if prm.advance_flow and prm.flow_list:
            self.flow_files = FlowFiles(prm.flow_list, prm.flow_dir, self.grid, prm.t_start)
        self.diff_field = read_field(prm.diff_map, "diffusion.map", nonnegative=True) if prm.diff_map else None
        src_file = prm.advance_source and prm.source_file
        self.source_field = read_field(prm.source_file, "source.file") if src_file else None
        self.dev = resolve_device(backend_name(config))
        dec = config["decomposition"]
        ens, dims = choose_split(self.world.Get_size(), prm.n_real, dec["ensemble"], tuple(dec["dims"]))
        self.halo_method = dec["halo_method"]
        self.lay = lay = Layout(self.grid, prm.n_real, self.world, ens, dims)
        self._geometry()
        self.f = lay.zeros()  # built on the host, then moved to the device
        self.diag = Diagnostics(self)
        self.u0_exact = None
        self._initial_field()
        if self.dev.on_device:
            self.f = DeviceField(self.f.decomp, self.dev.put(self.f.data))
        self.work = [self.new_field() for _ in range(3)]
        self.ybuf = self.new_field()
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
        self.cpu = dict.fromkeys(self.timers, 0.0)  # process CPU seconds (robust to a shared machine)
        self.history: HistoryWriter | None = None
        self.next_map_time: float | None = None
        self.next_ckpt_time: float | None = None
        self.maps_written = 0
        self.map_step = -1  # step of the last initial/cadence map (restarts rewrite it)
        self.restarted_from = 0
        self.solution: dict[str, Any] = {}
        self.stopped_early = False
        self.sources = Sources(self) if prm.advance_source else None
        self.assim = Assimilation(self) if prm.assimilate else None

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
            "jrow": np.ascontiguousarray(lay.j_of_row),
        }
        self.dgeo = {k: self.dev.put(v) for k, v in self.geo.items()}  # the same arrays on the CPU

    def _initial_field(self) -> None:
        prm, lay, x = self.prm, self.lay, self.f.data
        ini = self.cfg["initial"]
        if prm.kind == "map":
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

    def _average_poles(self, da: Any) -> None:
        """Replace each pole row by its ``dp``-weighted mean over the unique columns."""
        lay, x, dp = self.lay, da.data, self.geo["dp"][self.lay.c0 : self.lay.c1]
        for row in (lay.inorth, lay.isouth):
            if row < 0:
                continue
            terms = np.ascontiguousarray(x[:, row, lay.c0 : lay.c1] * dp[None, :])
            means = lay.row_sum(terms) * TWOPI_INV
            x[:, row, :] = means[:, None]

    # -- small helpers ----------------------------------------------------------------------
    def new_field(self, mult: int = 1) -> Any:
        """A zero ghosted field of ``mult`` x the block's realizations on the solver's device."""
        return self.dev.field(self.lay.decomp_for(mult))

    def exchange(self, da: Any) -> None:
        """Fill the halo of ``da`` (faces only: every stencil here is axis-aligned)."""
        self.dev.exchange(da, self.halo_method)

    def host_data(self) -> np.ndarray:
        """The field's ghosted block on the host (the array itself on the CPU, a copy from a GPU)."""
        return self.dev.get(self.f.data)

    def set_host_data(self, data: np.ndarray) -> None:
        """Replace the field's ghosted block with host values (then refresh the halo)."""
        if self.dev.on_device:
            self.f.data = self.dev.put(data)
        elif data is not self.f.data:
            self.f.data[...] = data
        self.exchange(self.f)

    def swap_field(self, da: Any) -> None:
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
        t0, c0 = work_clock(), _time.process_time()
        rows = self.diag.compute(t)
        self.hist_rows += 1
        if rows is not None:
            if self.history is not None:
                reals, ints = self._num_values(cycles_override)
                self.history.add(self.step, t, rows, reals, ints)
        self.timers["analysis"] += work_clock() - t0
        self.cpu["analysis"] += _time.process_time() - c0

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
        files = self.flows.files if self.flows is not None else None
        for part in (self.assim, files, self.sources):  # HipFT's order of the cuts
            if part is not None:
                self.dt, cut = part.cut(self.time, self.dt)
                self.dt_flag = self.dt_flag or cut
        if self.time + self.dt >= prm.t_end:
            self.dt = prm.t_end - self.time
            self.dt_flag = False

    # -- the run ---------------------------------------------------------------------------
    def step_once(self) -> None:
        """One step of the main loop (flows, time step, transport, history)."""
        prm = self.prm
        if self.flows is not None and self.flows.needs_update:
            t0, c0 = work_clock(), _time.process_time()
            self.flows.rebuild()
            self.dt_flag = True
            self.timers["flows"] += work_clock() - t0
            self.cpu["flows"] += _time.process_time() - c0
        if self.sources is not None:
            self.sources.update(self.time)
        self._update_dt()
        dt = self.dt
        t_step = self.time
        self.step += 1
        sub_rows = self.cfg["output"]["subcycle_rows"]
        if prm.strang:
            self._source(t_step, 0.5 * dt)
            self._advect(0.5 * dt)
            self._diffuse(dt, t_step, sub_rows)
            self._advect(0.5 * dt)
            self._source(t_step, 0.5 * dt)
        else:
            self._advect(dt)
            self._diffuse(dt, t_step, sub_rows)
            self._source(t_step, dt)
        self.time = t_step + dt
        if self.assim is not None and self.assim.due(self.time):
            self.assim.apply()
        self.write_history(self.time)

    def _source(self, t_step: float, dt: float) -> None:
        if self.sources is not None:
            self.sources.apply(t_step, dt)

    def _advect(self, dt: float) -> None:
        if self.adv is None:
            return
        t0, c0 = work_clock(), _time.process_time()
        self.adv.advance(dt)
        self.dt_adv_used = dt
        self.timers["advection"] += work_clock() - t0
        self.cpu["advection"] += _time.process_time() - c0

    def _diffuse(self, dt: float, t_step: float, sub_rows: bool) -> None:
        if self.diff is None:
            return
        t0, c0 = work_clock(), _time.process_time()
        cb = None
        if sub_rows:

            def cb(t: float, est: int) -> None:
                ta, ca = work_clock(), _time.process_time()
                self.write_history(t, cycles_override=est)
                nonlocal t0, c0
                t0 += work_clock() - ta  # analysis time is not diffusion time
                c0 += _time.process_time() - ca

        self.diff.advance(dt, t_step, cb)
        self.timers["diffusion"] += work_clock() - t0
        self.cpu["diffusion"] += _time.process_time() - c0

    def run(self) -> dict[str, Any]:
        """Run to ``time.end`` with every output the config asks for; summary (same on every rank)."""
        from hpcml.apps.flux.output import MapWriter, load_checkpoint, save_checkpoint
        from hpcml.runtime import StopPoll

        prm, out = self.prm, self.cfg["output"]
        outdir = Path(out["directory"])
        if self.rank0:
            outdir.mkdir(parents=True, exist_ok=True)
        self.world.Barrier()
        mcad, ccad = out["map_cadence"], out["checkpoint_cadence"]
        self.next_map_time = prm.t_start + mcad if mcad > 0 else None
        self.next_ckpt_time = prm.t_start + ccad if ccad > 0 and out["checkpoint"] else None
        self.maps_written = 0
        self.map_step = -1
        ckdir = outdir / out["checkpoint"] if out["checkpoint"] else None
        plan = restart.plan(self.cfg, ckdir, SOLUTION_KEYS, self.world, "flux")
        self.solution = plan.record
        restarted = plan.resume
        self.restarted_from = 0
        if restarted:
            got = load_checkpoint(self, ckdir, expect=plan.record)
            self.restarted_from = self.step
            if self.rank0:
                log.info("flux: restarted from %s at step %d, time %.6g h", got, self.step, self.time)
        if self.rank0 and out["history"]:
            self.history = HistoryWriter(outdir, prm.n_real, append=restarted)
            if restarted:
                self.history.truncate(self.step, self.time)
        maps = None
        if out["maps"]:
            # A resumed run drops the maps written at or after its checkpoint's step (a stop
            # between map times writes one off-cadence map) and rewrites the checkpoint's own
            # map if it was a cadence (or the final) map: the series equals an uninterrupted run's.
            maps = MapWriter(self, outdir / out["maps"], restart_step=self.step if restarted else None)
        if not restarted:
            if self.assim is not None and self.assim.next_time == self.time:
                self.assim.apply()  # a map at the start time is assimilated before the first step
            self.write_history(self.time, force=out["history"])
            if maps is not None:
                maps.write(self.step, self.time, self._rows())
            self.maps_written = 1
            self.map_step = self.step
            if out["hipft_maps"]:
                self._hipft_map(outdir / f"{out['hipft_root']}_initial.h5")
        elif maps is not None and (self.map_step == self.step or self.time >= prm.t_end):
            maps.write(self.step, self.time, self._rows())
        self.stopped_early = False
        stop = StopPoll(self.world)  # agreed by all ranks within about a second, whatever the step time
        last_map_time = self.time
        t0 = work_clock()
        while self.time < prm.t_end:
            self.step_once()
            if self.next_map_time is not None and self.time >= self.next_map_time:
                if maps is not None:
                    t1 = work_clock()
                    maps.write(self.step, self.time, self._rows())
                    self.timers["output"] += work_clock() - t1
                    last_map_time = self.time
                self.maps_written += 1
                self.map_step = self.step
                self.next_map_time = prm.t_start + self.maps_written * mcad
            if self.next_ckpt_time is not None and self.time >= self.next_ckpt_time and self.time < prm.t_end:
                save_checkpoint(self, ckdir)
                self.next_ckpt_time += ccad
            if self.time < prm.t_end and stop():
                if self.rank0:
                    log.info("flux: stop signal: checkpointing at step %d, time %.6g h", self.step, self.time)
                self.stopped_early = True
                break
        wall = self.world.allreduce(work_clock() - t0, op=MPI.MAX)
        rows = self._rows()
        t1 = work_clock()
        if maps is not None:
            if last_map_time != self.time:
                maps.write(self.step, self.time, rows)
            maps.close()
        if out["hipft_maps"]:
            self._hipft_map(outdir / f"{out['hipft_root']}_final.h5")
        ckpt = None
        if ckdir is not None:
            ckpt = save_checkpoint(self, ckdir)
        if self.history is not None:
            self.history.flush()
        self.timers["output"] += work_clock() - t1
        return self._summary(wall, rows, outdir, maps, ckpt)

    def _rows(self) -> np.ndarray | None:
        """History values of the current field, on every rank (collective)."""
        return self.world.bcast(self.diag.compute(self.time), root=0)

    def _hipft_map(self, path: Path) -> None:
        from hpcml.apps.flux.output import write_hipft_map

        field = self.gather_field()
        if field is not None:
            write_hipft_map(path, field, self.grid, self.cfg["output"]["single_precision"])

    def _summary(self, wall: float, rows: np.ndarray, outdir: Path, maps: Any, ckpt: Any) -> dict[str, Any]:
        timers = {k: self.world.allreduce(v, op=MPI.MAX) for k, v in self.timers.items()}
        cells = self.prm.n_real * self.grid.Nt * self.grid.Np
        r1 = rows[0]
        summary: dict[str, Any] = {
            "app": "flux",
            "ranks": self.world.Get_size(),
            "ensemble_groups": self.lay.ensemble,
            "dims": list(self.lay.dims),
            "grid": [self.grid.Nt, self.grid.Nf],
            "realizations": self.prm.n_real,
            "steps": self.step,
            "restarted_from": self.restarted_from,
            "time": self.time,
            "stopped_early": self.stopped_early,
            "seconds": wall,
            "timers": timers,
            "cpu_seconds": {k: self.world.allreduce(v, op=MPI.MAX) for k, v in self.cpu.items()},
            "advection_stages": self.adv.n_stages if self.adv is not None else 0,
            "diffusion_stages": self.diff.n_stages if self.diff is not None else 0,
            "diffusion_applies": self.diff.n_applies if self.diff is not None else 0,
            "cell_steps_per_s": cells * self.step / wall if wall > 0 else float("nan"),
            "flux_positive": float(r1[3]),
            "flux_negative": float(r1[4]),
            "br_min": float(r1[0]),
            "br_max": float(r1[1]),
            "ax_dipole": float(r1[12]),
            "output_dir": str(outdir),
        }
        if maps is not None:
            summary["maps"] = str(maps.path)
        if self.cfg["output"]["history"]:
            summary["history"] = str(outdir / "hipft_history_sol_r000001.out")
        if ckpt is not None:
            summary["checkpoint"] = str(ckpt)
        return summary

    def gather_field(self) -> np.ndarray | None:
        """All realizations ``(n_real, N_t, Np)`` (unique columns) on world rank 0."""
        lay = self.lay
        block = lay.gather_group(self.host_data())
        parts = self.world.gather((lay.r_start, block) if lay.group_root else None, root=0)
        if parts is None:
            return None
        out = np.zeros((self.prm.n_real, self.grid.Nt, self.grid.Np))
        for item in parts:
            if item is not None:
                r0, b = item
                out[r0 : r0 + b.shape[0]] = b
        return out
