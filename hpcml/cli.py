"""Command line: ``hpcml run | bench | analyze | info | jobscript | config``.

Conventions (the same for every subcommand):

* logs and errors go to stderr, results (``--json``, tables, summaries) to stdout;
  ``-q`` keeps warnings only, ``-v`` adds debug lines; only rank 0 logs at INFO;
* exit status 2 for usage and configuration errors, 130 on Ctrl-C, 1 on a failure;
* an exception on any rank prints ``[rank R] Type: message`` and aborts the whole job
  (:class:`~hpcml.runtime.abort_on_error`); the configuration (file, ``--set``, HipFT
  namelist) is read and checked by rank 0 and broadcast, so an error in it is printed
  once, before any other collective, and every rank exits 2;
* MPI is imported only by the subcommands that need it: ``--help``, ``--version``,
  ``jobscript``, ``config`` and a serial ``analyze`` run on a login node without
  ``MPI_Init``, and ``hpcml --help`` imports no benchmark or kernel module.
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

__all__ = ["build_parser", "main"]

#: exit status of usage and configuration errors (argparse's)
EXIT_USAGE = 2


def _setup_logging(rank: int, verbose: int = 0) -> None:
    """Logs on stderr: rank 0 at INFO (``-v``: DEBUG, ``-q``: WARNING), other ranks warnings only."""
    if verbose < 0:
        level = logging.WARNING if rank == 0 else logging.ERROR
    elif rank == 0:
        level = logging.DEBUG if verbose > 0 else logging.INFO
    else:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)


class _Parser(argparse.ArgumentParser):
    """argparse that prints a usage error once per job (launcher rank 0), then exits 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        from hpcml.runtime import launch_rank

        if launch_rank() == 0:
            self.print_usage(sys.stderr)
            sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


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
        "blas_threads_per_rank": rt.blas_threads,
        "blas_threads_from": "environment" if rt.blas_threads_from_env else "cores per node / ranks per node",
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
    if args.grid:
        info["process_grid"] = _describe_grid(args.grid, args.halo, MPI.COMM_WORLD.Get_size())
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


def _describe_grid(spec: str, halo: int, size: int) -> str:
    """The process grid ``CartDecomp`` chooses for a global shape ``spec`` (``512x1024``) on ``size`` ranks."""
    from hpcml.decomp import choose_dims, halo_cells_per_step, largest_valid_size

    shape = tuple(int(x) for x in spec.lower().split("x"))
    dims = choose_dims(shape, size, halo)
    if dims is None:
        best = largest_valid_size(shape, size, halo)
        limit = f"at most {best[0]} ranks (dims {'x'.join(map(str, best[1]))})" if best else "none"
        return f"no valid grid for {spec} with halo {halo} on {size} ranks; {limit}"
    cells = halo_cells_per_step(shape, dims, (halo,) * len(shape), (False,) * len(shape))
    return f"{'x'.join(map(str, dims))} for {spec}, halo {halo} ({cells} ghost cells per exchange, busiest rank)"


# -- run -------------------------------------------------------------------------------------
def _load_run_config(args: argparse.Namespace, ranks: int) -> dict[str, Any]:
    """The effective config, validated by its app (reads the files; no MPI, nothing written)."""
    from hpcml.apps import APPS
    from hpcml.config import ConfigError, apply_overrides, load_config

    if args.hipft:  # a HipFT namelist becomes a full flux config; --set still applies
        if args.config:
            raise ConfigError("give either a TOML config or --hipft NAMELIST, not both")
        from hpcml.apps.flux import config_from_hipft

        config = apply_overrides(config_from_hipft(args.hipft), args.set or [])
    else:
        config = load_config(args.config, args.set or [])
    importlib.import_module(APPS[config["app"]]).validate_config(config, ranks)
    return config


def root_decides_config(comm: Any, load: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Rank 0 runs ``load()`` (reads the config or namelist, validates it) and broadcasts the outcome.

    Returns ``(config, None)`` on every rank, or ``(None, message)`` on every rank when
    ``load`` raised a :class:`~hpcml.config.ConfigError`: the caller prints it once
    (rank 0) and every rank exits 2.  The broadcast is unconditional, so no rank can
    wait in a collective the others skip, and only rank 0 touches the input files.
    """
    from hpcml.config import ConfigError

    outcome: tuple[dict[str, Any] | None, str | None] = (None, None)
    if comm.Get_rank() == 0:
        try:
            outcome = (load(), None)
        except ConfigError as exc:
            outcome = (None, str(exc))
    return comm.bcast(outcome, root=0)


def cmd_run(args: argparse.Namespace) -> int:
    """Run an application from a TOML config (or the built-in defaults)."""
    from mpi4py import MPI

    import hpcml
    import hpcml.runtime

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    _setup_logging(rank, args.verbose)
    config, error = root_decides_config(comm, lambda: _load_run_config(args, comm.Get_size()))
    if error is not None:
        if rank == 0:
            sys.stderr.write(f"hpcml run: configuration error: {error}\n")
        return EXIT_USAGE
    from hpcml.apps import APPS

    app = importlib.import_module(APPS[config["app"]])
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
    summary = app.run(config, comm)
    from hpcml import jit

    # Compile time on its own line: the app's phase timers run on jit.work_clock, which stops meanwhile.
    summary["compile_seconds"] = comm.allreduce(jit.compile_seconds(), op=MPI.MAX)
    if summary["compile_seconds"] >= 1.0:
        log.info(
            "kernels: %.1f s compiling or loading Numba's cache (not in the timings above)", summary["compile_seconds"]
        )
    if rank == 0:
        if args.json:
            print(json.dumps(summary, indent=2, default=float))
        else:
            width = max(len(k) for k in summary)
            for key, value in summary.items():
                print(f"{key:<{width}}  {_short(value)}")
    return 0


def _short(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    from hpcml.apps import SUMMARIES

    apps = "\n".join(f"  {name:<9} {text}" for name, text in SUMMARIES.items())
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run an application from a TOML config",
        description=f'Run an application. Apps (choose with app = "NAME" in the file or --set app=NAME):\n{apps}',
        epilog="--set may be repeated; `hpcml config show APP` prints every option with its default.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="TOML file (default: the built-in flux-transport job)")
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable; the value is TOML: 2, 1e-6, true, [1, 2], 'text')",
    )
    p.add_argument("--hipft", metavar="NAMELIST", help="run a HipFT hipft.in namelist with the flux app")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    p.set_defaults(func=cmd_run)


# -- bench -----------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    """Dispatch to the chosen benchmark module."""
    from mpi4py import MPI

    import hpcml

    _setup_logging(MPI.COMM_WORLD.Get_rank(), args.verbose)
    hpcml.init()
    return int(args.bench_module.run(args) or 0)


def _selected(argv: Sequence[str], command: str) -> str | None:
    """The word after ``command`` in ``argv`` (the chosen benchmark), if any."""
    words = [a for a in argv if not a.startswith("-")]
    if command in words:
        i = words.index(command)
        if i + 1 < len(words):
            return words[i + 1]
    return None


def _add_bench(sub: Any, common: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """``bench NAME``: only the chosen benchmark's module is imported (``--help`` stays fast)."""
    from hpcml.bench import BENCHMARKS

    bench = sub.add_parser("bench", help="measure performance; writes JSON and a Markdown table")
    names = bench.add_subparsers(dest="bench", required=True, metavar="NAME")
    chosen = _selected(argv, "bench")
    for name, entry in BENCHMARKS.items():
        p = names.add_parser(name, parents=[common], help=entry.summary, description=entry.summary)
        if name != chosen:
            continue
        try:
            mod = importlib.import_module(entry.module)
        except ImportError as exc:  # an optional dependency of this benchmark is missing
            p.set_defaults(func=_unavailable(name, exc))
            continue
        p.add_argument("--out", default="bench-results", help="directory for NAME.json and NAME.md")
        mod.add_arguments(p)
        p.set_defaults(func=cmd_bench, bench_module=mod)


def _unavailable(name: str, exc: Exception) -> Any:
    def fail(args: argparse.Namespace) -> int:
        raise RuntimeError(f"benchmark {name!r} cannot run: {exc}")

    return fail


# -- analyze ---------------------------------------------------------------------------------
def _add_analyze(sub: Any, common: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    p = sub.add_parser("analyze", parents=[common], help="summarise an HDF5 output file and plot it")
    if "analyze" not in argv:
        return  # its module (h5py, NumPy) is imported only when analyze runs
    mod = importlib.import_module("hpcml.io.analyze")
    mod.add_arguments(p)
    p.set_defaults(func=_analyze)


def _analyze(args: argparse.Namespace) -> int:
    """``hpcml analyze``: the generic summary and figures plus those the file's app registered."""
    from hpcml.apps import plotter
    from hpcml.io import analyze

    return analyze.run(args, plotter=plotter)


# -- jobscript -------------------------------------------------------------------------------
def cmd_jobscript(args: argparse.Namespace) -> int:
    """Print a validated batch script."""
    from hpcml.jobscript import JobRequest, JobScriptError, render

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    req = JobRequest(
        scheduler=args.scheduler,
        nodes=args.nodes,
        ntasks_per_node=args.ntasks_per_node,
        cpus_per_task=args.cpus_per_task,
        time=args.time.strip(),
        command=command,
        gpus_per_task=args.gpus_per_task,
        partition=args.partition,
        account=args.account,
        job_name=args.job_name,
        cores_per_node=args.cores_per_node,
    )
    try:
        text = render(req)
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
    except (JobScriptError, OSError) as exc:
        sys.stderr.write(f"hpcml jobscript: error: {exc}\n")
        return EXIT_USAGE
    if not args.output:
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


# -- config ----------------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective configuration (defaults, a file, ``--set``) as TOML, without MPI."""
    from hpcml.apps import APPS
    from hpcml.config import ConfigError, dumps, load_config

    target = args.target
    if (target is None or target in APPS) and not args.set:
        from importlib import resources

        from hpcml.config import DEFAULT_APP

        # The shipped defaults verbatim: every option with its comment.
        sys.stdout.write((resources.files("hpcml") / "defaults" / f"{target or DEFAULT_APP}.toml").read_text())
        return 0
    try:
        if target is None or target in APPS:
            overrides = ([f"app={target!r}"] if target else []) + (args.set or [])
            config = load_config(None, overrides)
        else:
            config = load_config(target, args.set or [])
    except ConfigError as exc:
        sys.stderr.write(f"hpcml config: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(dumps(config))
    return 0


def _add_config(sub: Any) -> None:
    p = sub.add_parser("config", help="print an app's effective configuration (defaults, file, --set)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the effective config as TOML")
    show.add_argument("target", nargs="?", help="an app name or a TOML config file (default: the flux app)")
    show.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a value (repeatable)")
    show.set_defaults(func=cmd_config)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``hpcml`` argument parser.

    ``argv`` names the subcommand about to run, so that only its modules are imported
    (``hpcml bench NAME`` imports ``NAME``'s module alone; ``--help`` imports none).
    """
    common = argparse.ArgumentParser(add_help=False)
    verbosity = common.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_const", const=1, default=0, help="debug log lines")
    verbosity.add_argument("-q", "--quiet", dest="verbose", action="store_const", const=-1, help="warnings only")
    parser = _Parser(prog="hpcml", description="MPI domain decomposition, kernels, solvers and applications")
    parser.add_argument("--version", action="version", version=f"hpcml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("info", parents=[common], help="versions, MPI, ranks, threads and GPUs of this launch")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--grid", metavar="SHAPE", help="also show the process grid chosen for this global shape, e.g. 512x1024"
    )
    p.add_argument("--halo", type=int, default=1, help="halo width for --grid (default 1)")
    p.set_defaults(func=cmd_info)
    _add_run(sub, common)
    _add_bench(sub, common, argv)
    _add_analyze(sub, common, argv)
    _add_jobscript(sub)
    _add_config(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hpcml`` console script.

    The ``HPCML_*`` variables are read first (importing :mod:`hpcml.settings`): a bad
    value is a usage error, printed once per job (launcher rank 0) with exit 2, before
    anything else runs.  The command then runs under
    :class:`~hpcml.runtime.abort_on_error`.
    """
    try:
        import hpcml.settings  # noqa: F401 - reads the HPCML_* variables
    except ValueError as exc:
        import os

        ranks = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
        if next((os.environ[v] for v in ranks if v in os.environ), "0") == "0":
            sys.stderr.write(f"hpcml: {exc}\n")
        return EXIT_USAGE
    from hpcml.runtime import abort_on_error

    return int(abort_on_error(_main)(argv))


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
