"""The restart contract every app keeps: ``run.restart = false | true | "auto"``.

* ``false``: start fresh.  Checkpoints an earlier run left in the checkpoint
  directory are removed first, so a later ``"auto"`` can never resume a run
  that this one replaced.
* ``true``: resume from the newest good checkpoint; none there is an error
  naming the directory.
* ``"auto"`` (what requeued batch jobs and the shipped job scripts use): resume
  when there is a checkpoint, otherwise start fresh and say so.

Every checkpoint records the configuration values that determine the solution
(the app's :data:`solution keys <SolutionKeys>`: grid, model, physics; not the
run length, output cadence, rank count or decomposition).  Resuming compares
them with this run's and refuses a mismatch, naming each differing key, in all
modes: a changed problem never silently continues another run's state.

Apps call :func:`checkpoint_directory` for the directory, :func:`plan` before
anything is written (rank 0 decides, every rank gets the same answer), load the
checkpoint it names with ``expect=record`` and pass ``solution=record`` when
saving.  The output written by a resumed run appends to the earlier series
(see ``docs/running.md``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hpcml.config import ConfigError

T = TypeVar("T")

__all__ = [
    "RESTART_VALUES",
    "RestartPlan",
    "checkpoint_directory",
    "plan",
    "restart_mode",
    "run_locked",
    "solution_record",
]

log = logging.getLogger("hpcml.apps")

#: The values ``run.restart`` accepts.
RESTART_VALUES: tuple[bool | str, ...] = (False, True, "auto")

#: Dotted config keys (``"grid.shape"``) or whole sections (``"flow"``) that determine an app's solution.
SolutionKeys = Sequence[str]


def restart_mode(config: Mapping[str, Any]) -> bool | str:
    """``config["run"]["restart"]``, checked: ``False``, ``True`` or ``"auto"``."""
    value = config.get("run", {}).get("restart", False)
    if value is True or value is False or value == "auto":
        return value
    raise ConfigError(f'run.restart must be false, true or "auto", got {value!r}')


def solution_record(config: Mapping[str, Any], keys: SolutionKeys) -> dict[str, Any]:
    """The values of ``keys`` in ``config`` as a flat ``{dotted key: value}`` dict.

    A key naming a section contributes every value below it (``"flow"`` gives
    ``flow.scheme``, ``flow.upwind``, ...), so a new option of a recorded section
    is recorded without touching the app's key list.
    """
    out: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                add(f"{prefix}.{k}", v)
        else:
            out[prefix] = value

    for key in keys:
        node: Any = config
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(f"solution key {key!r} is not in the configuration")
            node = node[part]
        add(key, node)
    return out


def checkpoint_directory(explicit: str, output_path: str) -> Path | None:
    """The checkpoint directory of a run: ``explicit`` if set, else derived from the output path.

    ``run.h5`` gives ``run.ckpt`` next to it, so two runs with different outputs
    never share checkpoints; ``None`` when neither is set (no checkpoints).
    """
    if explicit:
        return Path(explicit)
    if output_path:
        p = Path(output_path)
        return p.with_name((p.stem if p.suffix in (".h5", ".hdf5", ".nc") else p.name) + ".ckpt")
    return None


@dataclass(frozen=True)
class RestartPlan:
    """What :func:`plan` decided (identical on every rank).

    Attributes
    ----------
    resume
        Load a checkpoint (from :attr:`directory`, with ``expect=record``).
    directory
        The checkpoint directory (``None``: the run keeps no checkpoints).
    record
        The solution-determining values of this run (store with every checkpoint).
    mode
        The ``run.restart`` value.
    """

    resume: bool
    directory: Path | None
    record: dict[str, Any]
    mode: bool | str


def plan(
    config: Mapping[str, Any],
    directory: str | os.PathLike[str] | None,
    keys: SolutionKeys,
    comm: Any,
    app: str,
) -> RestartPlan:
    """Decide fresh start or resume for ``run.restart`` (collective; rank 0 looks at the directory).

    Raises :class:`~hpcml.config.ConfigError` on every rank for ``true`` without
    a checkpoint directory or without a checkpoint in it.  A fresh start removes
    the checkpoints an earlier run left in the directory.  The comparison of the
    recorded solution keys happens when the checkpoint is loaded
    (``checkpoint.load(..., expect=plan.record)``), on the file actually loaded.
    """
    mode = restart_mode(config)
    record = solution_record(config, keys)
    where = Path(directory) if directory is not None else None

    def decide() -> tuple[bool, str, str]:
        from hpcml.io.checkpoint import list_checkpoints

        found = list_checkpoints(where) if where is not None else []
        if mode is True and where is None:
            return False, "", f"{app}: run.restart = true but this run has no checkpoint directory"
        if mode is True and not found:
            return (
                False,
                "",
                (
                    f"{app}: run.restart = true but {where} holds no checkpoint (ckpt-*.h5); "
                    'use run.restart = "auto" to start fresh when there is none'
                ),
            )
        if mode is False or not found:
            for old in found:  # an earlier run's state: never resumed by a later "auto"
                old.unlink(missing_ok=True)
            if mode == "auto":
                return False, f'{app}: run.restart = "auto": no checkpoint in {where}, starting fresh', ""
            if found:
                note = f"removed {len(found)} checkpoint(s) of an earlier run from {where}"
                return False, f"{app}: starting fresh ({note})", ""
            return False, "", ""
        return True, f"{app}: resuming from the newest checkpoint in {where}", ""

    from hpcml.io._common import root_call

    resume, message, error = root_call(comm, decide)
    if error:
        raise ConfigError(error)
    if message and comm.Get_rank() == 0:
        log.info("%s", message)
    return RestartPlan(resume=resume, directory=where, record=record, mode=mode)


def run_locked(comm: Any, output: str, checkpoints: Path | None, body: Callable[[], T]) -> T:
    """Run ``body`` holding the locks of the output file and the checkpoint folder (collective).

    The output-path contract: taken before anything is read or deleted, held for the
    whole run, so a second job on the same paths is refused naming this one.
    """
    from hpcml.io.lock import hold

    lock = hold(comm, files=[output], folders=[checkpoints])
    try:
        return body()
    finally:
        lock.release()
