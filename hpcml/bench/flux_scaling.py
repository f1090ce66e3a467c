"""``hpcml bench flux --scaling``: a measured performance model of the flux app beyond one node.

1. Runs one realization on a 1024 x 2048 grid (attenuated flows, diffusion, a history
   row every step: the 1cr case's configuration at 0.18 degrees) for ``--steps`` steps on
   1, 2 and 4 ranks (theta x phi splits), and records the time per step, the halo
   exchanges and the cap reductions per step.
2. Measures, on 2 ranks, what the model needs from MPI here: the time of one halo
   exchange of that field split in theta and in phi at two sizes (latency ``a`` and
   bandwidth ``b`` of a message, plus hpcml's fixed cost per exchange), an ``allreduce``
   of one double and the ``Allgatherv`` of a pole row.
3. Predicts the time per step of one realization on ``P`` = 1 .. 1024 ranks (strong
   scaling; ``MPI.Compute_dims`` splits as the app does) and of an ensemble with one
   realization per ``g`` ranks (weak scaling), and checks the prediction against the
   measured 1-4 rank points.

Model, per step (``N`` cells, ``P = pt x pp`` ranks, block ``n_t x n_p``):

    T(P) = c N / P * (s if P > 1 else 1)             compute, c from the 1-rank run
         + X (h + m(P) a + B(P) / b)                 X halo exchanges of m messages, B bytes
         + K (a log2(pp) + 8 (2048 / pp) (pp - 1) / b)   K cap reductions along phi
         + R a_r ceil(log2 P)                        R global reductions (CFL, PTL, history)

``s`` is the node's memory-bandwidth share: a STREAM triad's time with every core of
the node running one (2 ranks here) over its time on one rank alone.  The step is
bound by memory bandwidth (about 85 diffusion stages a step, each streaming arrays of
17 MB), so a rank on a full node computes ``s`` times slower than one alone; without
``s`` the model put 2 ranks here at 273 ms a step against 351 measured.  Ranks on
other nodes are assumed to fill their nodes as these do.

Beyond one node the same formula holds with an interconnect's ``a`` and ``b``
(assumed, named in the report).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.bench.report import oversubscribed_note, usable_cpus

NT, NP = 1024, 2048
SPLITS = {1: (1, 1), 2: (2, 1), 4: (2, 2)}
# one InfiniBand HDR link between nodes (assumed for the model, not measured here)
INTERNODE = {"a_s": 2.0e-6, "b_Bps": 12.0e9, "ar_s": 4.0e-6}


def config(steps: int, dims: tuple[int, int], outdir: str) -> dict[str, Any]:
    """The model's run: 1cr-like physics on one 1024 x 2048 realization, ``steps`` steps of 0.25 h."""
    from hpcml.config import load_config

    cfg = load_config(
        None,
        ["app=flux", f"grid.res_nt={NT}", f"grid.res_np={NP + 1}", 'initial.kind="bipolar"', "realizations.n=1",
         "flow.mf_p1=[22.0]", "flow.attenuate=true", "flow.attenuate_values=[300.0]", "diffusion.coef=[25.0]",
         "time.dt_max=0.25", f"time.end={0.25 * steps}", "run.backend='cpu'", "output.map_cadence=0.0"],
    )  # fmt: skip
    cfg["output"].update(directory=outdir, maps="", history=True, checkpoint="", hipft_maps=False)
    cfg["decomposition"].update(ensemble=1, dims=list(dims))
    return cfg


def run_worker(steps: int, result: str) -> None:
    """Inside mpiexec: the model's run on COMM_WORLD; rank 0 writes the measured numbers as JSON."""
    from mpi4py import MPI

    from hpcml.apps.flux import FluxSolver
    from hpcml.kernels.flux import sequential_row_sums
    from hpcml.runtime import abort_on_error

    comm = MPI.COMM_WORLD
    with abort_on_error():
        sequential_row_sums(np.zeros((1, 1)))  # Numba's runtime start, outside the timings
        with tempfile.TemporaryDirectory() as mine:
            out = comm.bcast(mine, root=0)
            s = FluxSolver(config(1, SPLITS[comm.Get_size()], out), comm)
            s.run()  # one step: every kernel loaded from the cache
            s.lay.free()
            s = FluxSolver(config(steps, SPLITS[comm.Get_size()], out), comm)
            ex0 = s.ctx.exchanges
            summary = s.run()
            ex = s.ctx.exchanges - ex0
            caps = (s.adv.n_stages if s.adv else 0) + (
                (s.diff.n_stages + s.diff.n_applies) if s.diff else 0
            )  # fmt: skip
            s.lay.free()
        if comm.Get_rank() == 0:
            rec = {"ranks": comm.Get_size(), "steps": summary["steps"], "seconds": summary["seconds"],
                   "timers": summary["timers"], "exchanges": ex, "cap_reductions": caps,
                   "cycles": s.diff.cycles if s.diff else 0}  # fmt: skip
            Path(result).write_text(json.dumps(rec))


def comm_worker(result: str) -> None:
    """Inside ``mpiexec -n 2``: halo exchanges at two sizes and two splits, allreduce and row gather times."""
    from mpi4py import MPI

    from hpcml.apps.flux.device import CpuDevice
    from hpcml.apps.flux.grid import SphereGrid
    from hpcml.apps.flux.layout import Layout

    comm = MPI.COMM_WORLD
    dev = CpuDevice()
    out: dict[str, Any] = {}

    def timed(fn: Any, n: int) -> float:
        fn()
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return comm.allreduce(time.perf_counter() - t0, op=MPI.MAX) / n

    for nt, np_ in ((256, 512), (NT, NP)):
        g = SphereGrid.uniform(nt, np_ + 1)
        for dims in ((2, 1), (1, 2)):
            lay = Layout(g, 1, comm, 1, dims)
            fld = dev.field(lay.decomp_for(1))
            t = timed(lambda fld=fld: dev.exchange(fld, "auto"), 100)
            nbytes = 2 * 3 * 8 * (lay.nx if dims[0] == 2 else lay.ny)  # both directions' messages per rank
            out[f"exchange_{nt}x{np_}_{dims[0]}x{dims[1]}"] = {"s": t, "bytes": nbytes}
            if dims == (1, 2) and nt == NT:
                terms = np.zeros((2, lay.nx))
                out["row_sum_s"] = timed(lambda terms=terms, lay=lay: lay.row_sum(terms), 200)
            lay.free()
    out["allreduce_s"] = timed(lambda: comm.allreduce(1.0, op=MPI.MAX), 2000)
    out["triad_share"] = triad_share(comm)
    if comm.Get_rank() == 0:
        Path(result).write_text(json.dumps(out))


def triad_share(comm: Any, n: int = 1 << 23, repeat: int = 5) -> float:
    """A STREAM triad's time with every rank of ``comm`` running it at once over rank 0's time alone (collective).

    ``n`` doubles per array (64 MiB: far outside any cache); best of ``repeat`` each way.
    The other ranks wait in a barrier while rank 0 runs alone.
    """
    from mpi4py import MPI

    from hpcml.bench.kernels import _stream_triad

    a, b, c = np.zeros(n), np.ones(n), np.ones(n)
    _stream_triad(a, b, c, 3.0)  # compiled or loaded, pages touched

    def best() -> float:
        t = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            _stream_triad(a, b, c, 3.0)
            t = min(t, time.perf_counter() - t0)
        return t

    comm.Barrier()
    alone = best() if comm.Get_rank() == 0 else 0.0
    comm.Barrier()
    together = comm.allreduce(best(), op=MPI.MAX)
    alone = comm.bcast(alone, root=0)
    return max(together / alone, 1.0)


def _mpi(n: int, code: str, timeout: float) -> dict[str, Any]:
    import os
    import shutil

    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.is_file():
        mpiexec = Path(shutil.which("mpiexec") or "mpiexec")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result = fh.name
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [str(mpiexec), "-n", str(n), sys.executable, "-c", code.format(result=result)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"flux scaling: {n}-rank run failed: {(proc.stderr or proc.stdout)[-800:]}")
        return json.loads(Path(result).read_text())
    finally:
        Path(result).unlink(missing_ok=True)


def fit_messages(comm_rec: dict[str, Any]) -> dict[str, float]:
    """Per-exchange fixed cost ``h`` and per-byte cost ``1/b`` from the two-size exchanges (least squares)."""
    xs, ys = [], []
    for key, v in comm_rec.items():
        if key.startswith("exchange_"):
            xs.append(v["bytes"])
            ys.append(v["s"])
    slope, icpt = np.polyfit(np.array(xs, dtype=float), np.array(ys), 1)
    return {"h_s": max(float(icpt), 0.0), "b_Bps": 1.0 / slope if slope > 0 else float("inf")}


def predict(p: int, c_cell: float, per_step: dict[str, float], comm: dict[str, float], a: float, ar: float,
            ensemble: int = 1, share: float = 1.0) -> dict[str, float]:  # fmt: skip
    """Model time per step on ``p`` ranks per realization (``ensemble`` realizations side by side).

    ``share``: how much slower a rank computes on a full node than alone (:func:`triad_share`);
    it applies wherever more than one rank runs.
    """
    from mpi4py import MPI

    pt, pp = MPI.Compute_dims(p, [0, 0])
    nt_b, np_b = NT / pt, NP / pp
    msgs = 2 * (pt > 1) + 2 * (pp > 1)
    nbytes = 2 * 3 * 8 * ((np_b if pt > 1 else 0) + (nt_b if pp > 1 else 0))
    compute = c_cell * NT * NP / p * (share if p * ensemble > 1 else 1.0)
    halo = per_step["exchanges"] * (comm["h_s"] + msgs * a + nbytes / comm["b_Bps"]) if p > 1 else 0.0
    caps = per_step["caps"] * (a * math.log2(pp) + 8 * np_b * (pp - 1) / comm["b_Bps"]) if pp > 1 else 0.0
    total_p = p * ensemble
    reduce = per_step["reductions"] * ar * math.ceil(math.log2(total_p)) if total_p > 1 else 0.0
    gather = a * (ensemble - 1)  # the history row: rank 0 receives every group's partial sums
    return {"pt": pt, "pp": pp, "compute_s": compute, "halo_s": halo, "caps_s": caps, "reduce_s": reduce + gather,
            "step_s": compute + halo + caps + reduce + gather}  # fmt: skip


def scaling(args: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """Measure, fit, predict; rows for the strong and the weak scaling tables and notes."""
    runs = {}
    for n, dims in SPLITS.items():
        code = f"from hpcml.bench.flux_scaling import run_worker; run_worker({args.steps}, {{result!r}})"
        runs[n] = _mpi(n, code, args.timeout)
        r = runs[n]
        print(f"flux scaling: {n} rank(s) {dims}: {r['seconds'] / r['steps'] * 1e3:.1f} ms per step", flush=True)
    crec = _mpi(2, "from hpcml.bench.flux_scaling import comm_worker; comm_worker({result!r})", args.timeout)
    fit = fit_messages(crec)
    one = runs[1]
    steps = one["steps"]
    c_cell = one["seconds"] / steps / (NT * NP)
    per_step = {"exchanges": one["exchanges"] / steps, "caps": one["cap_reductions"] / steps,
                "reductions": 1 + 2 * max(one["cycles"], 1) + 1}  # fmt: skip
    here = {"h_s": fit["h_s"], "b_Bps": fit["b_Bps"]}
    a_here = crec["allreduce_s"] / 2  # a two-rank allreduce is about two messages
    share = float(crec.get("triad_share", 1.0))
    strong = []
    for p in (1, 2, 4, 16, 64, 256, 1024):
        node = predict(p, c_cell, per_step, here, a_here, crec["allreduce_s"], share=share)
        net = predict(p, c_cell, per_step, {"h_s": fit["h_s"], "b_Bps": INTERNODE["b_Bps"]}, INTERNODE["a_s"],
                      INTERNODE["ar_s"], share=share)  # fmt: skip
        row = {"ranks": p, "split": f"{node['pt']}x{node['pp']}", "compute_ms": node["compute_s"] * 1e3,
               "halo_ms": net["halo_s"] * 1e3, "caps_ms": net["caps_s"] * 1e3, "reduce_ms": net["reduce_s"] * 1e3,
               "model_ms": net["step_s"] * 1e3, "efficiency": one["seconds"] / steps / p / net["step_s"]}  # fmt: skip
        if p in runs:
            meas = runs[p]["seconds"] / runs[p]["steps"]
            row.update(model_here_ms=node["step_s"] * 1e3, measured_ms=meas * 1e3,
                       measured_over_model=meas / node["step_s"])  # fmt: skip
        strong.append(row)
    weak = []
    inter = {"h_s": fit["h_s"], "b_Bps": INTERNODE["b_Bps"]}
    base = predict(4, c_cell, per_step, inter, INTERNODE["a_s"], INTERNODE["ar_s"], share=share)["step_s"]
    for groups in (1, 4, 16, 64, 256, 1024):
        net = predict(4, c_cell, per_step, inter, INTERNODE["a_s"], INTERNODE["ar_s"], ensemble=groups, share=share)
        weak.append({"realizations": groups, "ranks": 4 * groups, "model_ms": net["step_s"] * 1e3,
                     "reduce_ms": net["reduce_s"] * 1e3, "efficiency": base / net["step_s"]})  # fmt: skip
    notes = [
        f"measured here: c = {c_cell * 1e9:.1f} ns per cell per step (1 rank, {steps} steps, "
        f"{per_step['exchanges']:.1f} halo exchanges, {per_step['caps']:.1f} cap reductions per step); "
        f"halo exchange: fixed {fit['h_s'] * 1e6:.1f} us + bytes / {fit['b_Bps'] / 1e9:.2f} GB/s (2 ranks, "
        f"two sizes, theta and phi splits); allreduce of one double {crec['allreduce_s'] * 1e6:.1f} us; "
        f"pole-row Allgatherv + sum {crec.get('row_sum_s', float('nan')) * 1e6:.1f} us; memory-bandwidth share "
        f"s = {share:.2f} (a triad's time with both ranks running it over one rank alone; it multiplies the "
        "compute wherever more than one rank runs, on the assumption that every node is as full as this one).",
        f"model_here_ms: the same model with this machine's messages; model_ms (and the columns before it) with "
        f"an assumed interconnect between nodes: latency {INTERNODE['a_s'] * 1e6:.0f} us, "
        f"{INTERNODE['b_Bps'] / 1e9:.0f} GB/s, allreduce step {INTERNODE['ar_s'] * 1e6:.0f} us.",
    ]
    most = max(runs)
    crowded = oversubscribed_note(most, usable_cpus())
    if crowded:
        notes.append(f"{crowded}; the model does not include it (its {most}-rank row is a {most}-core node's).")
    return strong, weak, notes
