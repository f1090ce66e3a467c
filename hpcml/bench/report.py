"""Timing, memory and report writing shared by every ``hpcml bench`` module.

Reports are a JSON file (the full record: machine, versions, every row) and a
Markdown table of the same rows, both written atomically by rank 0.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (a cgroup or a launcher's binding), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS has no affinity masks
        return os.cpu_count() or 1


def oversubscribed_note(ranks: int, cpus: int, threads: int = 1) -> str | None:
    """The note every MPI benchmark adds when ``ranks`` x ``threads`` exceed the ``cpus`` they share.

    ``None`` when every thread has a CPU.  Otherwise a rank that waits for a
    neighbour waits for the scheduler to run that neighbour: such rows measure
    the sharing of the cores as much as the code, and a model that gives each
    rank its CPUs does not hold.
    """
    if ranks * max(threads, 1) <= cpus:
        return None
    each = f" of {threads} thread(s) each" if threads > 1 else ""
    return (
        f"oversubscribed: {ranks} ranks{each} share {cpus} CPU(s) on one node, so a rank that waits for "
        "another waits for the scheduler too; those rows measure time sharing as well as the code"
    )


def time_call(
    fn: Callable[[], Any],
    *,
    repeat: int = 10,
    warmup: int = 2,
    comm: Any = None,
    min_time: float = 0.0,
) -> dict[str, float]:
    """Time ``fn()`` and return ``{"min", "median", "mean"}`` seconds per call.

    With ``comm`` the ranks synchronise before every call and the time of a call
    is the slowest rank's (what a bulk-synchronous code waits for).  ``min_time``
    repeats further until that many seconds were spent, for very short calls.
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < repeat or spent < min_time:
        if comm is not None:
            comm.Barrier()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if comm is not None:
            from mpi4py import MPI

            dt = comm.allreduce(dt, op=MPI.MAX)
        samples.append(dt)
        spent += dt
        if len(samples) > 100_000:
            break
    return {
        "min": min(samples),
        "median": statistics.median(samples),
        "mean": statistics.fmean(samples),
        "samples": len(samples),
    }


def machine_info() -> dict[str, Any]:
    """Host facts recorded with every benchmark."""
    import numpy as np

    from hpcml._version import __version__

    info: dict[str, Any] = {
        "hpcml": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "host": platform.node(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        from mpi4py import MPI

        info["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
        info["ranks"] = MPI.COMM_WORLD.Get_size()
    except Exception:  # pragma: no cover - mpi4py is a hard dependency
        pass
    return info


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if np.isnan(value):
            return "n/a"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.3e}"
    if value is None:
        return "n/a"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Render ``rows`` as a GitHub Markdown table over ``columns``."""
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinity as ``None`` (JSON ``null``), NumPy scalars as Python ones.

    Python's ``json`` writes bare ``NaN``, which strict JSON parsers (``jq``,
    JavaScript, many others) reject; a value that was not measured is ``null``.
    """
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return strict_json(float(value))
    except (TypeError, ValueError):
        return str(value)


def write_report(
    name: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    outdir: str | os.PathLike[str],
    *,
    meta: dict[str, Any] | None = None,
    title: str | None = None,
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``NAME.json`` and ``NAME.md`` into ``outdir``; return both paths.

    Call on one rank only (rank 0).
    """
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "machine": machine_info(), "meta": meta or {}, "rows": list(rows)}
    jpath, mpath = out / f"{name}.json", out / f"{name}.md"
    _atomic_write(jpath, json.dumps(strict_json(record), indent=2, allow_nan=False) + "\n")
    lines = [f"# {title or 'hpcml bench ' + name}", ""]
    m = record["machine"]
    lines.append(
        f"hpcml {m['hpcml']}, {m.get('mpi', 'MPI ?')}, {m.get('ranks', 1)} rank(s), {m['cpus']} CPUs, {m['date']}"
    )
    lines.append("")
    lines.append(markdown_table(rows, columns))
    for note in notes:
        lines.append(f"- {note}")
    _atomic_write(mpath, "\n".join(lines).rstrip() + "\n")
    return jpath, mpath
