"""Exceptions raised by :mod:`hpcml.io` (each names the file concerned)."""

from __future__ import annotations

__all__ = ["CheckpointError", "CheckpointMismatchError", "OutputError", "OutputInUseError"]


class OutputError(RuntimeError):
    """An output file cannot be written, appended to or read as asked."""


class OutputInUseError(OutputError):
    """The output path is locked by another running job (nothing was touched)."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or none could be loaded.

    Attributes
    ----------
    path
        The file (or directory) concerned, when known.
    """

    def __init__(self, msg: str, path: str | None = None) -> None:
        super().__init__(msg)
        self.path = path


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written for another problem: its recorded solution keys differ.

    Never skipped in favour of an older checkpoint: resuming any of them would
    continue another run's state.  The message names every differing key.
    """
