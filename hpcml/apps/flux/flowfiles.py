"""Flows from files (HipFT's ``use_flow_from_files``): the list, the current pair, the switch times.

The list is HipFT's text file: a header line, then one row per flow pair with a time
in Julian days and the names of a v_theta and a v_phi file (HipFT reads the fixed
format ``F11.5, 1X, A11, 1X, A11``; here the three fields may also be separated by
commas or any blanks).  Each file is a 2-D HipFT map in m/s:

* v_theta on the theta faces x phi nodes, h5py shape ``(N_t + 1, N_f)``;
* v_phi on the theta nodes x phi faces, h5py shape ``(N_t, N_f + 1)``.

Times are ``24 JD`` hours relative to the first row.  As in HipFT, the run starts with
the last pair whose time is at or before ``time_start`` modulo the list's span, the
list cycles (after the last pair, the first follows after the gap between the last
two), a pair is switched to at the first step that starts at or after its time, and
steps are cut so that they land on switch times.

Only the unique longitude columns are read; the periodic halo exchange provides the
seam, so a file whose first and last columns differ is taken at its columns
``2 .. N_f`` (HipFT uses the file's first column as well until its first switch).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.apps.flux.grid import MS_TO_RSH, SphereGrid, read_file_info
from hpcml.apps.flux.layout import Layout
from hpcml.config import ConfigError

__all__ = ["FlowFiles", "read_flow_list"]


def read_flow_list(path: str | Path, directory: str | Path | None = None) -> list[tuple[float, Path, Path]]:
    """``(Julian date, v_theta path, v_phi path)`` for every row of a HipFT flow list."""
    p = Path(path)
    base = Path(directory) if directory else p.parent
    rows: list[tuple[float, Path, Path]] = []
    for n, line in enumerate(p.read_text().splitlines()[1:], start=2):
        if not line.strip():
            continue
        parts = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        try:
            jd = float(parts[0])
            vt, vp = parts[1], parts[2]
        except (ValueError, IndexError):
            raise ConfigError(f"flow list {str(p)!r}, line {n}: expected 'JD vt_file vp_file', got {line!r}") from None
        rows.append((jd, base / vt, base / vp))
    if len(rows) < 2:
        raise ConfigError(f"flow list {str(p)!r} needs at least two rows (HipFT cycles through them), got {len(rows)}")
    return rows


class FlowFiles:
    """The flow-file list of a run and the pair in use (same on every rank).

    Every file is checked (exists, is a HipFT 2-D file, has the grid's shape) when
    this object is made, before any collective call.
    """

    def __init__(self, list_path: str, directory: str, grid: SphereGrid, t_start: float) -> None:
        rows = read_flow_list(list_path, directory or None)
        g = grid
        want = {"v_theta": (g.Nt + 1, g.Nf), "v_phi": (g.Nt, g.Nf + 1)}
        where = {"v_theta": "theta faces x phi nodes", "v_phi": "theta nodes x phi faces"}
        for _, vt, vp in rows:
            for what, path in (("v_theta", vt), ("v_phi", vp)):
                info = read_file_info(path, f"flow file ({what})", ndims=(2,))
                if info.shape != want[what]:
                    raise ConfigError(
                        f"flow file {str(path)!r} ({what}) has shape {info.shape}; this grid needs "
                        f"{want[what]} ({where[what]})"
                    )
        self.paths = [(vt, vp) for _, vt, vp in rows]
        times = np.array([24.0 * jd for jd, _, _ in rows])
        self.times = times - times[0]
        span = self.times[-1] - self.times[0]
        if not np.all(np.diff(self.times) > 0):
            raise ConfigError(f"flow list {list_path!r}: times must increase from row to row")
        self.dt_last = self.times[-1] - self.times[-2]
        t_in = t_start % span  # Fortran MODULO with a positive span
        idx = int(np.argmin(np.abs(self.times - t_in)))
        if self.times[idx] > t_in:
            idx -= 1
        self.idx = idx
        self.t_current = t_start - t_in + self.times[idx]
        self.t_next = self.t_current + self._gap(idx)

    def _gap(self, idx: int) -> float:
        return self.dt_last if idx + 1 >= len(self.times) else self.times[idx + 1] - self.times[idx]

    def advance(self, time: float) -> bool:
        """Switch to the next pair if ``time`` has reached its time (one switch per call, as HipFT)."""
        if time < self.t_next:
            return False
        self.idx = (self.idx + 1) % len(self.times)
        self.t_current = self.t_next
        self.t_next = self.t_current + self._gap(self.idx)
        return True

    def cut(self, time: float, dt: float) -> tuple[float, bool]:
        """Cut ``dt`` so that the step ends on the next switch time."""
        if time + dt >= self.t_next:
            return self.t_next - time, True
        return dt, False

    def read_block(self, lay: Layout) -> tuple[np.ndarray, np.ndarray]:
        """The current pair on this rank's ghosted block ``(NY, NX)``, R_sun/h (0 outside the grid)."""
        g = lay.grid
        vt_path, vp_path = self.paths[self.idx]
        vt = _block(vt_path, lay, g.Nt + 1)
        vp = _block(vp_path, lay, g.Nt)
        return MS_TO_RSH * vt, MS_TO_RSH * vp

    def state(self) -> dict[str, Any]:
        """Restart state: the pair in use and its switch times."""
        return {"idx": int(self.idx), "t_current": float(self.t_current), "t_next": float(self.t_next)}

    def restore(self, st: dict[str, Any]) -> None:
        """Continue with the pair a checkpoint was using."""
        self.idx = int(st["idx"])
        self.t_current = float(st["t_current"])
        self.t_next = float(st["t_next"])


def _block(path: Path, lay: Layout, nrows: int) -> np.ndarray:
    """File rows ``j = 1..nrows`` and unique columns of the block (periodic), zeros elsewhere."""
    import h5py

    j = lay.j_of_row
    ok = (j >= 1) & (j <= nrows)
    out = np.zeros((lay.NY, lay.NX))
    if not np.any(ok):
        return out
    lo, hi = int(j[ok].min()) - 1, int(j[ok].max())
    info = read_file_info(path, "flow file", ndims=(2,))
    with h5py.File(path, "r") as fh:
        rows = np.asarray(fh[info.dataset][lo:hi, :], dtype=np.float64)
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"flow file {str(path)!r} contains non-finite values")
    out[ok] = rows[(j[ok] - 1 - lo)][:, lay.k_of_col - 1]
    return out
