"""HipFT-compatible history files (``hipft_history_sol_r*.out`` / ``hipft_history_num_r*.out``).

Same columns, meaning and fixed-width Fortran formats as HipFT (``i10`` then
``1pe23.15e3`` reals, one blank between fields), written by one rank.  Rows are
buffered and appended in batches so a run with many realizations never holds
thousands of open files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpcml.apps.flux.grid import RSUN2

__all__ = ["HIPFT_CASES", "NUM_COLUMNS", "SOL_COLUMNS", "HistoryWriter", "compare_rows", "fortran_e", "read_history"]

SOL_COLUMNS = (
    "STEP", "TIME", "BR_MIN", "BR_MAX", "BR_ABS_MIN", "FLUX_POSITIVE", "FLUX_NEGATIVE",
    "NPOLE_FLUX_POSITIVE", "NPOLE_FLUX_NEGATIVE", "SPOLE_FLUX_POSITIVE", "SPOLE_FLUX_NEGATIVE",
    "NPOLE_AREA", "SPOLE_AREA", "EQ_DIPOLE", "AX_DIPOLE", "VALIDATION_ERR_HHabs",
)  # fmt: skip
NUM_COLUMNS = (
    "STEP", "TIME", "DTIME", "DTIME_ADV_STB", "DTIME_ADV_USED", "DTIME_DIFF_STB", "N_DIFF_PER_STEP", "N_DIFF_CYCLES",
)  # fmt: skip


# The seven cases of HipFT's test suite (folder names).
HIPFT_CASES = (
    "advect_gaussians_phi",
    "advect_gaussians_theta",
    "advect_gaussians_phi_theta",
    "diffuse_soccer",
    "diffuse_advect_soccer",
    "diffuse_dipole",
    "diffuse_advect_atten_map_1cr",
)

# Columns HipFT's own suite compares on the final row, with this project's tolerances.
STRICT = {"BR_MIN": 1e-6, "BR_MAX": 1e-6, "FLUX_POSITIVE": 1e-6, "FLUX_NEGATIVE": 1e-6}
LOOSE = {"BR_ABS_MIN": 1e-5, "VALIDATION_ERR_HHabs": 1e-5}
FLUX_COLS = (
    "FLUX_POSITIVE", "FLUX_NEGATIVE", "NPOLE_FLUX_POSITIVE", "NPOLE_FLUX_NEGATIVE", "SPOLE_FLUX_POSITIVE",
    "SPOLE_FLUX_NEGATIVE", "NPOLE_AREA", "SPOLE_AREA",
)  # fmt: skip
DIPOLE_COLS = ("EQ_DIPOLE", "AX_DIPOLE")


def fortran_e(x: float) -> str:
    """Format like Fortran ``1pe23.15e3``: ``-1.378037984328386E+000`` right-justified in 23."""
    x = float(x)
    if not math.isfinite(x):
        return f"{'NaN' if math.isnan(x) else ('-Infinity' if x < 0 else 'Infinity'):>23}"
    mant, exp = f"{x:.15E}".split("E")
    return f"{mant}E{int(exp):+04d}".rjust(23)


def _header(names: Sequence[str]) -> str:
    return f"{names[0]:>10}" + "".join(f"{n:>23}" for n in names[1:]) + " \n"


def _fields(values: Sequence[float]) -> str:
    """``" " + fortran_e(v)`` for every value, joined: one ``format`` per value and two replaces per row.

    ``format(v, " .15E")`` gives a positive value a leading space, so every field is 22
    characters with Python's two-digit exponent and 23 once the exponent gets Fortran's
    third digit.  Values with three-digit exponents, NaN or infinities change the length
    (or contain ``N``) and go through :func:`fortran_e` (2x slower).
    """
    vals = values.tolist() if isinstance(values, np.ndarray) else [float(v) for v in values]
    body = " ".join([format(v, " .15E") for v in vals]).replace("E+", "E+0").replace("E-", "E-0")
    if len(body) != 24 * len(vals) - 1 or "N" in body:
        return "".join(" " + fortran_e(v) for v in vals)
    return " " + body


def sol_line(step: int, time: float, values: Sequence[float]) -> str:
    """One ``hipft_history_sol`` row: step, time and the 14 diagnostics."""
    return f"{step:10d} {fortran_e(time)}{_fields(values)}\n"


def num_line(step: int, time: float, reals: Sequence[float], ints: Sequence[int]) -> str:
    """One ``hipft_history_num`` row: step, time, 4 reals, 2 integers."""
    return f"{step:10d} {fortran_e(time)}{_fields(reals)}" + "".join(f" {i:15d}" for i in ints) + "\n"


class HistoryWriter:
    """Append-only writer of per-realization history files: realizations ``first .. first + n_real - 1``.

    One writer per set of files: the flux solver gives each ensemble group's root its
    own realizations' files, so groups format and write their rows in parallel.
    """

    def __init__(
        self, directory: str | Path, n_real: int, flush_every: int = 200, append: bool = False, first: int = 0
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = n_real
        self.first = first
        self.flush_every = flush_every
        self.sol: list[list[str]] = [[] for _ in range(n_real)]
        self.num: list[list[str]] = [[] for _ in range(n_real)]
        if not append:
            for r in range(n_real):
                self.sol_path(r).write_text(_header(SOL_COLUMNS))
                self.num_path(r).write_text(_header(NUM_COLUMNS))

    def truncate(self, step: int, time: float) -> None:
        """Drop rows after ``(step, time)`` (a restart from a checkpoint taken there)."""
        self.flush()
        for r in range(self.n):
            for path in (self.sol_path(r), self.num_path(r)):
                if not path.is_file():
                    continue
                lines = path.read_text().splitlines(keepends=True)
                keep = lines[:1]
                for ln in lines[1:]:
                    parts = ln.split()
                    if parts and (int(parts[0]) < step or (int(parts[0]) == step and float(parts[1]) <= time)):
                        keep.append(ln)
                path.write_text("".join(keep))

    def sol_path(self, r: int) -> Path:
        """Path of this writer's realization ``r``'s (0-based, from ``first``) solution history."""
        return self.dir / f"hipft_history_sol_r{self.first + r + 1:06d}.out"

    def num_path(self, r: int) -> Path:
        """Path of this writer's realization ``r``'s numerics history."""
        return self.dir / f"hipft_history_num_r{self.first + r + 1:06d}.out"

    def add(self, step: int, time: float, sol: np.ndarray, num_reals: Sequence[float], num_ints: Sequence[int]) -> None:
        """Add one row for each of this writer's realizations; ``sol`` has shape ``(n_real, 14)``."""
        nl = num_line(step, time, num_reals, num_ints)
        for r in range(self.n):
            self.sol[r].append(sol_line(step, time, sol[r]))
            self.num[r].append(nl)
        if len(self.sol[0]) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Append the buffered rows to the files."""
        for r in range(self.n):
            if self.sol[r]:
                with open(self.sol_path(r), "a") as fh:
                    fh.write("".join(self.sol[r]))
                with open(self.num_path(r), "a") as fh:
                    fh.write("".join(self.num[r]))
            self.sol[r].clear()
            self.num[r].clear()


def read_history(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a HipFT history file: column names and a float array of the rows."""
    lines = Path(path).read_text().splitlines()
    names = lines[0].split()
    rows = [[float(v) for v in ln.split()] for ln in lines[1:] if ln.strip()]
    return names, np.array(rows, dtype=np.float64).reshape(-1, len(names))


def compare_rows(names: list[str], got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Worst relative difference per compared column over the rows given (same shapes).

    ``BR_ABS_MIN`` below 1e-64 is forgiven as HipFT's compare script does, and a
    validation error below 1e-13 (round-off of an exact initial field) is taken
    as 0 on both sides.  Other
    columns are checked against the column's scale: fluxes to the total unsigned
    flux, dipoles to the largest dipole the unsigned flux allows, so that
    round-off noise (an axial dipole of 1e-18 G) is not compared relatively.
    """
    col = {n: i for i, n in enumerate(names)}
    worst: dict[str, float] = {}
    unsigned = np.abs(ref[:, col["FLUX_POSITIVE"]]) + np.abs(ref[:, col["FLUX_NEGATIVE"]])
    for n in names[2:]:
        i = col[n]
        a, b = got[:, i], ref[:, i]
        if n in STRICT or n in LOOSE:
            keep = ~((n == "BR_ABS_MIN") & (np.abs(b) < 1e-64))
            if n == "VALIDATION_ERR_HHabs":
                keep &= ~((np.abs(a) < 1e-13) & (np.abs(b) < 1e-13))
            d = np.where(b != 0, np.abs(a - b) / np.where(b != 0, np.abs(b), 1.0), np.abs(a))
            worst[n] = float(np.max(d[keep], initial=0.0))
        else:
            scale = unsigned if n in FLUX_COLS else unsigned * 3.0 / (4.0 * math.pi) / RSUN2
            worst[n] = float(np.max(np.abs(a - b) / np.maximum(scale, 1e-300), initial=0.0))
    return worst
