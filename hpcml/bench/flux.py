"""``hpcml bench flux``: the HipFT validation cases, hpcml and HipFT side by side; convergence.

Timing mode (default) runs each case of HipFT's test suite in fresh processes and,
when ``HIPFT_EXE`` names a HipFT executable, HipFT itself on the same inputs in the
same invocation, interleaved repetition by repetition (best of ``--repeat``), so both
see the same machine load:

* HipFT, one thread (``HIPFT_EXE``), and its whole-machine configurations that run:
  ``mpirun -np 2`` over realizations (``HIPFT_MPIRUN``, default ``mpirun``, Open MPI)
  and a second build compiled for two threads (``HIPFT_EXE_2T``, optional; gfortran
  fixes the thread count at build time);
* hpcml, one rank x one thread, and the whole machine: two ranks, and one rank x two
  Numba threads.

Both run with ``verbose = 0`` (HipFT prints every subcycle otherwise) and write their
history files.  Times: HipFT's own ``Wall clock time`` and phase timers (from its
log) and hpcml's solver time (setup + loop + output, measured in the run), plus both
processes' wall time including start-up.  The ratios compare solver times; the
advection phase is HipFT's ``Update`` (flows) + ``Advection`` against hpcml's flows +
advection.  Numba's cache is warm (an untimed run comes first); ``compile_s`` is
measured apart: one short run with an empty ``NUMBA_CACHE_DIR`` minus the same run
with the cache full.

``--device gpu`` runs hpcml with ``run.backend = "gpu"`` and reports the diffusion
phase's bytes/s against the device's memory bandwidth.  ``--quick`` shortens the long
cases (both codes run the same shortened case).  ``--validate`` compares full runs
with HipFT's reference histories; ``--convergence`` runs the diffusion (soccer ball)
and advection (Gaussian blobs rotated once) problems at three resolutions.

Traffic model of one fused diffusion stage, STREAM convention (no write-allocate):
three streams read (the increments ``v_{j-1}``, ``v_{j-2}`` and ``Y_0``) and one
written, 32 bytes per cell; an operator-only application moves 16 bytes per cell.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.apps.flux.history import HIPFT_CASES as CASES
from hpcml.bench.report import peak_rss_mib, write_report

QUICK_END = {"diffuse_soccer": 96.0, "diffuse_advect_soccer": 96.0, "diffuse_advect_atten_map_1cr": 96.0}
#: doubles per array of the one-thread STREAM triad that the diffusion rate is compared with
TRIAD_N = 1 << 24  # 128 MiB per array: 4x the L3 of the hosts measured here
CONV_RES = {
    "diffusion": ((46, 91), (91, 181), (181, 361)),
    "advection": ((91, 181), (181, 361), (361, 721)),
    "rigid": ((46, 91), (91, 181), (181, 361)),
}
# HipFT keeps its large temporaries off mmap with these (the suite README's settings)
HIPFT_ENV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=268435456"}
HIPFT_TIMERS = {"Wall clock time": "wall_s", "--> Update": "update_s", "--> Advecton": "adv_s",
                "--> Diffusion": "diff_s", "--> Analysis": "analysis_s", "--> I/O": "io_s"}  # fmt: skip
HPCML_CONFIGS = {"1x1": (1, 1), "2x1": (2, 1), "1x2": (1, 2)}  # name: (ranks, Numba threads per rank)


def _suite() -> Path:
    """The HipFT validation data shipped with the repository (``tests/data/hipft``)."""
    return Path(__file__).resolve().parents[2] / "tests" / "data" / "hipft"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml bench flux``."""
    parser.add_argument("--cases", nargs="+", default=list(CASES), help="HipFT suite cases to time")
    parser.add_argument(
        "--configs", nargs="+", default=list(HPCML_CONFIGS), choices=list(HPCML_CONFIGS),
        help="hpcml configurations: ranks x Numba threads",
    )  # fmt: skip
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="where hpcml's kernels run")
    parser.add_argument("--quick", action="store_true", help=f"shorten the long cases to {QUICK_END}")
    parser.add_argument("--end", type=float, default=None, help="end every case at this time, hours (smoke tests)")
    parser.add_argument("--convergence", action="store_true", help="convergence study instead of timings")
    parser.add_argument(
        "--scaling", action="store_true", help="the performance model: 1024 x 2048 on 1-4 ranks, MPI costs, 1-1024"
    )
    parser.add_argument("--steps", type=int, default=20, help="steps of the --scaling runs")
    parser.add_argument(
        "--validate", action="store_true", help="run every case in full and compare with HipFT (flux-validation.md)"
    )
    parser.add_argument("--suite", default=None, help="HipFT validation-case folder (default: tests/data/hipft)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run before it is killed")
    parser.add_argument(
        "--repeat", type=int, default=1, help="interleaved repetitions; the fastest run of each is reported"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-time measurement")


# -- one timed run (inside mpiexec) ---------------------------------------------------------
def worker(case: str, suite: str, time_end: float | None, result: str, keep: str | None = None,
           backend: str = "cpu") -> None:  # fmt: skip
    """Run one case on ``COMM_WORLD`` and write rank 0's summary as JSON (entry of the subprocess).

    ``keep``: write the history files there (with HipFT's per-subcycle rows) instead of a temporary folder.
    """
    from mpi4py import MPI

    from hpcml.apps.flux import config_from_hipft, run
    from hpcml.runtime import abort_on_error

    with abort_on_error():
        # Numba's runtime loads its registries at the first call of any compiled function in a
        # process (seconds, whether or not the cache is warm): start-up, timed apart like compiling
        ti = time.perf_counter()
        from hpcml.kernels.flux import sequential_row_sums

        sequential_row_sums(np.zeros((1, 1)))
        numba_init = time.perf_counter() - ti
        # The app's modules are imported before the clock, as HipFT's code is loaded before its
        # timer starts (run() imports them lazily; from source that is 0.3-0.7 s when Python may
        # not write bytecode caches, PYTHONDONTWRITEBYTECODE).  Loading Numba's cached kernels
        # inside the run is timed by hpcml.jit and taken out of the solver time below.
        import hpcml.apps.flux.output
        import hpcml.apps.flux.solver
        import hpcml.io.lock  # noqa: F401
        from hpcml import jit

        cfg = config_from_hipft(Path(suite) / case / "input" / "hipft.in")
        if time_end is not None:
            cfg["time"]["end"] = float(time_end)
        cfg["run"]["backend"] = backend
        with tempfile.TemporaryDirectory() as mine:
            tmp = MPI.COMM_WORLD.bcast(keep or mine, root=0)  # rank 0's folder for every rank
            cfg["output"].update(directory=tmp, maps="", hipft_maps=False)
            if keep is None:
                cfg["output"]["subcycle_rows"] = False
            MPI.COMM_WORLD.Barrier()
            t0, c0 = time.perf_counter(), jit.compile_seconds()
            summary = run(cfg, MPI.COMM_WORLD)
            elapsed = MPI.COMM_WORLD.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            # the least any rank spent loading (or compiling) kernels: a rank that waits for
            # another's load in a collective keeps that wait in its time
            load = MPI.COMM_WORLD.allreduce(jit.compile_seconds() - c0, op=MPI.MIN)
            summary["total_s"] = elapsed - load
            summary["with_load_s"] = elapsed
            summary["kernel_load_s"] = load
            summary["numba_init_s"] = MPI.COMM_WORLD.allreduce(numba_init, op=MPI.MAX)
            summary["peak_rss_mib"] = MPI.COMM_WORLD.allreduce(peak_rss_mib(), op=MPI.MAX)
            MPI.COMM_WORLD.Barrier()
        if MPI.COMM_WORLD.Get_rank() == 0:
            Path(result).write_text(json.dumps(summary, default=str))


def _launch(case: str, ranks: int, args: argparse.Namespace, time_end: float | None, suite: Path,
            keep: str | None = None, threads: int = 1,
            env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    mpiexec = Path(sys.executable).parent / "mpiexec"  # the venv's launcher, else the one on PATH
    if not mpiexec.is_file():
        mpiexec = Path(shutil.which("mpiexec") or "mpiexec")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result = fh.name
    backend = "gpu" if getattr(args, "device", "cpu") == "gpu" else "cpu"
    code = (
        "from hpcml.bench.flux import worker; "
        f"worker({case!r}, {str(suite)!r}, {time_end!r}, {result!r}, {keep!r}, {backend!r})"
    )
    full_env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1", **(env or {}))
    cmd = [str(mpiexec), "-n", str(ranks), sys.executable, "-c", code]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=args.timeout, check=False)
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
        out = json.loads(Path(result).read_text())
        out["process_s"] = time.perf_counter() - t0
        return out
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    finally:
        Path(result).unlink(missing_ok=True)


# -- HipFT -------------------------------------------------------------------------------------
def hipft_executables() -> dict[str, str]:
    """HipFT builds named by the environment: ``{"1t": HIPFT_EXE, "2t": HIPFT_EXE_2T}`` (those set)."""
    out = {}
    for key, var in (("1t", "HIPFT_EXE"), ("2t", "HIPFT_EXE_2T")):
        val = os.environ.get(var, "").strip()
        if not val:
            continue
        exe = shutil.which(val) or val
        if not (Path(exe).is_file() and os.access(exe, os.X_OK)):
            raise SystemExit(f"flux bench: {var}={val!r} is not an executable")
        out[key] = str(Path(exe).resolve())
    return out


def hipft_notes(exes: dict[str, str]) -> list[str]:
    """Table notes naming the HipFT builds missing from the comparison (what the ratios then mean)."""
    if not exes:
        return ["HIPFT_EXE not set (or --device gpu): no HipFT runs in this table."]
    if "2t" not in exes:
        return [
            "HIPFT_EXE_2T not set: HipFT's best machine configuration is chosen without a 2-thread build "
            "(build one with OMP_NUM_THREADS=2 ./build.sh ...: the thread count is fixed at compile time), so "
            "the machine ratio of a one-realization case is against one HipFT thread."
        ]
    return []


def parse_hipft_log(text: str) -> dict[str, float]:
    """HipFT's run-time summary (the ``Avg`` column): wall clock and phase times, seconds."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        for label, key in HIPFT_TIMERS.items():
            m = re.match(rf"\s*{re.escape(label)}\s*:?\s+([-\d.Ee+]+)", line)
            if m and key not in out:  # (HipFT writes "--> Diffusion" without a colon)
                out[key] = float(m.group(1))
    return out


def run_hipft(exe: str, case_dir: Path, time_end: float | None, ranks: int, timeout: float) -> dict[str, Any]:
    """Run a HipFT build on a copy of ``case_dir/input`` (``verbose = 0``); its timers and process wall time."""
    import f90nml

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "run"
        shutil.copytree(case_dir / "input", work)
        nml = f90nml.read(str(work / "hipft.in"))
        grp = nml["hipft_input_parameters"]
        grp["verbose"] = 0
        if time_end is not None:
            grp["time_end"] = float(time_end)
        (work / "hipft.in").unlink()
        nml.write(str(work / "hipft.in"))
        env = dict(os.environ, OMP_NUM_THREADS="1", **HIPFT_ENV)
        cmd = [exe, "hipft.in"]
        if ranks > 1:
            mpirun = os.environ.get("HIPFT_MPIRUN", "mpirun")
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
            cmd = [mpirun, "-np", str(ranks), *cmd]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except (subprocess.TimeoutExpired, OSError) as exc:
            return {"error": str(exc)}
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
        out: dict[str, Any] = parse_hipft_log(proc.stdout)
        out["process_s"] = wall
        if "wall_s" not in out:
            return {"error": "no 'Wall clock time' in HipFT's output"}
        return out


# -- timings -----------------------------------------------------------------------------------
def _hpcml_numbers(s: dict[str, Any]) -> dict[str, Any]:
    cells = s["realizations"] * s["grid"][0] * (s["grid"][1] - 1)
    tm = s["timers"]
    dif = tm["diffusion"]
    traffic = cells * (32.0 * s["diffusion_stages"] + 16.0 * s["diffusion_applies"])
    return {
        "wall_s": s["total_s"],
        "process_s": s["process_s"],
        "numba_init_s": s["numba_init_s"],
        "kernel_load_s": s.get("kernel_load_s", 0.0),
        "with_load_s": s.get("with_load_s", s["total_s"]),
        "adv_s": tm["advection"] + tm["flows"],
        "diff_s": dif,
        "analysis_s": tm["analysis"],
        "steps": s["steps"],
        "diff_GB_per_s": traffic / dif / 1e9 if dif > 0 else float("nan"),
        "peak_rss_mib": s.get("peak_rss_mib", float("nan")),
        "split": f"{s['ensemble_groups']}x{s['dims'][0]}x{s['dims'][1]}",
    }


def _best(runs: list[dict[str, Any]], key: str = "wall_s") -> dict[str, Any] | None:
    good = [r for r in runs if "error" not in r]
    return min(good, key=lambda r: r[key]) if good else None


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a and b else float("nan")


def compile_seconds(args: argparse.Namespace, suite: Path) -> float:
    """Numba compile time of a short 1cr run: an empty cache dir minus the same run with the cache full."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        cold = _launch("diffuse_advect_atten_map_1cr", 1, args, 0.5, suite, env=env)
        warm = _launch("diffuse_advect_atten_map_1cr", 1, args, 0.5, suite, env=env)
    if "error" in cold or "error" in warm:
        return float("nan")
    return cold["process_s"] - warm["process_s"]


def _gpu_bandwidth() -> float:
    """Peak memory bandwidth of GPU 0 in GB/s (CuPy device attributes), NaN without a GPU."""
    try:
        import cupy

        attrs = cupy.cuda.Device(0).attributes
        return 2.0 * attrs["MemoryClockRate"] * 1e3 * attrs["GlobalMemoryBusWidth"] / 8 / 1e9
    except Exception:
        return float("nan")


def _cpu_triad_gbs(n: int = TRIAD_N, repeat: int = 5) -> float:
    """One-thread STREAM triad in GB/s, measured now.

    The 1x1 runs use one thread, and the host's bandwidth moves with other tenants, so
    a figure measured on another day is no limit for this run.
    """
    import numba

    from hpcml.bench.kernels import stream_kernels

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        _, triad = stream_kernels(np, n)
        triad()
        best = math.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            triad()
            best = min(best, time.perf_counter() - t0)
    finally:
        numba.set_num_threads(threads)
    return 24 * n / best / 1e9


def _best_config(runs: dict[str, list]) -> tuple[str, dict[str, Any]] | None:
    """The fastest configuration and its best run, or None."""
    best = [(k, b) for k, v in runs.items() if (b := _best(v)) is not None]
    return min(best, key=lambda kb: kb[1]["wall_s"]) if best else None


def _case_row(
    case: str, hip: dict[str, list], mine: dict[str, list], args: argparse.Namespace, limit_gbs: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"case": case}
    h1 = _best(hip.get("1t", []))
    m1 = _best(mine.get("1x1", []))
    if m1 is not None:
        row.update({f"hpcml_1x1_{k}": v for k, v in m1.items() if k not in ("split",)})
    if h1 is not None:
        row.update(hipft_1t_wall_s=h1["wall_s"], hipft_1t_process_s=h1["process_s"],
                   hipft_1t_adv_s=h1.get("update_s", 0.0) + h1.get("adv_s", 0.0),
                   hipft_1t_diff_s=h1.get("diff_s"))  # fmt: skip
    if h1 is not None and m1 is not None:
        row["ratio_1x1"] = _ratio(h1["wall_s"], m1["wall_s"])
        row["ratio_1x1_process"] = _ratio(h1["process_s"], m1["process_s"])
        row["ratio_1x1_with_load"] = _ratio(h1["wall_s"], m1["with_load_s"])
        row["ratio_1x1_adv"] = _ratio(row["hipft_1t_adv_s"], m1["adv_s"])
        row["ratio_1x1_diff"] = _ratio(h1.get("diff_s"), m1["diff_s"])
    best_h = min(
        ((k, r) for k in hip if (r := _best(hip[k])) is not None), key=lambda kr: kr[1]["wall_s"], default=None
    )
    best_m = min(((k, r) for k in mine if (r := _best(mine[k])) is not None), key=lambda kr: kr[1]["wall_s"],
                 default=None)  # fmt: skip
    if best_m is not None:
        row.update(hpcml_machine=best_m[0], hpcml_machine_wall_s=best_m[1]["wall_s"])
    if best_h is not None:
        row.update(hipft_machine=best_h[0], hipft_machine_wall_s=best_h[1]["wall_s"])
    if best_h is not None and best_m is not None:
        row["ratio_machine"] = _ratio(best_h[1]["wall_s"], best_m[1]["wall_s"])
        row["ratio_machine_with_load"] = _ratio(best_h[1]["wall_s"], best_m[1].get("with_load_s"))
    for k, runs in list(hip.items()) + list(mine.items()):
        b = _best(runs)
        row[f"{k}_wall_s"] = b["wall_s"] if b is not None else float("nan")
    if m1 is not None and m1["diff_s"] > 0:
        row["diff_frac_of_limit"] = m1["diff_GB_per_s"] / limit_gbs
    return row


def _timings(args: argparse.Namespace, suite: Path) -> int:
    exes = hipft_executables() if args.device == "cpu" else {}
    rows: list[dict[str, Any]] = []
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    comp = float("nan") if args.no_compile else compile_seconds(args, suite)
    if not math.isnan(comp):
        print(f"flux bench: Numba compile time (short 1cr run, empty cache minus warm): {comp:.1f} s", flush=True)
    limit_gbs = _gpu_bandwidth() if args.device == "gpu" else _cpu_triad_gbs()
    for case in args.cases:
        end = args.end if args.end is not None else (QUICK_END.get(case) if args.quick else None)
        nreal = len(list((suite / case / "reference").glob("hipft_history_sol_r*.out"))) or 1
        _launch(case, 1, args, min(end or 24.0, 24.0), suite)  # warm the Numba cache, untimed
        hip: dict[str, list] = {}
        mine: dict[str, list] = {}
        for _ in range(max(1, args.repeat)):
            for key, exe in exes.items():
                hip.setdefault(key, []).append(run_hipft(exe, suite / case, end, 1, args.timeout))
            if "1t" in exes and nreal >= 2:
                hip.setdefault("np2", []).append(run_hipft(exes["1t"], suite / case, end, 2, args.timeout))
            for name in args.configs:
                ranks, threads = HPCML_CONFIGS[name]
                s = _launch(case, ranks, args, end, suite, threads=threads)
                mine.setdefault(name, []).append(s if "error" in s else _hpcml_numbers(s))
        for key, runs in list(hip.items()) + list(mine.items()):
            for r in runs:
                if "error" in r:
                    print(f"flux bench: {case} {key} failed: {r['error']}", file=sys.stderr)
        row = _case_row(case, hip, mine, args, limit_gbs)
        rows.append(row)
        print(
            f"{case:30s} hpcml 1x1 {row.get('hpcml_1x1_wall_s', float('nan')):7.2f} s  "
            f"HipFT 1t {row.get('hipft_1t_wall_s', float('nan')):7.2f} s  "
            f"ratio {row.get('ratio_1x1', float('nan')):.2f}  "
            f"machine: hpcml {row.get('hpcml_machine', '-')} {row.get('hpcml_machine_wall_s', float('nan')):.2f} s, "
            f"HipFT {row.get('hipft_machine', '-')} {row.get('hipft_machine_wall_s', float('nan')):.2f} s, "
            f"ratio {row.get('ratio_machine', float('nan')):.2f}",
            flush=True,
        )
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cols = ["case", "hpcml_1x1_steps", "hipft_1t_wall_s", "hpcml_1x1_wall_s", "ratio_1x1", "hipft_1t_process_s",
            "hpcml_1x1_process_s", "ratio_1x1_process", "hpcml_1x1_numba_init_s", "hpcml_1x1_kernel_load_s",
            "hpcml_1x1_with_load_s", "ratio_1x1_with_load", "hipft_1t_adv_s",
            "hpcml_1x1_adv_s", "ratio_1x1_adv",
            "hipft_1t_diff_s", "hpcml_1x1_diff_s", "ratio_1x1_diff", "hpcml_1x1_diff_GB_per_s", "diff_frac_of_limit",
            "hipft_machine", "hipft_machine_wall_s", "hpcml_machine", "hpcml_machine_wall_s", "ratio_machine",
            "ratio_machine_with_load",
            *[f"{k}_wall_s" for k in ("np2", "2t", *args.configs)], "hpcml_1x1_peak_rss_mib"]  # fmt: skip
    limit = (
        f"device memory bandwidth {limit_gbs:.0f} GB/s"
        if args.device == "gpu"
        else f"one-thread STREAM triad {limit_gbs:.1f} GB/s, measured at the start of this run ({TRIAD_N} doubles)"
    )
    notes = [
        f"load average {load0:.2f} at the start, {load1:.2f} at the end (2 cores shared with other jobs); best of "
        f"{max(1, args.repeat)} interleaved repetition(s).",
        "wall_s: HipFT's own 'Wall clock time'; hpcml's solver time (setup, loop, output) measured in the run, "
        "after Numba's one-time runtime start (numba_init_s: its registries load at the first compiled call of a "
        "process, cache warm or not) and the app's imports, less the time the run spent loading Numba's cached "
        "kernels (kernel_load_s, the least over the ranks; with_load_s and the ratio_*_with_load columns keep it in). "
        "process_s: the whole process (interpreter, imports, MPI, Numba start) as a user sees it. "
        "ratio = HipFT / hpcml (> 1: hpcml faster). adv = HipFT's Update + Advection vs hpcml's flows + advection.",
        "Machine configurations: HipFT 1t (one thread), np2 (mpirun -np 2 over realizations), 2t (a 2-thread "
        "build, HIPFT_EXE_2T); hpcml 1x1, 2x1 (2 ranks), 1x2 (1 rank, 2 Numba threads).",
        f"diff_frac_of_limit: diffusion phase traffic (32 B per cell per fused stage + 16 B per operator "
        f"application) against the {limit}.",
        f"Numba compile time, measured apart (empty cache minus warm, short 1cr run): {comp:.1f} s.",
    ]
    notes += hipft_notes(exes)
    meta = {"device": args.device, "quick": args.quick, "repeat": args.repeat, "compile_s": comp,
            "hipft": exes, "load": [load0, load1]}  # fmt: skip
    write_report("flux", rows, cols, args.out, meta=meta, notes=notes)
    print(f"flux bench: wrote {Path(args.out) / 'flux.md'}")
    return 0 if all("ratio_1x1" in r or not exes for r in rows) else 1


# -- validation ------------------------------------------------------------------------------
def _validation(args: argparse.Namespace, suite: Path) -> int:
    from hpcml.apps.flux.history import LOOSE, STRICT, compare_rows, read_history

    rows: list[dict[str, Any]] = []
    ok_all = True
    for case in args.cases:
        with tempfile.TemporaryDirectory() as tmp:
            s = _launch(case, 1, args, None, suite, keep=tmp)
            if "error" in s:
                rows.append({"case": case, "error": str(s["error"])})
                ok_all = False
                continue
            final: dict[str, float] = {}
            series: dict[str, float] = {}
            nreal = len(list((suite / case / "reference").glob("hipft_history_sol_r*.out")))
            nrows = 0
            for r in range(1, nreal + 1):
                names, got = read_history(Path(tmp) / f"hipft_history_sol_r{r:06d}.out")
                _, ref = read_history(suite / case / "reference" / f"hipft_history_sol_r{r:06d}.out")
                if got.shape != ref.shape:
                    rows.append({"case": case, "error": f"r{r}: {got.shape[0]} rows vs reference {ref.shape[0]}"})
                    ok_all = False
                    break
                nrows = got.shape[0]
                for n, v in compare_rows(names, got[-1:], ref[-1:]).items():
                    final[n] = max(final.get(n, 0.0), v)
                for n, v in compare_rows(names, got, ref).items():
                    series[n] = max(series.get(n, 0.0), v)
            else:
                tol = {**STRICT, **LOOSE}
                ok = all(final[n] <= t and series[n] <= t for n, t in tol.items())
                ok_all &= ok
                row = {"case": case, "realizations": nreal, "rows": nrows, "device": args.device, "pass": ok}
                for n in tol:
                    row[f"final {n}"] = final[n]
                    row[f"series {n}"] = series[n]
                row["series others (of scale)"] = max(v for n, v in series.items() if n not in tol)
                rows.append(row)
                print(f"{case:30s} pass={ok} final {', '.join(f'{n}={final[n]:.1e}' for n in tol)}", flush=True)
    cols = ["case", "realizations", "rows", "device", "pass"]
    cols += [f"final {n}" for n in (*STRICT, *LOOSE)] + [f"series {n}" for n in (*STRICT, *LOOSE)]
    cols.append("series others (of scale)")
    notes = [
        "Max relative difference to HipFT's reference history over all realizations: 'final' = last row "
        "(HipFT's own test), 'series' = every row (rows matched one to one).  Pass: 1e-6 on BR_MIN, BR_MAX, "
        "FLUX_POSITIVE, FLUX_NEGATIVE; 1e-5 on BR_ABS_MIN and VALIDATION_ERR_HHabs (|ref| < 1e-64 forgiven as "
        "HipFT's compare script does; validation errors below 1e-13 count as 0).",
        "'others': pole fluxes and areas relative to the total unsigned flux, dipoles relative to the largest "
        "dipole that flux allows (their own values are round-off noise in several cases).",
    ]
    write_report("flux-validation", rows, cols, args.out, notes=notes)
    print(f"flux bench: wrote {Path(args.out) / 'flux-validation.md'}")
    return 0 if ok_all else 1


# -- convergence ------------------------------------------------------------------------------
def _final_error(cfg: dict[str, Any]) -> float:
    from mpi4py import MPI

    from hpcml.apps.flux import FluxSolver

    with tempfile.TemporaryDirectory() as tmp:
        cfg["output"].update(directory=tmp, maps="", history=False, hipft_maps=False)
        s = FluxSolver(cfg, MPI.COMM_SELF)
        s.run()
        rows = s.diag.compute(s.st)
        s.lay.free()
    return float(rows[0][13])


def rigid_rotation_error(nt: int, np_: int, axis: tuple[float, float] = (90.0, 90.0), angle: float = math.pi / 2,
                         omega: float = 1.0) -> float:  # fmt: skip
    """Relative L2 error of a Gaussian spot advected by ``flow.rigid_omega`` against the rotated spot."""
    import h5py
    from mpi4py import MPI

    from hpcml.apps.flux import FluxSolver
    from hpcml.apps.flux.fields import gaussian_spot, rotated
    from hpcml.apps.flux.grid import KMS_TO_RSH
    from hpcml.config import load_config

    t = np.arange(nt) * (math.pi / (nt - 1))
    p = np.arange(np_) * (2 * math.pi / (np_ - 1))
    tt, pp = np.meshgrid(t, p, indexing="ij")
    with tempfile.TemporaryDirectory() as tmp:
        with h5py.File(Path(tmp) / "spot.h5", "w") as fh:
            fh["Data"], fh["dim1"], fh["dim2"] = gaussian_spot(tt, pp), p, t
        cfg = load_config(
            None,
            ["app=flux", f"grid.map='{tmp}/spot.h5'", 'initial.kind="map"', "grid.res_nt=0", "grid.res_np=0",
             "realizations.n=1", "flow.mf_p1=[22.0]", "flow.dr_model=0", "flow.mf_model=0", "flow.attenuate=false",
             f"flow.rigid_omega={omega}", f"flow.rigid_axis=[{axis[0]}, {axis[1]}]", "diffusion.advance=false",
             f"time.end={angle / (abs(omega) * KMS_TO_RSH)}"],
        )  # fmt: skip
        cfg["output"].update(directory=tmp, maps="", history=False, checkpoint="")
        s = FluxSolver(cfg, MPI.COMM_SELF)
        s.run()
        f = s.gather_field()[0]
        s.lay.free()
    exact = rotated(gaussian_spot, tt[:, 1:], pp[:, 1:], axis, angle * np.sign(omega))
    return float(np.sqrt(np.mean((f - exact) ** 2) / np.mean(exact**2)))


def convergence_rows() -> list[dict[str, Any]]:
    """Errors at three resolutions: diffusion (soccer ball), advection (Gaussian blobs), rigid rotation (a spot)."""
    from hpcml.config import load_config

    rows = []
    problems = {
        "diffusion (soccer ball, D=500 km^2/s, 100 h)": [
            'initial.kind="soccer"', "flow.advance=false", "diffusion.coef=[500.0]", "time.end=100.0",
            "time.dt_max=0.25", "realizations.n=1", "flow.mf_p1=[22.0]",
        ],
        "advection (Gaussian blobs, one rotation + pi/4 in theta, WENO3/SSPRK43)": [
            'initial.kind="gaussians"', "flow.advance=true", "diffusion.advance=false", "flow.vp_rigid_omega=1.0",
            "flow.vt_const=1.0", "flow.attenuate=false", "flow.dr_model=0", "flow.mf_model=0", "time.end=672.0",
            "realizations.n=1", "flow.mf_p1=[22.0]",
        ],
    }  # fmt: skip
    problems["rigid rotation (axis at colatitude 90, longitude 90; a Gaussian spot, a quarter turn)"] = []
    for name, over in problems.items():
        prev = None
        for nt, np_ in CONV_RES[name.split(" ")[0]]:
            if name.startswith("rigid"):
                err = rigid_rotation_error(nt, np_)
            else:
                cfg = load_config(None, ["app=flux", *over, f"grid.res_nt={nt}", f"grid.res_np={np_}"])
                err = _final_error(cfg)
            order = math.log2(prev / err) if prev is not None and err > 0 else float("nan")
            rows.append({"problem": name, "res": f"{nt}x{np_}", "dtheta_deg": 180.0 / (nt - 1), "error": err,
                         "order": order})  # fmt: skip
            print(f"{name:60s} {nt:4d}x{np_:<4d} error {err:.3e} order {order:.2f}", flush=True)
            prev = err
    return rows


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["problem"] for r in rows):
        pts = [r for r in rows if r["problem"] == name]
        h = np.array([r["dtheta_deg"] for r in pts])
        e = np.array([r["error"] for r in pts])
        ax.loglog(h, e, "o-", label=name.split(" (")[0])
        for p, style in ((2, ":"), (3, "--")):
            ax.loglog(
                h,
                e[-1] * (h / h[-1]) ** p,
                "k" + style,
                lw=0.7,
                label=f"order {p}" if name == rows[0]["problem"] else None,
            )
    ax.set_xlabel("grid spacing (degrees)")
    ax.set_ylabel("VALIDATION_ERR (normalised L2)")
    ax.legend(fontsize=8)
    ax.set_title("hpcml flux: convergence", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``hpcml bench flux``."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() != 0:  # the benchmark launches its own mpiexec runs
        return 0
    suite = Path(args.suite) if args.suite else _suite()
    if args.scaling:
        from hpcml.bench.flux_scaling import scaling

        strong, weak, notes = scaling(args)
        cols = ["ranks", "split", "measured_ms", "model_here_ms", "measured_over_model", "compute_ms", "halo_ms",
                "caps_ms", "reduce_ms", "model_ms", "efficiency"]  # fmt: skip
        write_report("flux-scaling", strong, cols, args.out, notes=notes,
                     title="hpcml flux: strong scaling of one 1024 x 2048 realization (ms per step)")  # fmt: skip
        write_report("flux-weak", weak, ["realizations", "ranks", "model_ms", "reduce_ms", "efficiency"], args.out,
                     notes=notes, title="hpcml flux: weak scaling, one realization per 4 ranks (model)")  # fmt: skip
        print(f"flux bench: wrote {Path(args.out) / 'flux-scaling.md'} and flux-weak.md")
        return 0
    if args.convergence:
        rows = convergence_rows()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _plot(rows, out / "flux-convergence.png")
        write_report(
            "flux-convergence", rows, ["problem", "res", "dtheta_deg", "error", "order"], out,
            notes=["error: HipFT's VALIDATION_ERR_HHabs of the final field against the exact solution",
                   f"plot: {out / 'flux-convergence.png'}"],
        )  # fmt: skip
        print(f"flux bench: wrote {out / 'flux-convergence.md'} and flux-convergence.png")
        return 0
    if not suite.is_dir():
        print(f"flux bench: HipFT validation cases not found at {suite}; pass --suite", file=sys.stderr)
        return 2
    if args.validate:
        return _validation(args, suite)
    return _timings(args, suite)
