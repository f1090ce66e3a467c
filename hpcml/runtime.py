"""Process-level runtime: ranks per node, threads per rank, GPU per rank, abort on error.

Every entry point calls :func:`init` and runs under :func:`abort_on_error`, so a
job never hangs because one rank raised while the others wait in a collective.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from hpcml.settings import Settings, rc

if TYPE_CHECKING:  # MPI is imported where it is used: `import hpcml.runtime` must not call MPI_Init
    from mpi4py import MPI

__all__ = [
    "LaunchError",
    "RuntimeInfo",
    "StopPoll",
    "abort_on_error",
    "check_launcher",
    "comm_or_world",
    "detect_launcher",
    "init",
    "install_stop_handlers",
    "launch_rank",
    "node_share",
    "raise_if_any",
    "runtime_info",
    "stop_requested",
    "stop_signal_received",
]

log = logging.getLogger("hpcml")

F = TypeVar("F", bound=Callable[..., Any])


def comm_or_world(comm: MPI.Comm | None = None) -> MPI.Comm:
    """``comm``, or ``MPI.COMM_WORLD`` when it is ``None`` (the default of every ``comm=`` argument).

    ``mpi4py.MPI`` is imported only when the world communicator is needed, so
    callers that receive a communicator never initialise MPI here.
    """
    if comm is not None:
        return comm
    from mpi4py import MPI

    return MPI.COMM_WORLD


def raise_if_any(comm: MPI.Comm, message: str | None, exc: type[Exception] = ValueError) -> None:
    """Raise ``exc`` on every rank if ``message`` is set on any rank (collective).

    For checks whose verdict can differ between ranks (a rank's own block, its
    own arguments): a rank that raised alone would leave the others waiting in
    the next collective.  The common case (no error anywhere) costs one integer
    ``Allreduce``; only when some rank failed are the messages gathered, so every
    rank raises with the first failing rank's text.
    """
    from mpi4py import MPI

    flag = np.array([0 if message is None else 1], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
    if flag[0]:
        msgs = comm.allgather(message)
        rank, text = next((r, m) for r, m in enumerate(msgs) if m is not None)
        raise exc(f"{text} (detected on rank {rank})" if comm.Get_size() > 1 else text)


class LaunchError(RuntimeError):
    """The job was started in a way that cannot work (e.g. ``srun`` without PMI)."""


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
    #: threads of the BLAS loaded in this process (None: none found), and whether the
    #: user's environment set them (else :func:`init` did)
    blas_threads: int | None = None
    blas_threads_from_env: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for logs and output attributes)."""
        return asdict(self)


_INFO: RuntimeInfo | None = None


def node_share(comm: MPI.Comm) -> tuple[int, int]:
    """``(ranks, cpus)`` of the most crowded node of ``comm`` (collective).

    ``ranks`` are the ranks of ``comm`` on that node and ``cpus`` the CPUs they may
    run on together (the union of their affinity masks), so ranks bound two to a
    core count as sharing, and a node whose ranks may use every CPU counts all.
    More ranks than CPUs means a rank that waits for a neighbour waits for the
    scheduler to run it (the benchmarks say so; ``shm`` exchanges yield sooner).
    """
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        mask = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS has no affinity masks
        mask = list(range(os.cpu_count() or 1))
    cpus = len(set().union(*local.allgather(mask)))
    here = (local.Get_size(), cpus)
    local.Free()
    return max(comm.allgather(here), key=lambda rc: rc[0] / rc[1])


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


def launch_rank(env: dict[str, str] | None = None) -> int:
    """The rank of this process as the launcher told it, read from the environment (no MPI call).

    Lets code that runs before (or instead of) ``MPI_Init`` -- argument parsing,
    login-node commands -- print a message once per job instead of once per rank.
    0 when no launcher variable is set.
    """
    env = os.environ if env is None else env
    for key in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        raw = env.get(key)
        if raw and raw.strip().isdigit():
            return int(raw)
    if "SLURM_STEP_ID" in env and (raw := env.get("SLURM_PROCID", "")).strip().isdigit():
        return int(raw)
    return 0


def check_launcher(world_size: int | None = None, env: dict[str, str] | None = None) -> None:
    """Raise :class:`LaunchError` when ``srun`` started independent singletons.

    A SLURM step with several tasks whose ranks each see a world of size 1 means
    ``srun`` did not wire up MPI (no PMI plugin): N copies would run the whole job
    each.  ``HPCML_ALLOW_SINGLETONS=1`` disables the check.
    """
    allow = rc.allow_singletons if env is None else Settings.from_env(env).allow_singletons
    env = os.environ if env is None else env
    if world_size is None:
        from mpi4py import MPI

        world_size = MPI.COMM_WORLD.Get_size()
    size = world_size
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
    * BLAS threads the same, unless the environment sets them (:func:`_set_blas_threads`);
    * GPU = local rank mod number of GPUs when CuPy sees devices;
    * refuses ``srun`` without PMI (:func:`check_launcher`).
    """
    global _INFO
    if _INFO is not None and not force:
        return _INFO
    from mpi4py import MPI

    from hpcml import jit
    from hpcml.backend import cupy_module, gpu_count

    jit.install()  # one compile per node, compile time kept apart

    comm = comm_or_world(comm)
    check_launcher()  # the world's size: an app run on COMM_SELF in a wired-up srun step is fine
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    local_rank, local_size = local.Get_rank(), local.Get_size()
    local.Free()
    nodes = comm.allreduce(1 if local_rank == 0 else 0, op=MPI.SUM)
    from_env = "NUMBA_NUM_THREADS" in os.environ
    nthreads = _set_threads(threads, local_size, from_env)
    blas_threads, blas_from_env = _set_blas_threads(threads, local_size)
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
        blas_threads=blas_threads,
        blas_threads_from_env=blas_from_env,
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


#: environment variables that set a BLAS library's thread count: with any of them set by
#: the user, :func:`init` leaves the BLAS threads as they are
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

#: the BLAS thread variables :func:`init` set itself (for libraries loaded later)
_OWN_BLAS_VARS: set[str] = set()


def _set_blas_threads(threads: int | None, local_size: int) -> tuple[int | None, bool]:
    """Give BLAS the same share of the node as Numba; ``(its threads, whether the user set them)``.

    NumPy's OpenBLAS starts one thread per core in every rank, and after a call its
    threads spin for a while before they sleep, on cores the other ranks need: with
    2 ranks on 2 cores and a ``norm()`` every 100 steps, the heat app (256x256, 5000
    steps) took 1.3-5.6 s instead of 0.39-0.72 s.  So unless one of
    :data:`BLAS_THREAD_VARS` is set, the BLAS libraries loaded now are limited with
    ``threadpoolctl`` to ``threads`` (else cores per node // ranks per node), and
    ``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` are set for those loaded later.
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    user = any(v in os.environ and v not in _OWN_BLAS_VARS for v in BLAS_THREAD_VARS)
    if not user:
        want = max(1, int(threads) if threads is not None else _cores_per_node() // max(1, local_size))
        threadpool_limits(limits=want, user_api="blas")
        for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(want)
            _OWN_BLAS_VARS.add(var)
    pools = [int(p["num_threads"]) for p in threadpool_info() if p.get("user_api") == "blas"]
    return (max(pools) if pools else None), user


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


def stop_signal_received() -> int:
    """The stop signal this process received (0 if none); local, no communication."""
    return int(_STOP["signal"])


def stop_requested(comm: MPI.Comm | None = None) -> bool:
    """True on every rank once any rank has received a stop signal (collective if ``comm``).

    Signals reach ranks at slightly different moments; the ``MAX`` reduction makes
    all ranks agree on the same step to stop at.  Loops that poll every step use
    :class:`StopPoll`, which reduces only about twice a second.
    """
    local = _STOP["signal"] != 0
    if comm is None:
        return local
    from mpi4py import MPI

    return bool(comm.allreduce(int(local), op=MPI.MAX))


class StopPoll:
    """A stop check cheap enough to call every step, agreed by all ranks within ``interval`` seconds.

    Every rank calls the poll at the same points of its loop (once per time step, CG
    iteration or training step).  Most calls only count down; when the count reaches
    zero every rank joins one small ``Allreduce(MAX)`` of the stop flag and the wall
    seconds each spent since the previous reduction.  From those agreed numbers every
    rank computes the same number of calls until the next reduction, sized to land about
    ``interval`` seconds later (it at most doubles from one reduction to the next, so a
    slow start such as kernel compilation does not stretch it).  So a ``SIGTERM`` or
    ``SIGUSR1`` on any rank stops all ranks at the same step within about a second, at
    the price of one two-double reduction per ``interval``, whatever the step time.
    No rank ever decides alone whether to enter the reduction: that is what keeps it
    collective-safe.

    Parameters
    ----------
    comm
        Communicator of the ranks that loop together (``None``: this process alone).
    interval
        Target wall seconds between reductions.
    """

    def __init__(self, comm: MPI.Comm | None, interval: float = 0.5) -> None:
        self.comm = comm
        self.interval = float(interval)
        self.requested = False
        self.checks = 0
        self._countdown = 1
        self._stride = 1
        self._calls = 0
        self._last = time.perf_counter()

    def __call__(self) -> bool:
        """True (on every rank, at the same call) once a stop signal reached any rank."""
        if self.requested:
            return True
        self._calls += 1
        self._countdown -= 1
        if self._countdown > 0:
            return False
        now = time.perf_counter()
        buf = np.array([float(stop_signal_received() != 0), now - self._last])
        if self.comm is not None and self.comm.Get_size() > 1:
            from mpi4py import MPI

            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
        self.checks += 1
        per_call = buf[1] / self._calls
        fit = int(self.interval / per_call) if per_call > 0 else 2 * self._stride
        self._stride = max(1, min(2 * self._stride, fit))
        self._countdown = self._stride
        self._calls = 0
        self._last = now
        self.requested = bool(buf[0])
        return self.requested


def runtime_info() -> RuntimeInfo | None:
    """What :func:`init` found, or ``None`` before it ran."""
    return _INFO


def _live_mpi() -> Any:
    """``mpi4py.MPI`` if this process imported it and MPI is running, else ``None``.

    Never imports MPI itself: a login-node command that failed must not call ``MPI_Init``.
    """
    MPI = sys.modules.get("mpi4py.MPI")  # noqa: N806 - the module's usual name
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return None
    return MPI


#: seconds a rank other than 0 waits before reporting its error and aborting the job
#: (longer than rank 0's own 0.5 s before ``Abort``): when rank 0 failed too, its abort
#: ends the job first and the error is printed once
REPORT_GRACE = 3.0


def _end_job(code: int, MPI: Any) -> None:  # noqa: N803 - the module's usual name
    """End this process with ``code``; with MPI peers through ``Abort``, the only call that cannot hang."""
    sys.stderr.flush()
    sys.stdout.flush()
    if MPI is not None and MPI.COMM_WORLD.Get_size() > 1:
        # Give the launcher a moment to forward our stderr: Hydra tears the job down on
        # Abort and has been seen to drop the message it had not yet passed on.
        time.sleep(0.5)
        MPI.COMM_WORLD.Abort(code)
    os._exit(code)  # pragma: no cover - Abort does not return


def _report_and_abort(exc: BaseException, tb: TracebackType | None) -> None:
    MPI = _live_mpi()  # noqa: N806
    rank = MPI.COMM_WORLD.Get_rank() if MPI is not None else 0
    if isinstance(exc, KeyboardInterrupt):
        # Ctrl-C reaches every rank of an interactive mpiexec: one line, exit 130 like a shell.
        if rank == 0:
            sys.stderr.write("hpcml: interrupted\n")
        _end_job(130, MPI)
    if rank != 0 and MPI is not None:
        # An error every rank meets (bad input, an output in use) is printed once: rank 0
        # reports and aborts the job at once, which ends this rank during the wait.  An
        # error of this rank alone is reported after it.
        time.sleep(REPORT_GRACE)
    msg = str(exc).strip() or repr(exc)
    lines = [f"[rank {rank}] {type(exc).__name__}: {msg}\n"]
    if rc.traceback:
        lines += [f"[rank {rank}] {line}" for line in "".join(traceback.format_tb(tb)).splitlines(True)]
    sys.stderr.write("".join(lines))
    code = getattr(exc, "exit_code", 1)  # hpcml.config.ConfigError: 2, as a usage error
    _end_job(code if isinstance(code, int) and 0 < code < 256 else 1, MPI)


class abort_on_error:  # noqa: N801 - used as a decorator, reads like a function
    """Decorator and context manager: an exception on any rank aborts the whole job.

    The exception is printed once as ``[rank R] Type: message`` (the traceback too
    when ``HPCML_TRACEBACK=1``) and ``MPI.COMM_WORLD.Abort(1)`` ends every rank, so
    no rank is left waiting in a collective.  Ranks other than 0 report after
    ``REPORT_GRACE`` seconds, so an error that every rank meets is printed by rank 0
    alone; an exception with an ``exit_code`` attribute (a configuration error: 2)
    ends the job with that code.  Ctrl-C (``KeyboardInterrupt``) prints
    ``hpcml: interrupted`` once and exits 130.  ``SystemExit`` keeps its code: it
    passes through in a lone process (argparse's usage errors exit 2), and ends every
    rank through ``Abort(code)`` when MPI peers may be waiting.

    All three forms work::

        @abort_on_error
        def main(): ...

        @abort_on_error()
        def main(): ...

        with abort_on_error():
            ...
    """

    def __new__(cls, fn: F | None = None) -> Any:
        """``abort_on_error(fn)`` (the bare decorator) returns the wrapped function."""
        self = super().__new__(cls)
        if fn is None:
            return self
        if not callable(fn):
            raise TypeError(f"abort_on_error takes a function or nothing, got {fn!r}")
        return self(fn)

    def __enter__(self) -> abort_on_error:
        """Enter the guarded block."""
        return self

    def __exit__(self, etype: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        if isinstance(exc, SystemExit):
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            MPI = _live_mpi()  # noqa: N806
            if code == 0 or MPI is None or MPI.COMM_WORLD.Get_size() == 1:
                return False  # let it propagate: the exit code is the caller's
            _end_job(code, MPI)
        _report_and_abort(exc, tb)
        return False  # pragma: no cover

    def __call__(self, fn: F) -> F:
        """Wrap ``fn`` so that an exception in it aborts the job."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with abort_on_error():
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
