"""Time-series output of distributed fields and scalars to HDF5.

:class:`Output` appends snapshots of :class:`~hpcml.distarray.DistArray` fields to
datasets shaped ``(nsteps, *global_shape)`` and scalar (or small replicated
array) series to ``scalars/<name>``, with the layout of :mod:`hpcml.io.layout`.
Two real write paths give the same file to a reader:

``mpio``
    h5py built against parallel HDF5: one shared file opened with
    ``driver="mpio"``; every snapshot is one collective hyperslab write, HDF5
    reading each rank's interior straight out of its ghosted buffer.
``vds``
    The ordinary h5py wheel: rank ``r`` writes its block to
    ``NAME.d/rank-RRRRR.h5`` (a resizable dataset per field); rank 0 keeps
    ``NAME.h5`` with the index, the scalars and, per field, an HDF5 virtual
    dataset mapping every rank's block, so ``h5py.File("NAME.h5")["u"][...]`` is
    the global array.  Source names are relative to ``NAME.h5``'s directory, so
    the pair moves together.  The virtual datasets are rebuilt (rank 0, no
    communication) every ``flush_every`` writes and on :meth:`Output.flush`.
    ``consolidate=True`` copies everything into one plain ``NAME.h5`` on close.

The path is chosen automatically (``mpio`` when h5py has MPI, unless the file
being appended to already uses per-rank files), can be forced with
``driver=`` or ``HPCML_IO_DRIVER``, is logged by rank 0 and recorded in the
file's ``writer`` attribute.

Appending across restarts (``mode="a"``, the default) extends every series.
Each run that writes per-rank files adds a *segment*: new files under
``NAME.d/`` (segment 0 directly, later ones in ``NAME.d/sKKKK/``), so a restart
on a different rank count or decomposition never rewrites the files of earlier
runs; the virtual dataset maps old snapshots to old files and new ones to new
files.  A consolidated (plain) field being appended to in ``vds`` mode is moved
to ``hpcml/base/<name>`` and mapped from the same file.  ``restart_step=S``
first drops snapshots with step >= S (written after the checkpoint a job
restarts from), so no step appears twice.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
from mpi4py import MPI

from hpcml.io._common import (
    FORMAT,
    chunk_shape,
    decomposition_record,
    fsync_dir,
    fsync_file,
    h5py_has_mpi,
    provenance,
    root_call,
    stem,
    write_box,
)
from hpcml.io.errors import OutputError
from hpcml.io.layout import FIELD, INTERNAL, SCALAR, check_name, index_paths, inspect_file, scalar_path
from hpcml.io.lock import PathLock
from hpcml.io.progress import Progress

__all__ = ["DRIVERS", "Output", "choose_driver", "consolidate"]

log = logging.getLogger("hpcml.io")

DRIVERS = ("auto", "mpio", "vds")
_MANAGED_ATTRS = frozenset({"kind", "units", "nsteps", "step", "time", "decomposition"})
_RANK_FILE = re.compile(r"^rank-\d{5,}\.h5$")
_SEGMENT_DIR = re.compile(r"^s(\d{4,})$")


def choose_driver(requested: str = "auto") -> str:
    """The write path for a new file: ``"mpio"`` if h5py has MPI, else ``"vds"``.

    ``HPCML_IO_DRIVER`` overrides ``"auto"``.  Asking for ``"mpio"`` without an
    MPI-enabled h5py raises :class:`~hpcml.io.errors.OutputError`.
    """
    if requested == "auto":
        requested = os.environ.get("HPCML_IO_DRIVER", "auto").strip().lower() or "auto"
    if requested not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS}, got {requested!r}")
    if requested == "mpio" and not h5py_has_mpi():
        raise OutputError(
            "driver='mpio' needs h5py built against parallel HDF5 (h5py.get_config().mpi is False); "
            "see docs/io.md, or use driver='vds'"
        )
    if requested == "auto":
        return "mpio" if h5py_has_mpi() else "vds"
    return requested


@dataclass
class _Series:
    """What every rank knows about one series (kept identical on all ranks)."""

    path: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    n: int = 0
    units: str = ""
    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    # vds bookkeeping: mappings of earlier segments and this run's blocks.
    old_maps: list[dict[str, Any]] = field(default_factory=list)
    seg_t0: int = 0
    seg_n: int = 0
    blocks: list[tuple[tuple[int, ...], tuple[int, ...]]] | None = None
    decomposition: dict[str, Any] | None = None
    dirty: bool = False


def _nan_or_float(t: Any) -> float:
    return float("nan") if t is None else float(t)


def _keep_count(steps: list[int], restart_step: int | None) -> int:
    """Snapshots to keep: those before the first with step >= ``restart_step``."""
    if restart_step is None:
        return len(steps)
    for i, s in enumerate(steps):
        if s >= restart_step:
            return i
    return len(steps)


def _clip_maps(maps: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Mappings restricted to snapshots ``< n`` (those entirely past ``n`` dropped)."""
    out = []
    for m in maps:
        c = min(m["count"][0], n - m["vstart"][0])
        if c <= 0:
            continue
        out.append({**m, "count": [c, *m["count"][1:]]})
    return out


def _segment_dirs(parts: Path) -> list[int]:
    """Segment numbers already present in ``NAME.d``."""
    if not parts.is_dir():
        return []
    segs = set()
    for p in parts.iterdir():
        if p.is_file() and _RANK_FILE.match(p.name):
            segs.add(0)
        elif p.is_dir() and (m := _SEGMENT_DIR.match(p.name)):
            segs.add(int(m.group(1)))
    return sorted(segs)


def _remove_parts(parts: Path) -> None:
    """Delete the per-rank files hpcml wrote under ``NAME.d`` (and nothing else)."""
    if not parts.is_dir():
        return
    for p in parts.iterdir():
        if p.is_file() and _RANK_FILE.match(p.name):
            p.unlink()
        elif p.is_dir() and _SEGMENT_DIR.match(p.name):
            for q in p.iterdir():
                if q.is_file() and _RANK_FILE.match(q.name):
                    q.unlink()
            if not any(p.iterdir()):
                p.rmdir()
    if not any(parts.iterdir()):
        parts.rmdir()


class Output:
    """Append-only HDF5 time series of distributed fields and scalars (collective).

    Parameters
    ----------
    path
        Output file, e.g. ``"run.h5"``; sidecars are ``run.xmf`` and ``run.d/``.
    comm
        Communicator of the writing ranks (``MPI.COMM_WORLD`` by default); every
        method is collective over it.
    config
        The run's configuration, TOML text or a mapping (stored as TOML text in
        the ``config`` attribute).
    mode
        ``"a"`` appends to an existing file (creating it if absent); ``"w"``
        starts a new one, deleting an old file's per-rank parts.
    driver
        ``"auto"``, ``"mpio"`` or ``"vds"`` (see the module docstring).
    consolidate
        ``vds`` only: on :meth:`close`, copy everything into one plain
        ``NAME.h5`` and delete ``NAME.d``.
    restart_step
        When appending, first drop snapshots whose step is ``>= restart_step``.
    xdmf
        Write the ``NAME.xmf`` sidecar on :meth:`flush` and :meth:`close`.
    flush_every
        Make the file readable (index, virtual datasets, HDF5 flush) every this
        many writes; ``0`` only on :meth:`flush`/:meth:`close`.
    collective
        ``mpio`` only: collective MPI-IO transfers (the default); ``False`` lets
        each rank write its hyperslab independently, which was 4x faster here
        with ranks oversubscribing cores and a 2-D process grid (see docs/io.md).

    Attributes
    ----------
    driver
        The path taken: ``"mpio"`` or ``"vds"``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        comm: MPI.Comm | None = None,
        config: Any = None,
        *,
        mode: str = "a",
        driver: str = "auto",
        consolidate: bool = False,
        restart_step: int | None = None,
        xdmf: bool = True,
        flush_every: int = 1,
        collective: bool = True,
    ) -> None:
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' or 'w', got {mode!r}")
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}")
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.path = Path(path)
        self.parts = Path(str(stem(self.path)) + ".d")
        self.xmf_path = stem(self.path).with_suffix(".xmf")
        self.consolidate = bool(consolidate)
        self.xdmf = bool(xdmf)
        self.flush_every = int(flush_every)
        self.collective = bool(collective)
        self._writes = 0
        self._closed = False
        self._main: h5py.File | None = None
        self._rank_file: h5py.File | None = None
        # Before anything is read or deleted: another job writing this path is refused here.
        self._lock = PathLock(self.comm, files=[self.path]).acquire()
        plan = root_call(self.comm, lambda: self._plan(mode, driver, restart_step, config))
        self.driver: str = plan["driver"]
        self._segment: int = plan["segment"]
        self._prov: dict[str, Any] = plan["provenance"]
        self._history: list[dict[str, Any]] = plan["history"]
        self._series: dict[str, _Series] = {}
        for key, s in plan["series"].items():
            self._series[key] = _Series(
                path=key,
                kind=s["kind"],
                shape=tuple(s["shape"]),
                dtype=s["dtype"],
                n=s["n"],
                units=s["units"],
                steps=s["steps"],
                times=s["times"],
                attrs=s.get("keep_attrs", {}),
                old_maps=s.get("maps", []),
                seg_t0=s["n"],
                dirty=s["n"] != s["stored"] or "move_to_base" in s,
            )
        self._open(plan)
        if self.rank == 0:
            where = self.path if self.driver == "mpio" else f"{self.path} + {self._segment_dir()}/rank-*.h5"
            log.info(
                "hpcml.io: %s %s through %s (%s)",
                "appending to" if plan["existing"] else "writing",
                where,
                self.driver,
                "h5py with MPI, collective writes" if self.driver == "mpio" else "per-rank files + virtual datasets",
            )

    # -- planning (rank 0) ---------------------------------------------------------------
    def _plan(self, mode: str, driver: str, restart_step: int | None, config: Any) -> dict[str, Any]:
        info = None
        if mode == "a" and self.path.exists():
            try:
                info = inspect_file(self.path, maps=True)
            except OSError as exc:
                raise OutputError(f"cannot append to {self.path}: not a readable HDF5 file ({exc})") from None
            if info["attrs"].get("format") != FORMAT:
                raise OutputError(f"cannot append to {self.path}: not an hpcml output file (no format={FORMAT!r})")
        has_virtual = bool(info) and any(s["virtual"] for s in info["series"].values())
        if driver == "auto" and has_virtual:
            chosen = "vds"  # appending to per-rank files: keep that layout
        else:
            chosen = choose_driver(driver)
        if chosen == "mpio" and has_virtual:
            raise OutputError(
                f"cannot append to {self.path} with driver='mpio': its fields are virtual datasets over "
                f"{self.parts}/; append with driver='vds' or run hpcml.io.consolidate({str(self.path)!r}) first"
            )
        series: dict[str, Any] = {}
        for key, found in (info or {"series": {}})["series"].items():
            keep = _keep_count(found["steps"], restart_step)
            s = {**found, "n": keep, "steps": found["steps"][:keep], "times": found["times"][:keep]}
            # User attributes (origin, spacing, latitude, ...) survive the rebuild of a virtual dataset.
            s["keep_attrs"] = {k: v for k, v in s["attrs"].items() if k not in _MANAGED_ATTRS}
            if chosen == "vds" and s["kind"] == FIELD:
                if s["virtual"]:
                    if s.get("missing"):
                        raise OutputError(
                            f"cannot append to {self.path}: field {key!r} maps per-rank files that are missing: "
                            f"{', '.join(s['missing'][:5])}"
                        )
                    s["maps"] = _clip_maps(s["maps"], keep)
                else:  # plain (consolidated or mpio) data becomes segment "." of the new VDS
                    base = f"/{INTERNAL}/base/{key}"
                    s["maps"] = _clip_maps(
                        [
                            {
                                "file": ".",
                                "dset": base,
                                "vstart": [0] * (1 + len(s["shape"])),
                                "count": [s["stored"], *s["shape"]],
                                "sstart": [0] * (1 + len(s["shape"])),
                                "sshape": [s["stored"], *s["shape"]],
                            }
                        ],
                        keep,
                    )
                    s["move_to_base"] = base
            series[key] = s
        history = list((info or {"attrs": {}})["attrs"].get("history") or [])
        prov = provenance(self.comm, config)
        keys = ("start_time", "hpcml_version", "mpi_library", "h5py_version", "hdf5_version", "ranks")
        history.append({k: prov[k] for k in keys} | {"driver": chosen, "restart_step": restart_step})
        if info:  # start_time stays the first run's; each run's own is in history
            prov["start_time"] = info["attrs"].get("start_time", prov["start_time"])
        segments = _segment_dirs(self.parts) if (info and chosen == "vds") else []
        segment = (max(segments) + 1) if segments else 0
        # Prepare the directory before anyone opens a rank file.
        if mode == "w" or not info:
            _remove_parts(self.parts)
        if chosen == "vds":
            self._segment = segment
            self._segment_dir().mkdir(parents=True, exist_ok=True)
        return {
            "driver": chosen,
            "segment": segment,
            "series": series,
            "existing": bool(info),
            "provenance": prov,
            "history": history,
        }

    def _segment_dir(self) -> Path:
        return self.parts if self._segment == 0 else self.parts / f"s{self._segment:04d}"

    def _rank_path(self, rank: int) -> Path:
        return self._segment_dir() / f"rank-{rank:05d}.h5"

    def _relative(self, p: Path) -> str:
        """Name of ``p`` relative to the main file's directory (as VDS sources store it)."""
        return os.path.relpath(p, self.path.parent if str(self.path.parent) else ".")

    # -- opening -------------------------------------------------------------------------
    def _root_attrs(self) -> dict[str, Any]:
        attrs = {k: v for k, v in self._prov.items()}
        attrs["writer"] = self.driver
        attrs["history"] = _json(self._history)
        return attrs

    def _open(self, plan: dict[str, Any]) -> None:
        fresh = not plan["existing"]
        if self.driver == "mpio":
            self._main = h5py.File(self.path, "w" if fresh else "a", driver="mpio", comm=self.comm)
            for k, v in self._root_attrs().items():
                self._main.attrs[k] = v
            for s in self._series.values():  # restart truncation, collectively
                self._resize(s, s.n)
            return
        # vds: only rank 0 holds the main file; errors there reach every rank.
        root_call(self.comm, lambda: self._open_main_vds(fresh, plan))

    def _open_main_vds(self, fresh: bool, plan: dict[str, Any]) -> None:
        self._main = h5py.File(self.path, "w" if fresh else "a")
        for k, v in self._root_attrs().items():
            self._main.attrs[k] = v
        for key, s in plan["series"].items():
            if "move_to_base" in s:
                self._main.move(key, s["move_to_base"])
            self._resize(self._series[key], self._series[key].n)

    def _resize(self, s: _Series, n: int) -> None:
        """Set the extent of a series' data (plain only) and index datasets to ``n``."""
        f = self._main
        assert f is not None
        paths = list(index_paths(s.path))
        if s.path in f and not f[s.path].is_virtual:
            paths.append(s.path)
        for p in paths:
            if p in f and f[p].shape[0] != n:
                f[p].resize(n, axis=0)

    # -- writing -------------------------------------------------------------------------
    def _check(self, msg: str | None) -> None:
        """Raise on every rank if any rank found a problem (one allgather)."""
        msgs = self.comm.allgather(msg)
        for r, m in enumerate(msgs):
            if m is not None:
                raise OutputError(f"{self.path}: {m}" + (f" (on rank {r})" if self.size > 1 else ""))

    def write(
        self,
        name: str,
        array: Any,
        step: int,
        time: float | None = None,
        *,
        units: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """Append one snapshot of a distributed field (collective).

        Parameters
        ----------
        name
            Dataset name (``"u"``); its series is ``/name`` shaped ``(n, *global)``.
        array
            The :class:`~hpcml.distarray.DistArray` (NumPy or CuPy); ghosts are not written.
        step, time
            Simulation step and time of the snapshot (recorded in the index).
        units
            Units attribute (kept from the first write unless given again).
        attrs
            Extra field attributes, e.g. ``origin``/``spacing`` for the XDMF grid.
        """
        self._live()
        check_name(name)
        msg = None
        decomp = getattr(array, "decomp", None)
        s = self._series.get(name)
        if decomp is None or not hasattr(array, "interior"):
            msg = f"write({name!r}): expected a DistArray, got {type(array).__name__}"
        elif decomp.size != self.size:
            msg = f"write({name!r}): the array is decomposed over {decomp.size} ranks, the output over {self.size}"
        elif s is not None and (s.kind != FIELD or s.shape != tuple(array.shape) or s.dtype != array.dtype.str):
            msg = (
                f"write({name!r}): the file holds a {s.kind} of shape {s.shape} and dtype {s.dtype}; "
                f"got a field of shape {tuple(array.shape)} and dtype {array.dtype.str}"
            )
        elif s is not None and s.blocks is not None and s.blocks[self.rank] != (decomp.start, decomp.local_shape):
            msg = f"write({name!r}): the decomposition changed within one Output session"
        self._check(msg)
        if s is None:
            s = _Series(path=name, kind=FIELD, shape=tuple(array.shape), dtype=array.dtype.str)
            self._series[name] = s
            self._create_series(s)
        if units is not None:
            s.units = str(units)
        if attrs:
            s.attrs.update(attrs)
        s.decomposition = decomposition_record(decomp)
        if self.driver == "mpio":
            assert self._main is not None
            dset = self._main[name]
            dset.resize(s.n + 1, axis=0)
            write_box(dset, decomp.start, array.data, decomp.interior, lead=(s.n,), collective=self.collective)
        else:
            self._write_rank_block(s, name, array)
        self._append_index(s, step, time)

    def _write_rank_block(self, s: _Series, name: str, array: Any) -> None:
        decomp = array.decomp
        if s.blocks is None:
            s.blocks = [tuple(map(tuple, b)) for b in self.comm.allgather((decomp.start, decomp.local_shape))]
            s.seg_t0, s.seg_n = s.n, 0
        if self._rank_file is None:
            self._rank_file = h5py.File(self._rank_path(self.rank), "w")
            self._rank_file.attrs["format"] = FORMAT
            self._rank_file.attrs["rank"] = self.rank
            self._rank_file.attrs["main_file"] = self.path.name
        f = self._rank_file
        if name not in f:
            local = tuple(decomp.local_shape)
            d = f.create_dataset(
                name,
                shape=(0, *local),
                maxshape=(None, *local),
                chunks=chunk_shape(local, array.dtype.itemsize),
                dtype=array.dtype,
            )
            d.attrs["t0"] = s.seg_t0
            d.attrs["start"] = list(decomp.start)
            d.attrs["global_shape"] = list(decomp.shape)
        d = f[name]
        d.resize(s.seg_n + 1, axis=0)
        write_box(d, (0,) * decomp.ndim, array.data, decomp.interior, lead=(s.seg_n,))
        s.seg_n += 1

    def write_scalar(
        self,
        name: str,
        value: Any,
        step: int,
        time: float | None = None,
        *,
        units: str | None = None,
    ) -> None:
        """Append one value of a scalar time series ``scalars/<name>`` (collective).

        ``value`` is a number or a small replicated array (e.g. a latitude profile
        per step, shape fixed by the first write); rank 0's value is stored, so
        pass a globally reduced quantity (``u.norm()``, a residual).
        """
        self._live()
        check_name(name)
        key = scalar_path(name)
        val = np.asarray(value)
        if val.dtype.kind in "b":
            val = val.astype(np.int8)
        s = self._series.get(key)
        msg = None
        if val.dtype.kind not in "iufc":
            msg = f"write_scalar({name!r}): value must be numeric, got {val.dtype}"
        elif s is not None and s.shape != val.shape:
            msg = f"write_scalar({name!r}): value shape {val.shape} differs from the series' {s.shape}"
        self._check(msg)
        if s is None:
            dt = np.result_type(val.dtype, np.float64) if val.dtype.kind == "f" else val.dtype
            s = _Series(path=key, kind=SCALAR, shape=val.shape, dtype=np.dtype(dt).str)
            self._series[key] = s
            self._create_series(s)
        if units is not None:
            s.units = str(units)
        f = self._main
        if f is not None:
            dset = f[key]
            dset.resize(s.n + 1, axis=0)
            if self.rank == 0:
                dset[s.n] = val
        self._append_index(s, step, time)

    def _create_series(self, s: _Series) -> None:
        """Create a series' datasets (collective in mpio; rank 0 in vds)."""
        f = self._main
        if f is None:
            return
        step_p, time_p = index_paths(s.path)
        f.create_dataset(step_p, shape=(0,), maxshape=(None,), chunks=(4096,), dtype="i8")
        f.create_dataset(time_p, shape=(0,), maxshape=(None,), chunks=(4096,), dtype="f8")
        if s.kind == SCALAR:
            per = max(1, min(4096, (1 << 20) // max(1, int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize)))
            f.create_dataset(
                s.path, shape=(0, *s.shape), maxshape=(None, *s.shape), chunks=(per, *s.shape), dtype=s.dtype
            )
        elif self.driver == "mpio":
            # fill_time="never": parallel HDF5 allocates chunks early and would
            # otherwise write every snapshot twice (fill, then data).
            f.create_dataset(
                s.path,
                shape=(0, *s.shape),
                maxshape=(None, *s.shape),
                chunks=chunk_shape(s.shape, np.dtype(s.dtype).itemsize),
                dtype=s.dtype,
                fill_time="never",
            )

    def _append_index(self, s: _Series, step: int, time: float | None) -> None:
        f = self._main
        if f is not None:
            step_p, time_p = index_paths(s.path)
            for p in (step_p, time_p):
                f[p].resize(s.n + 1, axis=0)
            if self.rank == 0:
                f[step_p][s.n] = int(step)
                f[time_p][s.n] = _nan_or_float(time)
        s.n += 1
        s.steps.append(int(step))
        s.times.append(_nan_or_float(time))
        s.dirty = True
        self._writes += 1
        if self.flush_every > 0 and self._writes % self.flush_every == 0:
            self._sync()

    # -- making the file consistent ------------------------------------------------------------
    def _series_attrs(self, s: _Series) -> dict[str, Any]:
        attrs: dict[str, Any] = {"kind": s.kind, "units": s.units, "nsteps": s.n}
        if s.n:
            attrs["step"] = s.steps[-1]
            attrs["time"] = s.times[-1]
        if s.kind == FIELD and s.decomposition is not None:
            attrs["decomposition"] = _json(s.decomposition)
        for k, v in s.attrs.items():
            attrs[k] = v
        return attrs

    def _sync(self) -> None:
        """Make everything written so far readable (collective)."""
        if self.driver == "mpio":
            assert self._main is not None
            for s in self._series.values():
                if s.dirty:
                    for k, v in self._series_attrs(s).items():
                        self._main[s.path].attrs[k] = v
                    s.dirty = False
            self._main.attrs["decomposition"] = self._decomposition_attr()
            self._main.flush()
            return
        if self._rank_file is not None:
            self._rank_file.flush()
        root_call(self.comm, self._sync_vds_main)

    def _decomposition_attr(self) -> str:
        return _json(
            {"ranks": self.size, "fields": {k: s.decomposition for k, s in self._series.items() if s.decomposition}}
        )

    def _sync_vds_main(self) -> None:
        f = self._main
        assert f is not None
        for s in self._series.values():
            if not s.dirty:
                continue
            if s.kind == FIELD:
                self._build_vds(f, s)
            for k, v in self._series_attrs(s).items():
                f[s.path].attrs[k] = v
            s.dirty = False
        f.attrs["decomposition"] = self._decomposition_attr()
        f.flush()

    def _build_vds(self, f: h5py.File, s: _Series) -> None:
        """(Re)create the virtual dataset of field ``s`` over all segments' files."""
        layout = h5py.VirtualLayout(shape=(s.n, *s.shape), dtype=np.dtype(s.dtype))
        for m in _clip_maps(s.old_maps, s.n):
            src = h5py.VirtualSource(m["file"], m["dset"], shape=tuple(m["sshape"]))
            layout[_box(m["vstart"], m["count"])] = src[_box(m["sstart"], m["count"])]
        if s.blocks is not None and s.seg_n:
            for r, (start, shape) in enumerate(s.blocks):
                src = h5py.VirtualSource(self._relative(self._rank_path(r)), s.path, shape=(s.seg_n, *shape))
                layout[_box((s.seg_t0, *start), (s.seg_n, *shape))] = src[
                    _box((0,) * (1 + len(shape)), (s.seg_n, *shape))
                ]
        if s.path in f:
            del f[s.path]
        # NaN fill makes a hole (a missing rank file) visible instead of silent zeros.
        fill = np.array(np.nan if np.dtype(s.dtype).kind in "fc" else 0, dtype=s.dtype)
        f.create_virtual_dataset(s.path, layout, fillvalue=fill)

    def _xdmf_fields(self) -> list[Any]:
        from hpcml.io.xdmf import XdmfField

        return [
            XdmfField(
                name=s.path,
                shape=s.shape,
                dtype=s.dtype,
                times=list(s.times),
                steps=list(s.steps),
                origin=s.attrs.get("origin"),
                spacing=s.attrs.get("spacing"),
                units=s.units,
            )
            for s in self._series.values()
            if s.kind == FIELD and s.n
        ]

    def _write_xdmf(self) -> None:
        from hpcml.io.xdmf import write_xdmf

        write_xdmf(self.xmf_path, self.path.name, self._xdmf_fields())

    def flush(self) -> None:
        """Make the file readable now: index, attributes, virtual datasets, XDMF (collective)."""
        self._live()
        self._sync()
        if self.xdmf:
            root_call(self.comm, self._write_xdmf)

    def close(self) -> None:
        """Flush, close every file, consolidate if asked, release the path (collective, idempotent)."""
        if self._closed:
            return
        try:
            self._close()
        finally:
            self._lock.release()

    def _close(self) -> None:
        self.flush()
        self._closed = True
        if self._rank_file is not None:
            self._rank_file.close()
            self._rank_file = None
            fsync_file(self._rank_path(self.rank))  # the job may end (and the node go) right after
        if self.driver == "mpio":
            assert self._main is not None
            self._main.close()
            self._main = None
            if self.rank == 0:
                fsync_file(self.path)
            self.comm.Barrier()
            return
        root_call(self.comm, self._close_main_vds)
        # Every rank file is closed before anyone goes on: HDF5's file locks would
        # otherwise make a reader (or the consolidation) see fill values for a
        # block whose file another rank has not closed yet.
        self.comm.Barrier()
        if self.consolidate:
            consolidate(self.path, remove_parts=True, comm=self.comm)

    def _close_main_vds(self) -> None:
        if self._main is not None:
            self._main.close()
            self._main = None
        fsync_file(self.path)

    def _live(self) -> None:
        if self._closed:
            raise OutputError(f"{self.path}: the Output is closed")

    def __enter__(self) -> Output:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
            return
        # An exception may have hit only this rank: release what needs no collective call
        # and let the runtime abort the job (a collective close could hang).
        self._closed = True
        if self._rank_file is not None:
            self._rank_file.close()
        if self.driver == "vds" and self._main is not None:
            self._main.close()
        self._lock.release()

    def __repr__(self) -> str:
        return f"Output({str(self.path)!r}, driver={self.driver!r}, ranks={self.size}, series={list(self._series)})"


def _box(start: Any, count: Any) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(a) + int(c)) for a, c in zip(start, count))


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"), default=lambda o: o.item() if hasattr(o, "item") else str(o))


def consolidate(
    path: str | os.PathLike[str],
    *,
    remove_parts: bool = True,
    comm: MPI.Comm | None = None,
    progress: bool | None = None,
) -> Path:
    """Copy an output file whose fields are virtual datasets into one plain file.

    Writes ``NAME.h5`` anew (temporary name, fsync, rename), so a crash leaves the
    original intact, then deletes ``NAME.d`` when ``remove_parts``.  Serial (call
    on one process), or collective over ``comm`` with rank 0 doing the work.
    """
    if comm is not None:
        return root_call(comm, lambda: consolidate(path, remove_parts=remove_parts, comm=None, progress=progress))
    path = Path(path)
    tmp = path.with_name(path.name + ".consolidate-tmp")
    info = inspect_file(path, maps=True, index=False)
    for key, s in info["series"].items():
        if s.get("missing"):
            raise OutputError(f"cannot consolidate {path}: {key!r} maps missing files {', '.join(s['missing'][:5])}")
    total = sum(
        int(np.prod(s["shape"])) * s["n"] * np.dtype(s["dtype"]).itemsize
        for s in info["series"].values()
        if s["virtual"]
    )
    with (
        h5py.File(path, "r") as src,
        h5py.File(tmp, "w") as dst,
        Progress(total, f"consolidate {path.name}", enabled=progress) as bar,
    ):
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        dst.attrs["writer"] = "consolidated"
        for key, obj in src.items():
            if key == INTERNAL:
                continue  # only holds the sources of virtual datasets, materialised below
            if isinstance(obj, h5py.Dataset) and obj.is_virtual:
                _copy_plain(obj, dst, key, bar)
            else:
                src.copy(obj, dst, name=key)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent if str(path.parent) else ".")
    if remove_parts:
        _remove_parts(Path(str(stem(path)) + ".d"))
    return path


def _copy_plain(obj: h5py.Dataset, dst: h5py.File, key: str, bar: Progress) -> None:
    """Copy a (virtual) time-series dataset slab by slab into a plain chunked one."""
    shape = obj.shape
    chunks = chunk_shape(shape[1:], obj.dtype.itemsize) if len(shape) > 1 else None
    d = dst.create_dataset(key, shape=shape, maxshape=(None, *shape[1:]), chunks=chunks, dtype=obj.dtype)
    for k, v in obj.attrs.items():
        d.attrs[k] = v
    row_bytes = int(np.prod(shape[2:], dtype=np.int64)) * obj.dtype.itemsize if len(shape) > 1 else obj.dtype.itemsize
    rows = max(1, (64 * 2**20) // max(1, row_bytes))  # ~64 MiB slabs bound memory
    for i in range(shape[0]):
        if len(shape) == 1:
            d[i] = obj[i]
            continue
        for a in range(0, shape[1], rows):
            block = obj[i, a : a + rows]
            d[i, a : a + rows] = block
            bar.update(block.nbytes)
