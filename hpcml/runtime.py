"""Process-level runtime: ranks per node, threads per rank, GPU per rank, abort on error.

Every entry point calls :func:`init` and runs under :func:`abort_on_error`, so a
job never hangs because one rank raised while the others wait in a collective.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, TypeVar

from mpi4py import MPI

from hpcml.backend import cupy_module, gpu_count
from hpcml.settings import Settings, rc

__all__ = [
    "LaunchError",
    "RuntimeInfo",
    "abort_on_error",
    "check_launcher",
    "detect_launcher",
    "ReportedOnRootError",
    "init",
    "install_stop_handlers",
    "root_decides",
    "runtime_info",
    "stop_requested",
]

log = logging.getLogger("hpcml")

F = TypeVar("F", bound=Callable[..., Any])


class LaunchError(RuntimeError):
    """The job was started in a way that cannot work (e.g. ``srun`` without PMI)."""


class ReportedOnRootError(RuntimeError):
    """Raised on ranks other than 0 when rank 0 reports the same error (so it is printed once)."""


def root_decides(fn: Callable[[], Any], comm: Any = None) -> Any:
    """Run ``fn`` on rank 0 and broadcast its result, or its exception, to every rank.

    For input checks every rank would repeat (reading a config or a namelist):
    rank 0 decides and the broadcast is unconditional, so no rank can wait in a
    collective the others skip.  On failure rank 0 re-raises the exception and
    the other ranks raise :class:`ReportedOnRootError`, which :class:`abort_on_error`
    does not print: the message appears once.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    result: Any = None
    error: BaseException | None = None
    if comm.Get_rank() == 0:
        try:
            result = fn()
        except Exception as exc:  # every failure is passed on (and re-raised below)
            error = exc
    failed = comm.bcast(error is not None, root=0)
    if failed:
        if error is not None:
            raise error
        raise ReportedOnRootError("rank 0 reported the error")
    return comm.bcast(result, root=0)


@dataclass(frozen=True)
class RuntimeInfo:
    """What :func:`init` found and set for this process."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    nodes: int
    threads: int
    threads_from_env: bool
    gpus_seen: int
    gpu: int | None
    launcher: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for logs and output attributes)."""
        return asdict(self)


_INFO: RuntimeInfo | None = None


def detect_launcher(env: dict[str, str] | None = None) -> str:
    """Name the launcher of this process: ``srun``, ``mpiexec`` or ``singleton``."""
    env = os.environ if env is None else env
    if any(k in env for k in ("HYDI_CONTROL_FD", "OMPI_COMM_WORLD_SIZE", "PRTE_LAUNCHED")):
        return "mpiexec"  # Hydra (MPICH) or Open MPI's launcher, also inside an allocation
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:
        return "srun"
    if any(k in env for k in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK")):
        return "mpiexec"
    return "singleton"


def check_launcher(world_size: int | None = None, env: dict[str, str] | None = None) -> None:
    """Raise :class:`LaunchError` when ``srun`` started independent singletons.

    A SLURM step with several tasks whose ranks each see a world of size 1 means
    ``srun`` did not wire up MPI (no PMI plugin): N copies would run the whole job
    each.  ``HPCML_ALLOW_SINGLETONS=1`` disables the check.
    """
    allow = rc.allow_singletons if env is None else Settings.from_env(env).allow_singletons
    env = os.environ if env is None else env
    size = MPI.COMM_WORLD.Get_size() if world_size is None else world_size
    if size != 1 or allow:
        return
    raw = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    if "SLURM_STEP_NUM_TASKS" not in env and "SLURM_STEP_ID" not in env:
        # Outside an srun step (e.g. python run straight from a batch script) one
        # process is legitimate; only flag a step that asked for several tasks.
        raw = env.get("SLURM_NTASKS") if "SLURM_PROCID" in env else None
    try:
        ntasks = int(raw) if raw else 1
    except ValueError:
        return
    if ntasks > 1:
        raise LaunchError(
            f"SLURM started {ntasks} tasks but MPI sees a world of size 1 on each: srun launched "
            "independent singletons without PMI. Launch with `srun --mpi=pmi2 ...` (or set "
            "MpiDefault=pmi2 in slurm.conf), or use mpiexec inside the allocation."
        )


def _cores_per_node() -> int:
    # cpu_count, not the affinity mask: a launcher that binds each rank to one
    # core would otherwise make every rank think the node has one core.
    return os.cpu_count() or 1


def init(comm: MPI.Comm | None = None, threads: int | None = None, force: bool = False) -> RuntimeInfo:
    """Set up this process for hpcml (idempotent; collective on ``comm`` the first time).

    * ranks per node from ``comm.Split_type(COMM_TYPE_SHARED)``;
    * Numba threads = cores per node // ranks per node (at least 1) unless
      ``NUMBA_NUM_THREADS`` is set or ``threads`` is given;
    * GPU = local rank mod number of GPUs when CuPy sees devices;
    * refuses ``srun`` without PMI (:func:`check_launcher`).
    """
    global _INFO
    if _INFO is not None and not force:
        return _INFO
    comm = MPI.COMM_WORLD if comm is None else comm
    check_launcher(comm.Get_size())
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    local_rank, local_size = local.Get_rank(), local.Get_size()
    local.Free()
    nodes = comm.allreduce(1 if local_rank == 0 else 0, op=MPI.SUM)
    from_env = "NUMBA_NUM_THREADS" in os.environ
    nthreads = _set_threads(threads, local_size, from_env)
    ngpu = gpu_count()
    gpu = None
    if ngpu:
        gpu = local_rank % ngpu
        cupy_module().cuda.Device(gpu).use()
    _INFO = RuntimeInfo(
        rank=comm.Get_rank(),
        size=comm.Get_size(),
        local_rank=local_rank,
        local_size=local_size,
        nodes=nodes,
        threads=nthreads,
        threads_from_env=from_env and threads is None,
        gpus_seen=ngpu,
        gpu=gpu,
        launcher=detect_launcher(),
    )
    return _INFO


def _set_threads(threads: int | None, local_size: int, from_env: bool) -> int:
    import numba

    ceiling = numba.config.NUMBA_NUM_THREADS  # size of the pool; set_num_threads may only go below
    if threads is None and from_env:
        return int(numba.get_num_threads())
    want = threads if threads is not None else max(1, _cores_per_node() // max(1, local_size))
    want = max(1, min(int(want), ceiling))
    numba.set_num_threads(want)
    return want


_STOP = {"signal": 0}


def _on_stop_signal(signum: int, frame: Any) -> None:
    _STOP["signal"] = signum


def install_stop_handlers(signals: tuple[int, ...] | None = None) -> None:
    """Turn ``SIGUSR1``/``SIGTERM`` into a stop request that :func:`stop_requested` reports.

    Batch systems send these before the wall-clock limit (``--signal=B:USR1@120``)
    or on preemption; an application polls :func:`stop_requested` at safe points,
    writes a checkpoint and returns instead of being killed mid-write.
    """
    import signal

    for sig in signals or (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, _on_stop_signal)


def stop_requested(comm: MPI.Comm | None = None) -> bool:
    """True on every rank once any rank has received a stop signal (collective if ``comm``).

    Signals reach ranks at slightly different moments; the ``MAX`` reduction makes
    all ranks agree on the same step to stop at.
    """
    local = _STOP["signal"] != 0
    if comm is None:
        return local
    return bool(comm.allreduce(int(local), op=MPI.MAX))


def runtime_info() -> RuntimeInfo | None:
    """What :func:`init` found, or ``None`` before it ran."""
    return _INFO


def _report_and_abort(exc: BaseException, tb: TracebackType | None) -> None:
    rank = MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() and not MPI.Is_finalized() else 0
    if isinstance(exc, ReportedOnRootError) and rank != 0:
        # rank 0 prints the error and aborts the job; this rank only makes sure it ends
        import time

        time.sleep(10.0)
        MPI.COMM_WORLD.Abort(1)
    msg = str(exc).strip() or repr(exc)
    lines = [f"[rank {rank}] {type(exc).__name__}: {msg}\n"]
    if rc.traceback:
        lines += [f"[rank {rank}] {line}" for line in "".join(traceback.format_tb(tb)).splitlines(True)]
    sys.stderr.write("".join(lines))
    sys.stderr.flush()
    sys.stdout.flush()
    # A lone process just exits; with peers, Abort is the only call that cannot hang.
    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        # Give the launcher a moment to forward our stderr: Hydra tears the job down on
        # Abort and has been seen to drop the message it had not yet passed on.
        import time

        time.sleep(0.5)
        MPI.COMM_WORLD.Abort(1)
    os._exit(1)  # pragma: no cover - Abort does not return


class abort_on_error:  # noqa: N801 - used as a decorator, reads like a function
    """Decorator and context manager: an exception on any rank aborts the whole job.

    The exception is printed once as ``[rank R] Type: message`` (the traceback too
    when ``HPCML_TRACEBACK=1``) and ``MPI.COMM_WORLD.Abort(1)`` ends every rank, so
    no rank is left waiting in a collective.  ``SystemExit(0)`` passes through.
    """

    def __enter__(self) -> abort_on_error:
        """Enter the guarded block."""
        return self

    def __exit__(self, etype: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            return False
        _report_and_abort(exc, tb)
        return False  # pragma: no cover

    def __call__(self, fn: F) -> F:
        """Wrap ``fn`` so that an exception in it aborts the job."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with abort_on_error():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
