"""Progress reporting for long reads and writes (rank 0 only).

On a terminal a one-line bar is redrawn in place on stderr; otherwise (batch
jobs, CI logs) a line is logged through the ``hpcml.io`` logger at most every
``interval`` seconds, so a job log shows that a long consolidation or analysis
is moving without being flooded.  Nothing is shown for operations that finish
within ``delay`` seconds.  ``HPCML_PROGRESS=0`` turns all of it off,
``HPCML_PROGRESS=1`` forces the periodic lines even for short operations.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress"]

log = logging.getLogger("hpcml.io")


class Progress:
    """Count work units (bytes, snapshots, datasets) and report the rate.

    Parameters
    ----------
    total
        Units expected (``0`` if unknown).
    desc
        What is being done, e.g. ``"consolidate run.h5"``.
    unit
        ``"B"`` formats sizes and rates in bytes; anything else is a plain count.
    enabled
        ``None``: on for rank 0 of ``comm`` unless ``HPCML_PROGRESS=0``.
    comm
        Only its rank 0 reports; ``None`` means this process reports.
    stream
        Where the bar goes (``sys.stderr``); used only when it is a TTY.
    delay, interval
        Seconds of silence before the first report, and between log lines.
    """

    def __init__(
        self,
        total: float,
        desc: str,
        *,
        unit: str = "B",
        enabled: bool | None = None,
        comm: Any = None,
        stream: TextIO | None = None,
        delay: float = 2.0,
        interval: float = 10.0,
    ) -> None:
        from hpcml.settings import rc

        if enabled is None:
            enabled = rc.progress is not False
        if comm is not None and comm.Get_rank() != 0:
            enabled = False
        if rc.progress:
            delay = 0.0
        self.total = float(total)
        self.desc = desc
        self.unit = unit
        self.enabled = bool(enabled)
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.delay = delay
        self.interval = interval
        self.done = 0.0
        self.t0 = time.perf_counter()
        self._last = self.t0
        self._shown = False

    def _fmt(self, x: float) -> str:
        if self.unit != "B":
            return f"{x:.0f}"
        for scale, name in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
            if x >= scale:
                return f"{x / scale:.1f} {name}"
        return f"{x:.0f} B"

    def _line(self, now: float) -> str:
        dt = max(now - self.t0, 1e-9)
        rate = self.done / dt
        frac = self.done / self.total if self.total > 0 else 0.0
        what = f"{self._fmt(self.done)}/{self._fmt(self.total)}" if self.total > 0 else self._fmt(self.done)
        unit = "/s" if self.unit == "B" else f" {self.unit}/s"
        text = f"{self.desc}: {what} ({100 * frac:.0f}%), {self._fmt(rate)}{unit}, {dt:.1f} s"
        if self.tty:
            width = 24
            fill = round(width * min(frac, 1.0))
            text = f"[{'#' * fill}{'.' * (width - fill)}] " + text
        return text

    def update(self, n: float = 1) -> None:
        """Add ``n`` finished units and report if due."""
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.t0 < self.delay:
            return
        if self.tty:
            if now - self._last >= 0.2 or not self._shown:
                self.stream.write("\r" + self._line(now) + "\x1b[K")
                self.stream.flush()
                self._shown, self._last = True, now
        elif now - self._last >= self.interval or not self._shown:
            log.info("%s", self._line(now))
            self._shown, self._last = True, now

    def close(self) -> None:
        """Final report (only if something was shown)."""
        if not (self.enabled and self._shown):
            return
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self._line(now) + "\x1b[K\n")
            self.stream.flush()
        else:
            log.info("%s (done)", self._line(now))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
