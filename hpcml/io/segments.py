"""Planning an output session: what an appending (or restarted) run keeps, where its data goes.

Each :class:`~hpcml.io.Output` session writes its data files into a new
*segment* folder (``NAME.d/`` for the first, ``NAME.d/sKKKK/`` after it), so a
run that appends, also on another rank count or with another driver, never
reopens an earlier run's files: the main file maps old snapshots to old files
and new ones to new files.  :func:`plan_session` (rank 0) decides:

* appending (``mode="a"`` and the file exists): the earlier main file is read
  back (:func:`~hpcml.io.mainfile.load_main`); ``restart_step=S`` drops every
  series entry with step >= S (written after the checkpoint the job restarts
  from); a consolidated file's plain fields are kept by hard-linking the old
  main file into the new segment (``NAME.d/sKKKK/base.h5``, a copy where links
  are not supported) and mapping them from there;
* a new file (``mode="w"`` or none yet): an empty model.  The previous output,
  if any, stays complete and readable until this session's first main-file
  write replaces it; its segments are deleted only then
  (:func:`remove_segments`).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from hpcml.io._common import FORMAT, stem
from hpcml.io.errors import OutputError
from hpcml.io.mainfile import MainModel, load_main, provenance_list
from hpcml.io.vds import clip, missing_sources

__all__ = ["Session", "parts_dir", "plan_session", "remove_segments", "segment_dir", "segments", "truncate"]

_DATA_FILE = re.compile(r"^(rank-\d{5,}|data|base)\.h5$")
_SEGMENT_DIR = re.compile(r"^s(\d{4,})$")


def parts_dir(path: str | os.PathLike[str]) -> Path:
    """``NAME.d``: the folder of an output's data files."""
    return Path(str(stem(path)) + ".d")


def segment_dir(parts: Path, k: int) -> Path:
    """Folder of segment ``k`` (segment 0 is ``NAME.d`` itself)."""
    return parts if k == 0 else parts / f"s{k:04d}"


def segments(parts: Path) -> list[int]:
    """Segment numbers present in ``NAME.d``."""
    if not parts.is_dir():
        return []
    found = set()
    for p in parts.iterdir():
        if p.is_file() and _DATA_FILE.match(p.name):
            found.add(0)
        elif p.is_dir() and (m := _SEGMENT_DIR.match(p.name)):
            found.add(int(m.group(1)))
    return sorted(found)


def remove_segments(parts: Path, which: list[int] | None = None) -> None:
    """Delete the data files hpcml wrote in segments ``which`` (all when ``None``), and nothing else."""
    if not parts.is_dir():
        return
    for k in segments(parts) if which is None else which:
        d = segment_dir(parts, k)
        if not d.is_dir():
            continue
        for q in d.iterdir():
            if q.is_file() and _DATA_FILE.match(q.name):
                q.unlink()
        if k and not any(d.iterdir()):
            d.rmdir()
    if parts.is_dir() and not any(parts.iterdir()):
        parts.rmdir()


def truncate(model: MainModel, restart_step: int | None) -> None:
    """Drop every series entry with step >= ``restart_step`` (and the variables' data there)."""
    if restart_step is None:
        return
    for ax in model.axes.values():
        keep = next((i for i, s in enumerate(ax.steps) if s >= restart_step), ax.n)
        del ax.steps[keep:], ax.times[keep:]
    for var in model.vars.values():
        if var.axis is None:
            continue
        n = model.axes[var.axis].n
        var.n = min(var.n, n)
        if var.values is not None:
            var.values = var.values[: var.n]
        # Mappings of dropped entries go now: the new entries written there must not overlap them.
        var.maps = clip(var.maps, var.full_shape)


@dataclass
class Session:
    """What rank 0 decided for a session (broadcast to every rank)."""

    driver: str
    segment: int
    model: MainModel
    existing: bool
    stale: list[int] = field(default_factory=list)


def _link_base(path: Path, model: MainModel, seg: Path) -> None:
    """Keep a consolidated file's plain fields: link the old main file into the segment, map from there."""
    plain = [v for v in model.vars.values() if v.kind == "field" and v.attrs.pop("hpcml_plain", None)]
    if not plain:
        return
    base = seg / "base.h5"
    try:
        os.link(path, base)
    except OSError:  # no hard links here (another file system, or not allowed): copy
        shutil.copy2(path, base)
    rel = os.path.relpath(base, path.parent if str(path.parent) else ".")
    for v in plain:
        v.maps = [{**m, "file": rel} for m in v.maps]


def _history_line(entry: dict[str, Any], mode: str) -> str:
    when = entry["start_time"]
    what = f"hpcml {entry['hpcml_version']} on {entry['ranks']} rank(s), writer {entry['driver']}"
    if entry.get("restart_step") is not None:
        what += f", appended after dropping steps >= {entry['restart_step']}"
    elif mode == "a":
        what += ", appended"
    return f"{when}: {what}"


def plan_session(
    path: Path,
    mode: str,
    driver: str,
    restart_step: int | None,
    prov: dict[str, Any],
    title: str | None = None,
) -> Session:
    """Rank 0: load (or start) the model, apply ``restart_step``, pick the driver and the segment."""
    from hpcml.io.writers import choose_driver

    for tmp in path.parent.glob(f".{path.name}.tmp-*"):  # a writer killed before its rename (we hold the lock)
        tmp.unlink(missing_ok=True)
    model = MainModel()
    existing = mode == "a" and path.exists()
    if existing:
        try:
            with h5py.File(path, "r") as f:
                fmt = f.attrs.get("format", b"")
                fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
        except OSError as exc:
            raise OutputError(f"cannot append to {path}: not a readable HDF5 file ({exc})") from None
        if fmt != FORMAT:
            raise OutputError(
                f"cannot append to {path}: it is not an hpcml output of this version (format {fmt or 'none'!r}, "
                f"expected {FORMAT!r}); write a new file (mode='w') or another path"
            )
        model = load_main(path)
        for var in model.vars.values():
            if missing := missing_sources(path, var.maps):
                raise OutputError(
                    f"cannot append to {path}: {var.name!r} maps data files that are missing: {', '.join(missing[:5])}"
                )
        truncate(model, restart_step)
    chosen = choose_driver(driver)
    parts = parts_dir(path)
    found = segments(parts)
    segment = max(found) + 1 if found else 0
    seg = segment_dir(parts, segment)
    seg.mkdir(parents=True, exist_ok=True)
    if existing:
        _link_base(path, model, seg)
    runs = provenance_list(model)
    entry = {
        k: prov[k] for k in ("start_time", "hpcml_version", "mpi_library", "h5py_version", "hdf5_version", "ranks")
    }
    entry |= {"driver": chosen, "restart_step": restart_step}
    runs.append(entry)
    history = str(model.attrs.get("history", "") or "")
    history = (history + "\n" if history else "") + _history_line(entry, "a" if existing else "w")
    cf = {  # what CF tools and ncdump show first
        "Conventions": "CF-1.8",
        "title": title or model.attrs.get("title") or f"hpcml output {path.name}",
        "source": f"hpcml {prov['hpcml_version']}",
        "history": history,
    }
    # The root keeps few attributes (the main file is rewritten at every output step);
    # start times, h5py/HDF5 versions and rank counts of every run are in hpcml_provenance.
    own = {
        "config": prov["config"],
        "hpcml_version": prov["hpcml_version"],
        "mpi_library": prov["mpi_library"],
        "hpcml_provenance": json_dumps(runs),
        "writer": chosen,
        "format": FORMAT,
    }
    dropped = set(prov) | set(cf) | set(own)
    rest = {k: v for k, v in model.attrs.items() if k not in dropped}  # user attributes (Output(attrs=...))
    model.attrs = {**cf, **rest, **own}
    return Session(driver=chosen, segment=segment, model=model, existing=existing, stale=[] if existing else found)


def json_dumps(obj: Any) -> str:
    """Compact JSON (NumPy scalars as numbers)."""
    import json

    return json.dumps(obj, separators=(",", ":"), default=lambda o: o.item() if hasattr(o, "item") else str(o))
