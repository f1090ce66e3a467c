"""Output-path locks: a path in use by a running job is refused before anything is touched.

A job takes the lock of every path it writes (its output file, its checkpoint
folder) before it reads, deletes or creates anything there, and holds it for
its whole life.  A second job asking for the same path gets
:class:`~hpcml.io.errors.OutputInUseError` naming the holder (host, process,
batch job, start time, command) and changes nothing.

How
    Rank 0 opens ``NAME.lock`` next to the output file or folder ``NAME``
    (nothing is created inside the folder, unless its parent is not writable: see
    :func:`lock_file`) and takes an exclusive POSIX record lock on it
    (``fcntl.lockf``, which NFS and Lustre support; ``flock`` is local-only on
    some of them).  The kernel drops the lock when the process ends, however it
    ends, so a crashed or killed job never leaves a stale lock: the file it
    leaves behind is just overwritten by the next holder.  A clean release
    removes the file.  Locks are re-entrant within a process (the app and its
    :class:`~hpcml.io.Output` both ask for the output file), counted per path.
File systems without locks
    If the file system refuses record locks (``ENOLCK``, ``EOPNOTSUPP``), the
    job goes on without one and rank 0 logs a warning: concurrent jobs on one
    path are then not detected.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hpcml.io.errors import OutputInUseError

__all__ = ["PathLock", "hold", "lock_file"]

log = logging.getLogger("hpcml.io")

_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_BUSY = {errno.EACCES, errno.EAGAIN}
_HELD: dict[str, list[int]] = {}  # absolute lock file -> [fd, count] (this process)


def lock_file(path: str | os.PathLike[str]) -> Path:
    """The lock file of an output file or folder ``NAME``: ``NAME.lock`` beside it.

    A relative path is made absolute first (``"."``, a HipFT namelist's output folder,
    has no name of its own).  An existing folder whose parent this user cannot write
    (a run in ``$HOME`` or ``/scratch/$USER`` with the output folder ``"."``) keeps
    its lock inside itself, ``NAME/.hpcml.lock``: every job computes the same place.
    """
    p = Path(path).absolute()
    if p.is_dir() and not os.access(p.parent, os.W_OK):
        return p / ".hpcml.lock"
    return p.with_name(p.name + ".lock")


def _holder_text() -> str:
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID") or os.environ.get("LSB_JOBID")
    parts = [f"host {socket.gethostname()}", f"pid {os.getpid()}"]
    if job:
        parts.append(f"batch job {job}")
    parts.append(f"since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    parts.append("command " + " ".join(sys.argv)[:300])
    return ", ".join(parts)


def _acquire(lock: Path, target: Path) -> bool:
    """Take ``lock`` for this process (re-entrant); ``False`` if the file system has no locks."""
    import fcntl

    key = os.path.realpath(lock)
    if key in _HELD:
        _HELD[key][1] += 1
        return True
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _BUSY:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown holder"
                os.close(fd)
                raise OutputInUseError(
                    f"{target} is in use by another running job ({holder}); nothing was changed. "
                    f"Wait for that job to end, or write somewhere else (lock file {lock})"
                ) from None
            os.close(fd)
            if exc.errno in _UNSUPPORTED:
                log.warning("hpcml.io: %s: this file system has no file locks; concurrent jobs are not detected", lock)
                return False
            raise
        # The previous holder may have removed the file between our open and our lock:
        # then we hold a lock on a deleted file, so start again on the current one.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (_holder_text() + "\n").encode(), 0)
    _HELD[key] = [fd, 1]
    return True


def _release(lock: Path) -> None:
    key = os.path.realpath(lock)
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _HELD[key]
    try:
        os.unlink(lock)  # while still locked: a waiting job then retries on a fresh file
    except FileNotFoundError:
        pass
    os.close(entry[0])


class PathLock:
    """Locks on the paths one job writes, held by rank 0 of ``comm`` until :meth:`release`.

    Parameters
    ----------
    comm
        The job's communicator (``None``: this process alone).
    files, folders
        Output files and folders to lock; empty entries and ``None`` are skipped.

    Use as a context manager, or call :meth:`acquire` / :meth:`release`.
    :meth:`acquire` is collective: every rank raises
    :class:`~hpcml.io.errors.OutputInUseError` if rank 0 finds a path in use.
    """

    def __init__(
        self,
        comm: Any = None,
        files: Iterable[str | os.PathLike[str] | None] = (),
        folders: Iterable[str | os.PathLike[str] | None] = (),
    ) -> None:
        self.comm = comm
        self.targets = [(Path(p), lock_file(p)) for p in [*files, *folders] if p]
        self._taken: list[Path] = []

    def _root(self) -> list[str]:
        taken: list[Path] = []
        try:
            for target, lock in self.targets:
                if _acquire(lock, target):
                    taken.append(lock)
        except BaseException:
            for lock in taken:
                _release(lock)
            raise
        return [str(p) for p in taken]

    def acquire(self) -> PathLock:
        """Take every lock (collective); raise on every rank if a path is in use."""
        if self.comm is None or self.comm.Get_size() == 1:
            self._taken = [Path(p) for p in self._root()] if self._is_root() else []
            return self
        from hpcml.io._common import root_call

        taken = root_call(self.comm, self._root)
        self._taken = [Path(p) for p in taken] if self._is_root() else []
        return self

    def _is_root(self) -> bool:
        return self.comm is None or self.comm.Get_rank() == 0

    def release(self) -> None:
        """Drop the locks this object took (rank 0; no communication)."""
        for lock in reversed(self._taken):
            _release(lock)
        self._taken = []

    def __enter__(self) -> PathLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def hold(
    comm: Any,
    files: Iterable[str | os.PathLike[str] | None] = (),
    folders: Iterable[str | os.PathLike[str] | None] = (),
) -> PathLock:
    """Acquire and return a :class:`PathLock` (collective); the app releases it when it ends."""
    return PathLock(comm, files, folders).acquire()
