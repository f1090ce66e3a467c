"""Helpers for the hpcml.io tests (importable as ``io_helpers``).

MPI tests run as ``mpiexec -n N python -m pytest --with-mpi -m mpi tests/io`` for
N = 1..4; serial tests that need several ranks start ``io_worker.py`` under
``mpiexec`` themselves (``HPCML_TEST_MPIEXEC`` names the launcher, e.g.
``mpiexec.mpich`` in the parallel-HDF5 venv; default: the venv's ``mpiexec``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from hpcml.testing import assert_all  # noqa: F401 - re-exported for this folder's tests

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("HPCML_PROGRESS", "0")

HERE = Path(__file__).resolve().parent
WORKER = HERE / "io_worker.py"


def mpiexec() -> str:
    """The launcher matching this interpreter's MPI."""
    env = os.environ.get("HPCML_TEST_MPIEXEC")
    if env:
        return env
    local = Path(sys.executable).parent / "mpiexec"
    if local.exists():
        return str(local)
    return shutil.which("mpiexec.mpich") or shutil.which("mpiexec") or "mpiexec"


def run_worker(n: int, *args: str, timeout: float = 120, cwd: str | os.PathLike[str] | None = None):
    """Run ``io_worker.py args`` on ``n`` ranks; fail the test with its output on error."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", HPCML_PROGRESS="0")
    cmd = [mpiexec(), "-n", str(n), sys.executable, str(WORKER), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
    return proc


def run_crashing_worker(n: int, *args: str, grace: float = 60) -> int:
    """Run a worker that kills one of its ranks; end the job as a scheduler would if the rest hang.

    With MPI-IO collectives the surviving ranks can wait forever for the dead one, and
    some launchers (Debian's Hydra) do not end them; SLURM's ``--kill-on-bad-exit`` does.
    After ``grace`` seconds the whole process group is killed.  Returns the exit status.
    """
    env = dict(os.environ, NUMBA_NUM_THREADS="1", HPCML_PROGRESS="0")
    cmd = [mpiexec(), "-n", str(n), sys.executable, str(WORKER), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30)


def check_worker(n: int, *args: str, timeout: float = 120, cwd=None) -> str:
    """:func:`run_worker`, asserting success; returns stdout."""
    proc = run_worker(n, *args, timeout=timeout, cwd=cwd)
    assert proc.returncode == 0, f"{args} on {n} rank(s) failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def drivers() -> list[str]:
    """Write paths this h5py supports: always ``vds``; ``mpio`` with parallel h5py."""
    import h5py

    return ["mpio", "vds"] if h5py.get_config().mpi else ["vds"]


def field_value(shape, step=0, dtype="f8"):
    """Callable for ``DistArray.from_global``: unique value per cell and step."""
    strides = [int(np.prod(shape[d + 1 :])) for d in range(len(shape))]

    def f(*idx):
        lin = sum(i * s for i, s in zip(idx, strides)) + 1 + 1000 * step
        return np.asarray(lin, dtype=dtype)

    return f


def global_value(shape, step=0, dtype="f8"):
    """The global array ``field_value`` describes."""
    return field_value(shape, step, dtype)(*np.indices(shape))
