"""Helpers of the flux tests: the HipFT suite, running a case, comparing history files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.apps.flux.grid import RSUN2
from hpcml.apps.flux.history import DIPOLE_COLS, FLUX_COLS, HIPFT_CASES, LOOSE, STRICT, read_history
from hpcml.testing import assert_all  # noqa: F401 - re-exported for this folder's tests

CASES = HIPFT_CASES

# HipFT's seven validation cases ship with the repository (tests/data/hipft, see its NOTICE).
SUITE = Path(__file__).resolve().parents[1] / "data" / "hipft"


def suite() -> Path:
    """The HipFT test-suite folder (part of the repository, so never skipped)."""
    assert SUITE.is_dir(), f"HipFT validation data missing at {SUITE}"
    return SUITE


def case_config(case: str, outdir: Path, time_end: float | None = None, **decomp: Any) -> dict[str, Any]:
    """The flux config of a suite case, writing histories only into ``outdir``."""
    from hpcml.apps.flux import config_from_hipft

    cfg = config_from_hipft(suite() / case / "input" / "hipft.in")
    if time_end is not None:
        cfg["time"]["end"] = float(time_end)
    cfg["output"].update(directory=str(outdir), maps="", hipft_maps=False)
    cfg["decomposition"].update(decomp)
    return cfg


def n_real(case: str) -> int:
    """Number of realizations of a case (= reference history files)."""
    return len(list((suite() / case / "reference").glob("hipft_history_sol_r*.out")))


def reference(case: str, r: int, kind: str = "sol") -> tuple[list[str], np.ndarray]:
    """Reference history of realization ``r`` (1-based)."""
    return read_history(suite() / case / "reference" / f"hipft_history_{kind}_r{r:06d}.out")


def mine(outdir: Path, r: int, kind: str = "sol") -> tuple[list[str], np.ndarray]:
    """History written by a run."""
    return read_history(Path(outdir) / f"hipft_history_{kind}_r{r:06d}.out")


def rel(a: float, b: float) -> float:
    """Relative difference against the reference ``b``."""
    return abs(a - b) / abs(b) if b != 0 else abs(a)


def tolerance(column: str) -> float:
    """Allowed difference against the HipFT reference for a column (see :func:`compare_rows`)."""
    return STRICT.get(column, LOOSE.get(column, 1e-6))


def compare_histories(a: Path, b: Path, nreal: int, rtol: float = 1e-10, floor: float = 1e-13) -> list[str]:
    """Differences between two runs' histories beyond ``rtol`` (sums: ``floor`` x unsigned scale)."""
    bad = []
    for r in range(1, nreal + 1):
        names, x = mine(a, r)
        _, y = mine(b, r)
        if x.shape != y.shape:
            bad.append(f"r{r}: {x.shape[0]} rows vs {y.shape[0]}")
            continue
        col = {n: i for i, n in enumerate(names)}
        unsigned = np.abs(y[:, col["FLUX_POSITIVE"]]) + np.abs(y[:, col["FLUX_NEGATIVE"]])
        for n in names:
            i = col[n]
            scale = unsigned if n in FLUX_COLS else unsigned * 3 / (4 * math.pi) / RSUN2 if n in DIPOLE_COLS else 0
            lim = rtol * np.abs(y[:, i]) + floor * scale
            d = np.abs(x[:, i] - y[:, i])
            if np.any(d > lim):
                k = int(np.argmax(d - lim))
                bad.append(f"r{r} {n}: row {k} {x[k, i]!r} vs {y[k, i]!r}")
        _, xn = mine(a, r, "num")
        _, yn = mine(b, r, "num")
        if xn.shape != yn.shape or not np.allclose(xn, yn, rtol=1e-12, atol=0):
            bad.append(f"r{r}: num histories differ")
    return bad


def write_field(path: Path, data: np.ndarray, t: np.ndarray, p: np.ndarray) -> Path:
    """A 2-D HipFT file (``Data`` on theta x phi with scales ``dim1`` = ``p``, ``dim2`` = ``t``), as written."""
    from hpcml.apps.flux.hipft_output import write_hipft_file

    write_hipft_file(Path(path), np.asarray(data), [np.asarray(p), np.asarray(t)], single=False)
    return Path(path)
