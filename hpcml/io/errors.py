"""Exceptions raised by :mod:`hpcml.io` (each names the file concerned)."""

from __future__ import annotations

__all__ = ["CheckpointError", "OutputError"]


class OutputError(RuntimeError):
    """An output file cannot be written, appended to or read as asked."""


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
