"""Command line: ``hpcml run | bench | analyze | info``.

Every subcommand runs under :class:`~hpcml.runtime.abort_on_error`: an exception
on any rank prints ``[rank R] Type: message`` and aborts the whole job.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import socket
import sys
from collections.abc import Sequence
from typing import Any

from hpcml._version import __version__
from hpcml.runtime import abort_on_error

__all__ = ["main"]


def _setup_logging(rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stdout, force=True)


# -- info ------------------------------------------------------------------------------------
def collect_info() -> dict[str, Any]:
    """Everything a user debugging a job needs, gathered over all ranks (collective)."""
    import h5py
    import numba
    import numpy as np
    from mpi4py import MPI

    import hpcml
    from hpcml.cudaaware import describe as describe_cuda_aware
    from hpcml.halo import choose_method

    rt = hpcml.init()
    comm = MPI.COMM_WORLD
    mine = {"rank": rt.rank, "host": socket.gethostname(), "threads": rt.threads, "gpu": rt.gpu}
    ranks = comm.gather(mine, root=0)
    info: dict[str, Any] = {
        "hpcml": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "mpi4py": importlib.import_module("mpi4py").__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "h5py_mpi": bool(h5py.get_config().mpi),
        "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
        "mpi_standard": "{}.{}".format(*MPI.Get_version()),
        "launcher": rt.launcher,
        "ranks": rt.size,
        "nodes": rt.nodes,
        "ranks_per_node": rt.local_size,
        "threads_per_rank": rt.threads,
        "threads_from": "NUMBA_NUM_THREADS" if rt.threads_from_env else "cores per node / ranks per node",
        "gpus_seen": rt.gpus_seen,
        "cuda_aware_mpi": describe_cuda_aware(),
        "halo_method_cpu": choose_method(False),
        "halo_method_gpu": choose_method(True),
        "per_rank": ranks,
    }
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except Exception:
        info["cupy"] = None
    return info


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, MPI, layout, threads, GPUs."""
    from mpi4py import MPI

    info = collect_info()
    if MPI.COMM_WORLD.Get_rank() != 0:
        return 0
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "per_rank":
            continue
        print(f"{key:<{width}}  {value}")
    print("per rank:")
    for r in info["per_rank"]:
        gpu = "-" if r["gpu"] is None else r["gpu"]
        print(f"  rank {r['rank']:>4}  host {r['host']}  threads {r['threads']}  gpu {gpu}")
    return 0


# -- run -------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Run an application from a TOML config (or the built-in defaults)."""
    from mpi4py import MPI

    import hpcml
    import hpcml.runtime
    from hpcml.apps import APPS
    from hpcml.config import load_config

    comm = MPI.COMM_WORLD
    _setup_logging(comm.Get_rank())
    if args.hipft:  # a HipFT namelist becomes a full flux config; --set still applies
        if args.config:
            raise ValueError("give either a TOML config or --hipft NAMELIST, not both")
        from hpcml.apps.flux import config_from_hipft
        from hpcml.config import apply_overrides

        # rank 0 reads and checks the namelist, every rank gets the config (errors printed once)
        hipft, sets = args.hipft, args.set or []
        config = hpcml.runtime.root_decides(lambda: apply_overrides(config_from_hipft(hipft), sets), comm)
    else:
        config = load_config(args.config, args.set or [])  # validated before any collective
    rt = hpcml.init()
    hpcml.runtime.install_stop_handlers()
    log = logging.getLogger("hpcml")
    gpu = f", GPU {rt.gpus_seen} seen" if rt.gpus_seen else ", no GPU"
    log.info(
        "hpcml %s: app %s, %d ranks on %d node(s) via %s, %d thread(s) per rank%s",
        __version__,
        config["app"],
        rt.size,
        rt.nodes,
        rt.launcher,
        rt.threads,
        gpu,
    )
    app = importlib.import_module(APPS[config["app"]])
    summary = app.run(config, comm)
    if comm.Get_rank() == 0:
        if args.json:
            print(json.dumps(summary, indent=2, default=float))
        else:
            log.info("summary: %s", ", ".join(f"{k}={_short(v)}" for k, v in summary.items()))
    return 0


def _short(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


# -- bench -----------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    """Dispatch to the chosen benchmark module."""
    from mpi4py import MPI

    import hpcml

    _setup_logging(MPI.COMM_WORLD.Get_rank())
    hpcml.init()
    return int(args.bench_module.run(args) or 0)


def _add_bench(sub: Any) -> None:
    from hpcml.bench import BENCHMARKS

    bench = sub.add_parser("bench", help="measure performance; writes JSON and a Markdown table")
    names = bench.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name, modname in BENCHMARKS.items():
        try:
            mod = importlib.import_module(modname)
        except ImportError as exc:  # a benchmark whose module is not installed yet
            p = names.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(func=_unavailable(name, exc))
            continue
        p = names.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--out", default="bench-results", help="directory for NAME.json and NAME.md")
        mod.add_arguments(p)
        p.set_defaults(func=cmd_bench, bench_module=mod)


def _unavailable(name: str, exc: Exception) -> Any:
    def fail(args: argparse.Namespace) -> int:
        raise RuntimeError(f"benchmark {name!r} cannot run: {exc}")

    return fail


# -- analyze ---------------------------------------------------------------------------------
def _add_analyze(sub: Any) -> None:
    try:
        mod = importlib.import_module("hpcml.io.analyze")
    except ImportError:
        return
    p = sub.add_parser("analyze", help="summarise an HDF5 output file and plot it")
    mod.add_arguments(p)
    p.set_defaults(func=mod.run)


# -- jobscript -------------------------------------------------------------------------------
def cmd_jobscript(args: argparse.Namespace) -> int:
    """Print a validated batch script."""
    from hpcml.jobscript import JobRequest, render

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    req = JobRequest(
        scheduler=args.scheduler,
        nodes=args.nodes,
        ntasks_per_node=args.ntasks_per_node,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        command=command,
        gpus_per_task=args.gpus_per_task,
        partition=args.partition,
        account=args.account,
        job_name=args.job_name,
        cores_per_node=args.cores_per_node,
    )
    text = render(req)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _add_jobscript(sub: Any) -> None:
    p = sub.add_parser("jobscript", help="print a SLURM or mpirun batch script for an hpcml command")
    p.add_argument("--scheduler", choices=["slurm", "mpirun"], default="slurm")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--ntasks-per-node", type=int, required=True)
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--gpus-per-task", type=int, default=0)
    p.add_argument("--time", required=True, help="wall time [D-]HH:MM:SS")
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--job-name", default="hpcml")
    p.add_argument("--cores-per-node", type=int, help="check tasks x CPUs against the node size")
    p.add_argument("-o", "--output", help="write the script here instead of stdout")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to run, e.g. -- hpcml run job.toml")
    p.set_defaults(func=cmd_jobscript)


def build_parser() -> argparse.ArgumentParser:
    """The ``hpcml`` argument parser."""
    parser = argparse.ArgumentParser(prog="hpcml", description="MPI domain decomposition, kernels and solvers")
    parser.add_argument("--version", action="version", version=f"hpcml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="versions, MPI, ranks, threads and GPUs of this launch")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("run", help="run an application from a TOML config")
    p.add_argument("config", nargs="?", help="TOML file (default: the built-in flux-transport job)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    p.add_argument("--hipft", metavar="NAMELIST", help="run a HipFT hipft.in namelist with the flux app")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=cmd_run)
    _add_bench(sub)
    _add_analyze(sub)
    _add_jobscript(sub)
    return parser


@abort_on_error()
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpcml`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
