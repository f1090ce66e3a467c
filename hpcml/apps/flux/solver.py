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
from hpcml.apps.flux.fields import bipolar_map, gaussian_blobs, load_map_block, soccer_ball
from hpcml.apps.flux.flowfiles import FlowFiles
from hpcml.apps.flux.flows import Flows
from hpcml.apps.flux.grid import TWOPI_INV, SphereGrid, read_map_info
from hpcml.apps.flux.hipft_output import HipftFiles, write_hipft_map
from hpcml.apps.flux.history import HistoryWriter
from hpcml.apps.flux.inputs import read_field
from hpcml.apps.flux.layout import Layout, choose_split
from hpcml.apps.flux.params import Params
from hpcml.apps.flux.sources import Sources
from hpcml.apps.flux.state import FluxContext, FluxState
from hpcml.config import ConfigError
from hpcml.jit import work_clock
from hpcml.runtime import comm_or_world

__all__ = ["SOLUTION_KEYS", "FluxSolver", "block_geometry", "gather_field", "gather_flows"]

log = logging.getLogger("hpcml.apps.flux")

#: Config values that determine the solution (a checkpoint written with others is refused).
#: The map cadence is one: steps are cut to land on map times.
SOLUTION_KEYS = (
    "grid", "initial", "time.start", "time.dt_max", "realizations", "flow", "diffusion", "source",
    "assimilation", "splitting", "output.map_cadence",
)  # fmt: skip


class FluxSolver:
    """Surface flux transport of an ensemble of realizations on the sphere.

    Builds the run's :class:`~hpcml.apps.flux.state.FluxContext` (``ctx``) and
    :class:`~hpcml.apps.flux.state.FluxState` (``st``), then the components, each from
    the context alone (so their order does not matter); the time loop passes them the
    state.  ``time``, ``step`` and ``f`` are the state's, for convenience.

    Parameters
    ----------
    config
        A full ``flux`` configuration (see ``hpcml/defaults/flux.toml``).
    comm
        Communicator of all ranks taking part (split into ensemble groups).
    """

    def __init__(self, config: dict[str, Any], comm: MPI.Comm | None = None) -> None:
        world = comm_or_world(comm)
        prm = Params(config)
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
            grid = SphereGrid(info.t, info.p, prm.weno_eps)
        else:
            grid = SphereGrid.uniform(prm.res_nt, prm.res_np, prm.weno_eps)
        if prm.assimilate:
            check_maps(config["assimilation"], grid.Nt, grid.Nf)
        # input files are opened and checked here, on every rank, before the first collective
        flow_files = None
        if prm.advance_flow and prm.flow_list:
            flow_files = FlowFiles(prm.flow_list, prm.flow_dir, grid, prm.t_start)
        diff_field = read_field(prm.diff_map, "diffusion.map", nonnegative=True) if prm.diff_map else None
        src_file = prm.advance_source and prm.source_file
        source_field = read_field(prm.source_file, "source.file") if src_file else None
        dev = resolve_device(backend_name(config))
        dec = config["decomposition"]
        ens, dims = choose_split(world.Get_size(), prm.n_real, dec["ensemble"], tuple(dec["dims"]))
        lay = Layout(grid, prm.n_real, world, ens, dims)
        geo = block_geometry(grid, lay, prm.weno)
        self.ctx = ctx = FluxContext(
            cfg=config, prm=prm, grid=grid, lay=lay, dev=dev, world=world, halo_method=dec["halo_method"],
            geo=geo, dgeo={k: dev.put(v) for k, v in geo.items()},
        )  # fmt: skip
        self.cfg, self.prm, self.grid, self.lay, self.dev, self.world = config, prm, grid, lay, dev, world
        self.diag = Diagnostics(ctx)
        f = self._initial_field()  # on the host, then moved to the device
        if dev.on_device:
            f = DeviceField(f.decomp, dev.put(f.data))
        self.st = FluxState(ctx, f, [ctx.new_field() for _ in range(3)], ctx.new_field(), prm.t_start)
        self.flows = Flows(ctx, flow_files) if prm.advance_flow else None
        self.adv = Advection(ctx) if prm.advance_flow else None
        self.diff = Diffusion(ctx, diff_field) if prm.advance_diffusion else None
        self.sources = Sources(ctx, source_field) if prm.advance_source else None
        self.assim = Assimilation(ctx) if prm.assimilate else None
        self.timers = {"advection": 0.0, "diffusion": 0.0, "analysis": 0.0, "flows": 0.0, "output": 0.0}
        # The process's CPU seconds of the loop, read once at each end: a reading sums every
        # thread's clock (on a Zen 3 VM 2.6 us a call on 1 thread, 6.3 us on 2, 47 us on a loaded host).
        self.cpu_seconds = 0.0
        self.history: HistoryWriter | None = None
        self._analysed: tuple[float, Any] | None = None  # (time, rows) of the last analysis (write_history)
        self.restarted_from = 0
        self.solution: dict[str, Any] = {}
        self.stopped_early = False

    # -- the state's clock, for callers that used the solver's -------------------------------
    @property
    def time(self) -> float:
        """Model time of the field, hours."""
        return self.st.time

    @property
    def step(self) -> int:
        """Steps taken."""
        return self.st.step

    @property
    def f(self) -> Any:
        """The field (a ghosted block on the device)."""
        return self.st.f

    @property
    def rank0(self) -> bool:
        """World rank 0 (writes histories and logs)."""
        return self.ctx.rank0

    def parts(self) -> dict[str, Any]:
        """The components that carry state of their own, by checkpoint name."""
        return {"flows": self.flows, "sources": self.sources, "assimilation": self.assim}

    # -- setup ----------------------------------------------------------------------------
    def _initial_field(self) -> Any:
        ctx, prm, lay = self.ctx, self.prm, self.lay
        fld = lay.zeros()
        x = fld.data
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
        fld.exchange_halos(method=ctx.halo_method, corners=False)
        self._average_poles(x)
        if ini["flux_balance"]:
            self.diag.balance(x)
        if ini["mult_fac"] != 1.0:
            x[:, lay.i0 : lay.i1, lay.c0 : lay.c1] *= ini["mult_fac"]
        fld.exchange_halos(method=ctx.halo_method, corners=False)
        return fld

    def _average_poles(self, x: np.ndarray) -> None:
        """Replace each pole row by its ``dp``-weighted mean over the unique columns."""
        lay, dp = self.lay, self.ctx.geo["dp"][self.lay.c0 : self.lay.c1]
        for row in (lay.inorth, lay.isouth):
            if row < 0:
                continue
            terms = np.ascontiguousarray(x[:, row, lay.c0 : lay.c1] * dp[None, :])
            means = lay.row_sum(terms) * TWOPI_INV
            x[:, row, :] = means[:, None]

    # -- history ---------------------------------------------------------------------------
    def _num_values(self, cycles_override: int | None = None) -> tuple[list[float], list[int]]:
        dt_adv = self.flows.dt_adv if self.flows is not None else 0.0
        dt_e = self.diff.dt_e if self.diff is not None else 0.0
        s = self.diff.last_s if self.diff is not None else 0
        cyc = self.diff.cycles if self.diff is not None else 0
        if cycles_override is not None:
            cyc = cycles_override
        return [self.st.dt, dt_adv, self.st.dt_adv_used, dt_e], [s, cyc]

    def _history_due(self, t: float) -> bool:
        c = self.cfg["output"]["history_cadence"]
        return c <= 0 or t >= self.prm.t_start + self.st.hist_rows * c

    def write_history(
        self, t: float, cycles_override: int | None = None, force: bool = False, reuse: bool = False
    ) -> None:
        """Analyse the field and add a history row if the cadence allows (collective).

        ``reuse``: the field has not changed since the last analysis if that was at the
        same time ``t`` (the row after a step's last diffusion cycle, then the step's
        own row: HipFT writes both), so its values are taken again instead of being
        recomputed.  :meth:`step_once` clears the record whenever the field may change.
        """
        if not self.cfg["output"]["history"] and not force:
            return
        if not force and not self._history_due(t):
            return
        t0 = work_clock()
        if reuse and self._analysed is not None and self._analysed[0] == t:
            rows = self._analysed[1]
        else:
            rows = self.diag.compute(self.st, t, own=True)  # each group's root writes its realizations' files
            self._analysed = (t, rows)
        self.st.hist_rows += 1
        if rows is not None:
            if self.history is not None:
                reals, ints = self._num_values(cycles_override)
                self.history.add(self.st.step, t, rows, reals, ints)
        self.timers["analysis"] += work_clock() - t0

    # -- time step --------------------------------------------------------------------------
    def _update_dt(self) -> None:
        prm, st = self.prm, self.st
        if st.dt_flag:
            dt = prm.t_end - st.time
            if self.flows is not None:
                dt = min(dt, self.flows.dt_adv)
            dt = min(dt, prm.dt_max)
            if dt < prm.dt_min and self.rank0:
                log.warning("flux: time step %.3e is below time.dt_min = %.3e", dt, prm.dt_min)
            st.dt = dt
            st.dt_flag = False
        cad = self.cfg["output"]["map_cadence"]
        if cad > 0 and st.next_map_time is not None and st.time + st.dt >= st.next_map_time:
            st.dt = st.next_map_time - st.time
            st.dt_flag = True
        files = self.flows.files if self.flows is not None else None
        for part in (self.assim, files, self.sources):  # HipFT's order of the cuts
            if part is not None:
                st.dt, cut = part.cut(st.time, st.dt)
                st.dt_flag = st.dt_flag or cut
        if st.time + st.dt >= prm.t_end:
            st.dt = prm.t_end - st.time
            st.dt_flag = False

    # -- the run ---------------------------------------------------------------------------
    def step_once(self) -> None:
        """One step of the main loop (flows, time step, transport, history)."""
        prm, st = self.prm, self.st
        self._analysed = None  # the field changes from here
        if self.flows is not None and self.flows.needs_update:
            t0 = work_clock()
            self.flows.rebuild(st)
            st.dt_flag = True
            self.timers["flows"] += work_clock() - t0
        if self.sources is not None:
            self.sources.update(st.time)
        self._update_dt()
        dt = st.dt
        t_step = st.time
        st.step += 1
        sub_rows = self.cfg["output"]["subcycle_rows"]
        if prm.strang:
            self._source(t_step, 0.5 * dt)
            self._advect(0.5 * dt)
            self._diffuse(dt, t_step, sub_rows)
            self._analysed = None
            self._advect(0.5 * dt)
            self._source(t_step, 0.5 * dt)
        else:
            self._advect(dt)
            self._diffuse(dt, t_step, sub_rows)
            if self.sources is not None:
                self._analysed = None
            self._source(t_step, dt)
        st.time = t_step + dt
        if self.assim is not None and self.assim.due(st.time):
            self.assim.apply(st)
            self._analysed = None
        self.write_history(st.time, reuse=True)

    def _source(self, t_step: float, dt: float) -> None:
        if self.sources is not None:
            self.sources.apply(self.st, t_step, dt)

    def _advect(self, dt: float) -> None:
        if self.adv is None:
            return
        t0 = work_clock()
        self.adv.advance(self.st, self.flows, dt)
        self.st.dt_adv_used = dt
        self.timers["advection"] += work_clock() - t0

    def _diffuse(self, dt: float, t_step: float, sub_rows: bool) -> None:
        if self.diff is None:
            return
        t0 = work_clock()
        cb = None
        if sub_rows:

            def cb(t: float, est: int) -> None:
                ta = work_clock()
                self.write_history(t, cycles_override=est)
                nonlocal t0
                t0 += work_clock() - ta  # analysis time is not diffusion time

        self.diff.advance(self.st, dt, t_step, cb)
        self.timers["diffusion"] += work_clock() - t0

    def _map_due(self) -> bool:
        """A cadence map after this step: by time (``map_cadence``) or by step count (``map_steps``)."""
        st, nsteps = self.st, self.cfg["output"]["map_steps"]
        if st.next_map_time is not None and st.time >= st.next_map_time:
            return True
        return nsteps > 0 and st.step % nsteps == 0

    def _write_maps(self, maps: Any, hfiles: HipftFiles | None, rows: np.ndarray | None, cadence: bool) -> None:
        """The field (flux-balanced if asked) and the flows into the series and HipFT's files (collective)."""
        out, st = self.cfg["output"], self.st
        host = st.host_data()
        if out["balance_maps"]:
            host = host.copy()
            self.diag.balance(host)
        flows = None
        if out["flows"] and self.flows is not None:
            flows = self.flows.host_m_per_s()
        if maps is not None:
            maps.write(st.step, st.time, rows, host, flows)
        if cadence and hfiles is not None and hfiles.active:
            field = gather_field(self.ctx, host)
            faces = gather_flows(self.ctx, *flows) if flows is not None else None
            hfiles.write(st.maps_written, st.time, field, faces)

    def run(self) -> dict[str, Any]:
        """Run to ``time.end`` with every output the config asks for; summary (same on every rank)."""
        from hpcml.apps.flux.output import MapWriter, load_checkpoint, save_checkpoint
        from hpcml.runtime import StopPoll

        prm, out, st, ctx = self.prm, self.cfg["output"], self.st, self.ctx
        outdir = Path(out["directory"])
        if self.rank0:
            outdir.mkdir(parents=True, exist_ok=True)
        self.world.Barrier()
        mcad, ccad = out["map_cadence"], out["checkpoint_cadence"]
        st.next_map_time = prm.t_start + mcad if mcad > 0 else None
        st.next_ckpt_time = prm.t_start + ccad if ccad > 0 and out["checkpoint"] else None
        st.maps_written = 0
        st.map_step = -1
        ckdir = outdir / out["checkpoint"] if out["checkpoint"] else None
        plan = restart.plan(self.cfg, ckdir, SOLUTION_KEYS, self.world, "flux")
        self.solution = plan.record
        restarted = plan.resume
        self.restarted_from = 0
        if restarted:
            got = load_checkpoint(ctx, st, self.parts(), ckdir, expect=plan.record)
            self.restarted_from = st.step
            if self.rank0:
                log.info("flux: restarted from %s at step %d, time %.6g h", got, st.step, st.time)
        if self.lay.group_root and out["history"]:
            self.history = HistoryWriter(outdir, self.lay.nr, append=restarted, first=self.lay.r_start)
            if restarted:
                self.history.truncate(st.step, st.time)
        maps = None
        if out["maps"]:
            # A resumed run drops the maps written at or after its checkpoint's step (a stop
            # between map times writes one off-cadence map) and rewrites the checkpoint's own
            # map if it was a cadence (or the final) map: the series equals an uninterrupted run's.
            maps = MapWriter(ctx, outdir / out["maps"], restart_step=st.step if restarted else None)
        hfiles = None
        if out["hipft_map_dir"] or out["hipft_flow_dir"]:
            hfiles = HipftFiles(outdir, out, self.grid, prm.n_real, self.rank0, st.maps_written if restarted else None)
        if not restarted:
            if self.assim is not None and self.assim.next_time == st.time:
                self.assim.apply(st)  # a map at the start time is assimilated before the first step
            self.write_history(st.time, force=out["history"])
            self._write_maps(maps, hfiles, self._rows(), cadence=True)
            st.maps_written = 1
            st.map_step = st.step
            if out["hipft_maps"]:
                self._hipft_map(outdir / f"{out['hipft_root']}_initial.h5")
        elif maps is not None and (st.map_step == st.step or st.time >= prm.t_end):
            maps.write(st.step, st.time, self._rows(), st.host_data())
        self.stopped_early = False
        stop = StopPoll(self.world)  # agreed by all ranks within about a second, whatever the step time
        last_map_time = st.time
        t0, c0 = work_clock(), _time.process_time()
        while st.time < prm.t_end:
            self.step_once()
            if self._map_due():
                t1 = work_clock()
                self._write_maps(maps, hfiles, self._rows(), cadence=True)
                self.timers["output"] += work_clock() - t1
                last_map_time = st.time
                st.maps_written += 1
                st.map_step = st.step
                if mcad > 0:
                    st.next_map_time = prm.t_start + st.maps_written * mcad
            if st.next_ckpt_time is not None and st.time >= st.next_ckpt_time and st.time < prm.t_end:
                # the maps and the history files hold every entry up to the checkpoint, so a
                # job killed later restarts from it without a gap in either
                if maps is not None:
                    maps.sync()
                if self.history is not None:
                    self.history.flush()
                save_checkpoint(ctx, st, self.parts(), ckdir, self.solution)
                st.next_ckpt_time += ccad
            if st.time < prm.t_end and stop():
                if self.rank0:
                    log.info("flux: stop signal: checkpointing at step %d, time %.6g h", st.step, st.time)
                self.stopped_early = True
                break
        self.cpu_seconds = _time.process_time() - c0
        wall = self.world.allreduce(work_clock() - t0, op=MPI.MAX)
        rows = self._rows()
        t1 = work_clock()
        if maps is not None:
            if last_map_time != st.time:
                self._write_maps(maps, None, rows, cadence=False)
            maps.close()
        if out["hipft_maps"]:
            self._hipft_map(outdir / f"{out['hipft_root']}_final.h5")
        ckpt = None
        if ckdir is not None:
            ckpt = save_checkpoint(ctx, st, self.parts(), ckdir, self.solution)
        if self.history is not None:
            self.history.flush()
        self.timers["output"] += work_clock() - t1
        return self._summary(wall, rows, outdir, maps, ckpt)

    def _rows(self) -> np.ndarray | None:
        """History values of the current field, on every rank (collective)."""
        return self.world.bcast(self.diag.compute(self.st), root=0)

    def _hipft_map(self, path: Path) -> None:
        out = self.cfg["output"]
        host = self.st.host_data()
        if out["balance_maps"]:
            host = host.copy()
            self.diag.balance(host)
        field = gather_field(self.ctx, host)
        if field is not None:
            write_hipft_map(path, field, self.grid, out["single_precision"], out["hipft_map_2d"])

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
            "cpu_seconds": self.world.allreduce(self.cpu_seconds, op=MPI.MAX),  # the loop's, compile included
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
        return gather_field(self.ctx, self.st.host_data())


def block_geometry(g: SphereGrid, lay: Layout, weno: bool) -> dict[str, np.ndarray]:
    """The global 1-D geometry sliced to this block (local ghosted indexing)."""
    nt, n = g.nt, g.Nt
    kind = np.zeros(n + 2, dtype=np.int64)
    if weno:
        kind[2] = kind[n] = 1
        kind[3:n] = 2
    else:
        kind[2 : n + 1] = 1
    j = lay.j_of_row
    ok = (j >= 1) & (j <= n + 1)
    kind_t = np.zeros(lay.NY, dtype=np.int64)
    kind_t[ok] = kind[j[ok]]
    fa = Diffusion.factors(g)
    return {
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


def gather_field(ctx: FluxContext, host: np.ndarray) -> np.ndarray | None:
    """All realizations of a ghosted host block ``(n_real, N_t, Np)`` on world rank 0 (None elsewhere)."""
    lay = ctx.lay
    block = lay.gather_group(host)
    parts = ctx.world.gather((lay.r_start, block) if lay.group_root else None, root=0)
    if parts is None:
        return None
    out = np.zeros((ctx.prm.n_real, ctx.grid.Nt, ctx.grid.Np))
    for item in parts:
        if item is not None:
            r0, b = item
            out[r0 : r0 + b.shape[0]] = b
    return out


def gather_flows(ctx: FluxContext, vt: np.ndarray, vp: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The flows in HipFT's file layouts on world rank 0: v_theta ``(n, nt, N_f)``, v_phi ``(n, N_t, M)``.

    ``vt``/``vp`` are the ghosted host blocks (m/s).  v_theta takes every theta face (the
    south-most block adds face ``nt`` from its ghost row) and the phi nodes ``p_1..p_Nf``
    (``p_1`` is the seam column); v_phi the phi faces ``ph_1..ph_M`` (periodic copies at
    both ends).  Collective over the world.
    """
    lay, g = ctx.lay, ctx.grid
    rows = slice(lay.i0, lay.i1 + (1 if lay.owns_south else 0))
    mine = (lay.r_start, lay.t0, np.ascontiguousarray(vt[:, rows, lay.c0 : lay.c1]), lay.p0,
            np.ascontiguousarray(vp[:, lay.i0 : lay.i1, lay.c0 : lay.c1]))  # fmt: skip
    parts = ctx.world.gather(mine, root=0)
    if parts is None:
        return None
    n = ctx.prm.n_real
    t_faces = np.zeros((n, g.nt, g.Np))
    p_faces = np.zeros((n, g.Nt, g.Np))
    for r0, t0, bt, p0, bp in parts:
        t_faces[r0 : r0 + bt.shape[0], t0 : t0 + bt.shape[1], p0 : p0 + bt.shape[2]] = bt
        p_faces[r0 : r0 + bp.shape[0], t0 : t0 + bp.shape[1], p0 : p0 + bp.shape[2]] = bp
    vt_file = np.concatenate([t_faces[..., -1:], t_faces], axis=-1)  # p_1 = the seam column
    vp_file = np.concatenate([p_faces[..., -1:], p_faces, p_faces[..., :1]], axis=-1)  # ph_1 .. ph_M
    return vt_file, vp_file
