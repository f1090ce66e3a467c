"""Time series (and static snapshots) of distributed fields and scalars in one HDF5 output.

:class:`Output` is the one interface; what varies lives beside it:

* :mod:`hpcml.io.writers` — how field blocks reach the data files: ``mpio``
  (one shared file, collective MPI-IO) or ``vds`` (one file per rank);
* :mod:`hpcml.io.mainfile` — the main file readers open (netCDF-4 compatible:
  named dimensions, coordinate variables, CF attributes), always replaced
  atomically;
* :mod:`hpcml.io.vds` — the virtual datasets that join the blocks;
* :mod:`hpcml.io.segments` — appending and restarts (what is kept, where new
  data goes);
* :mod:`hpcml.io.xdmf` and :mod:`hpcml.io.consolidate` — the ParaView sidecar
  and the single-file copy.

Series axes
    Every snapshot belongs to an entry of a *series axis*: ``time`` by default
    (coordinate ``time`` with ``time_units``, plus the variable ``step``), or
    any other name (``axis="iteration"``), whose coordinate is the step number.
    Series written at the same step share the entry, so ``u(time, y, x)`` and
    ``norm(time)`` line up; a series that skips an entry reads NaN there.
Dimensions and coordinates
    ``dims=`` names a field's axes (default ``x``; ``y, x``; ``z, y, x``);
    ``coords=`` gives their coordinate values (default: the cell index) and
    attributes (``units``, ``long_name``, CF ``axis``).  A dimension is defined
    by its first use and must keep its length.  :meth:`Output.coordinate` adds
    auxiliary coordinates (``theta`` along ``lat``).
Crash safety
    Data files are only appended to; the main file is rewritten whole under a
    temporary name and renamed, after every rank has flushed its data.  That
    happens when an entry is complete (the next one starts), on :meth:`flush`
    and on :meth:`close`, so a crash leaves the last complete state readable.
Path lock
    The output path is locked (:mod:`hpcml.io.lock`) before anything is read or
    deleted; another job writing it is refused.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from hpcml.io._common import decomposition_record, provenance, root_call, stem
from hpcml.io.errors import OutputError
from hpcml.io.lock import PathLock
from hpcml.io.mainfile import Axis, Coord, MainModel, Var, write_main
from hpcml.io.segments import json_dumps, parts_dir, plan_session, remove_segments, segment_dir
from hpcml.io.writers import DRIVERS, WRITERS, DataWriter, choose_driver
from hpcml.runtime import comm_or_world

__all__ = ["DRIVERS", "Output", "choose_driver"]

log = logging.getLogger("hpcml.io")

_DEFAULT_DIMS = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}
_CF_AXIS = {"x": "X", "y": "Y", "z": "Z"}


def default_dims(ndim: int) -> tuple[str, ...]:
    """Dimension names of a field without ``dims=``: ``x``; ``y, x``; ``z, y, x``; else ``dim_K``."""
    return _DEFAULT_DIMS.get(ndim, tuple(f"dim_{k}" for k in range(ndim)))


def _coord_spec(value: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """``values`` or ``(values, attrs)`` -> (1-D array, attrs)."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return np.asarray(value[0]), dict(value[1])
    return np.asarray(value), {}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"a series name must be a non-empty string without '/', got {name!r}")
    return name


class Output:
    """Append-only HDF5 output of distributed fields and scalar series (every method collective).

    Parameters
    ----------
    path
        The main file, e.g. ``"run.h5"``; data files go to ``run.d/``, the
        ParaView sidecar is ``run.xmf``.
    comm
        Communicator of the writing ranks (``MPI.COMM_WORLD`` by default).
    config
        The run's configuration, TOML text or a mapping (root attribute ``config``).
    mode
        ``"a"`` appends to an existing output (creating it if absent); ``"w"``
        replaces it (the old one stays readable until the first flush).
    driver
        ``"auto"``, ``"mpio"`` or ``"vds"`` (:mod:`hpcml.io.writers`).
    consolidate
        On :meth:`close`, copy everything into one plain ``NAME.h5`` and delete ``NAME.d``.
    restart_step
        When appending, first drop every series entry with step ``>= restart_step``.
    xdmf
        Keep the ``NAME.xmf`` sidecar up to date.
    flush_every
        Make the file readable every this many completed series entries
        (``0``: only on :meth:`flush`/:meth:`close`).
    flush_seconds
        Replace the main file at most this often (seconds of wall time; decided
        by rank 0) on those occasions and on :meth:`flush`; :meth:`close` always
        does.  Rewriting the main file costs ~10-200 ms (more with many series
        and a loaded file system), so a job writing many small snapshots is not
        slowed down; a crash loses at most the entries of the last interval
        (``0``: every time, ``flush(force=True)``: now).
    collective
        ``mpio`` only: collective MPI-IO transfers (``False``: independent).
    time_units
        Units of the ``time`` axis (``"1"`` when not given).
    title, attrs
        Root attributes (CF ``title``; anything else JSON-free and small).

    Attributes
    ----------
    driver
        The write path taken: ``"mpio"`` or ``"vds"``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        comm: Any = None,
        config: Any = None,
        *,
        mode: str = "a",
        driver: str = "auto",
        consolidate: bool = False,
        restart_step: int | None = None,
        xdmf: bool = True,
        flush_every: int = 1,
        flush_seconds: float = 5.0,
        collective: bool = True,
        time_units: str | None = None,
        title: str | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' or 'w', got {mode!r}")
        if driver not in DRIVERS:
            raise ValueError(f"driver must be one of {DRIVERS}, got {driver!r}")
        self.comm = comm_or_world(comm)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.path = Path(path)
        self.parts = parts_dir(self.path)
        self.xmf_path = stem(self.path).with_suffix(".xmf")
        self.consolidate, self.xdmf = bool(consolidate), bool(xdmf)
        self.flush_every = int(flush_every)
        self.flush_seconds = float(flush_seconds)
        self._main_written = -float("inf")  # rank 0: when the main file was last replaced
        self.time_units = time_units
        self._closed = False
        self._entries = 0
        self._dirty = False
        # Before anything is read or deleted: another job writing this path is refused here.
        self._lock = PathLock(comm, files=[self.path]).acquire()
        try:
            prov = provenance(comm, config)
            session = root_call(comm, lambda: self._plan(mode, driver, restart_step, prov, title, attrs))
        except BaseException:
            self._lock.release()
            raise
        self.driver: str = session["driver"]
        self._stale: list[int] = session["stale"]
        self.model: MainModel = session["model"] if self.rank != 0 else self._model_root
        self._last: dict[str, int] = {name: v.n - 1 for name, v in self.model.vars.items()}
        self._written: set[str] = set()
        seg = segment_dir(self.parts, session["segment"])
        self._writer: DataWriter = WRITERS[self.driver](self.path, seg, comm, collective)
        if self.rank == 0:
            log.info(
                "hpcml.io: %s %s (%s, data in %s)",
                "appending to" if session["existing"] else "writing",
                self.path,
                "collective MPI-IO" if self.driver == "mpio" else "one file per rank",
                seg,
            )

    # -- planning (rank 0) -----------------------------------------------------------------
    def _plan(
        self, mode: str, driver: str, restart_step: int | None, prov: dict[str, Any], title: Any, attrs: Any
    ) -> dict[str, Any]:
        s = plan_session(self.path, mode, driver, restart_step, prov, title)
        if attrs:
            s.model.attrs.update(dict(attrs))
        self._model_root = s.model
        self._old_maps = {k: list(v.maps) for k, v in s.model.vars.items() if v.kind == "field"}
        # Other ranks get the model without the bulky parts (scalar values, mappings).
        light = MainModel(
            attrs={},
            axes=s.model.axes,
            coords=s.model.coords,
            vars={
                k: Var(v.name, v.kind, v.axis, v.dims, v.shape, v.dtype, dict(v.attrs), None, [], v.n)
                for k, v in s.model.vars.items()
            },
        )
        return {"driver": s.driver, "segment": s.segment, "existing": s.existing, "stale": s.stale, "model": light}

    # -- checks ----------------------------------------------------------------------------
    def _check(self, msg: str | None) -> None:
        """Raise on every rank if any rank found a problem (one allgather)."""
        msgs = self.comm.allgather(msg)
        for r, m in enumerate(msgs):
            if m is not None:
                raise OutputError(f"{self.path}: {m}" + (f" (on rank {r})" if self.size > 1 else ""))

    def _live(self) -> None:
        if self._closed:
            raise OutputError(f"{self.path}: the Output is closed")

    def _dims_problem(
        self, what: str, dims: tuple[str, ...], shape: tuple[int, ...], coords: Mapping[str, Any] | None
    ) -> str | None:
        m = self.model
        if len(dims) != len(shape):
            return f"{what}: {len(dims)} dimension names {dims} for {len(shape)} axes"
        if len(set(dims)) != len(dims):
            return f"{what}: repeated dimension name in {dims}"
        for d, n in zip(dims, shape):
            if d in m.axes or d in m.vars or (d in m.coords and not m.coords[d].is_dim):
                return f"{what}: {d!r} is already the name of a series axis or variable"
            have = m.dim_size(d)
            if have is not None and have != n:
                return f"{what}: dimension {d!r} has length {have} in this file, got {n} (name the axes with dims=)"
        for d, value in (coords or {}).items():
            if d not in dims:
                return f"{what}: coordinate {d!r} is not one of its dimensions {dims}"
            values, _ = _coord_spec(value)
            if values.ndim != 1 or values.shape[0] != shape[dims.index(d)]:
                return f"{what}: coordinate {d!r} needs {shape[dims.index(d)]} values, got shape {values.shape}"
        return None

    def _var_problem(
        self, what: str, name: str, kind: str, axis: str | None, dims: tuple, shape: tuple, dtype: str
    ) -> str | None:
        m = self.model
        if name in m.axes or name in m.coords or name in m.names() - set(m.vars):
            return f"{what}: {name!r} is already the name of an axis or coordinate"
        v = m.vars.get(name)
        if v is None:
            return None
        if (v.kind, v.axis, v.shape, v.dtype) != (kind, axis, shape, dtype) or v.dims != dims:
            return (
                f"{what}: the file holds {name!r} as a {v.kind} on axis {v.axis!r} with dims {v.dims}, "
                f"shape {v.shape}, dtype {v.dtype}; got a {kind} on axis {axis!r} with dims {dims}, "
                f"shape {shape}, dtype {dtype}"
            )
        return None

    # -- dimensions and axes (identical on every rank) ------------------------------------------
    def _define_dims(self, dims: tuple[str, ...], shape: tuple[int, ...], coords: Mapping[str, Any] | None) -> None:
        for d, n in zip(dims, shape):
            if d in self.model.coords:
                continue
            if coords and d in coords:
                values, attrs = _coord_spec(coords[d])
            else:
                values, attrs = np.arange(n, dtype=np.float64), {"long_name": f"{d} index"}
            attrs = {"long_name": d, **attrs}
            if d in _CF_AXIS:
                attrs.setdefault("axis", _CF_AXIS[d])
            self.model.coords[d] = Coord(d, (d,), np.ascontiguousarray(values), attrs)
            self._dirty = True

    def coordinate(self, name: str, values: Any, dims: Sequence[str], **attrs: Any) -> None:
        """Define an auxiliary coordinate ``name`` along existing ``dims`` (collective, rank 0's values)."""
        self._live()
        values = np.asarray(values)
        msg = None
        dims = tuple(dims)
        if name in self.model.names() and name not in self.model.coords:
            msg = f"coordinate {name!r}: the name is taken"
        elif any(self.model.dim_size(d) is None for d in dims):
            msg = f"coordinate {name!r}: dimensions {dims} must be defined first (by a write)"
        elif values.shape != tuple(self.model.dim_size(d) for d in dims):
            msg = f"coordinate {name!r}: shape {values.shape} does not match its dimensions {dims}"
        self._check(msg)
        self.model.coords[name] = Coord(name, dims, values, {"long_name": name, **attrs})
        self._dirty = True

    def _axis(self, name: str) -> Axis:
        ax = self.model.axes.get(name)
        if ax is None:
            kind = "time" if name == "time" else "step"
            ax = Axis(name, kind, units=(self.time_units or "1") if kind == "time" else "")
            self.model.axes[name] = ax
        return ax

    def _slot(self, var: str, axis: str, step: int, time: float | None) -> tuple[int | None, str | None]:
        """Entry of ``axis`` that a snapshot of ``var`` at ``step`` goes to (new entries appended)."""
        ax = self.model.axes.get(axis)
        if ax is None:
            return -1, None
        t = float("nan") if time is None else float(time)
        for j in range(self._last.get(var, -1) + 1, ax.n):
            if ax.steps[j] == step:
                known = ax.times[j]
                if not (np.isnan(known) or np.isnan(t) or known == t):
                    return None, f"time {t} for step {step} differs from the {known} another series recorded"
                return j, None
        if ax.n and step < ax.steps[-1]:
            return None, f"step {step} comes before the last entry of axis {axis!r} (step {ax.steps[-1]})"
        return -1, None

    def _enter(self, var: str, axis: str, step: int, time: float | None, slot: int) -> int:
        ax = self._axis(axis)
        if slot < 0:
            if self._dirty and self.flush_every > 0 and ax.n and (self._entries + 1) % self.flush_every == 0:
                self._sync()  # the previous entries are complete: make them readable
            ax.steps.append(int(step))
            ax.times.append(float("nan") if time is None else float(time))
            self._entries += 1
            slot = ax.n - 1
        elif time is not None and np.isnan(ax.times[slot]):
            ax.times[slot] = float(time)
        self._last[var] = slot
        for v in self.model.vars.values():  # every series on the axis spans all its entries
            if v.axis == axis:
                v.n = ax.n
        self._dirty = True
        return slot

    def _series_args(self, step: Any, time: Any, axis: str) -> str | None:
        if step is None:
            return "time needs a step" if time is not None else None
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
            return f"step must be an integer, got {step!r}"
        if axis != "time" and time is not None:
            return f"axis {axis!r} records step numbers only; pass time=None (or write on axis 'time')"
        _check_name(axis)
        return None

    # -- writing ---------------------------------------------------------------------------
    def write(
        self,
        name: str,
        array: Any,
        step: int | None = None,
        time: float | None = None,
        *,
        axis: str = "time",
        units: str | None = None,
        long_name: str | None = None,
        dims: Sequence[str] | None = None,
        coords: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Store a snapshot of a distributed field (collective); ghosts are not written.

        Parameters
        ----------
        name
            Variable name (``"u"``), at the file's root.
        array
            The :class:`~hpcml.distarray.DistArray` (NumPy or CuPy).
        step, time
            Series entry: simulation step and time.  ``step=None`` stores a
            static field (no series axis; a later write replaces it).
        axis
            Series axis (``"time"``, or e.g. ``"iteration"``: step-valued).
        units, long_name, attrs
            Variable attributes (kept from earlier writes unless given again).
        dims, coords
            Dimension names and coordinate values (``values`` or ``(values,
            attrs)`` per dimension); see the module docstring.
        """
        self._live()
        _check_name(name)
        decomp = getattr(array, "decomp", None)
        msg = None
        if decomp is None or not hasattr(array, "interior"):
            msg = f"write({name!r}): expected a DistArray, got {type(array).__name__}"
        elif decomp.size != self.size:
            msg = f"write({name!r}): the array is decomposed over {decomp.size} ranks, the output over {self.size}"
        shape = tuple(array.shape) if msg is None else ()
        dtype = np.dtype(array.dtype).str if msg is None else ""
        dims_t = tuple(dims) if dims is not None else default_dims(len(shape))
        series_axis = None if step is None else axis
        msg = msg or self._series_args(step, time, axis)
        msg = msg or self._dims_problem(f"write({name!r})", dims_t, shape, coords)
        msg = msg or self._var_problem(f"write({name!r})", name, "field", series_axis, dims_t, shape, dtype)
        slot = None
        if msg is None and step is not None:
            slot, msg = self._slot(name, axis, int(step), time)
        if (
            msg is None
            and name in self._written
            and self._writer.fields[name].blocks[self.rank]
            != (
                tuple(decomp.start),
                tuple(decomp.local_shape),
            )
        ):
            msg = f"write({name!r}): the decomposition changed within one Output session"
        self._check(msg)
        self._define_dims(dims_t, shape, coords)
        var = self._var(name, "field", series_axis, dims_t, shape, dtype, units, long_name, attrs)
        var.attrs["decomposition"] = json_dumps(decomposition_record(decomp))
        if name not in self._written:
            self._writer.create(name, array, series_axis is not None)
            self._written.add(name)
        pos = None if step is None else self._enter(name, axis, int(step), time, slot)
        self._writer.append(name, array, pos)
        self._dirty = True

    def _var(
        self,
        name: str,
        kind: str,
        axis: str | None,
        dims: tuple[str, ...],
        shape: tuple[int, ...],
        dtype: str,
        units: str | None,
        long_name: str | None,
        attrs: Mapping[str, Any] | None,
    ) -> Var:
        var = self.model.vars.get(name)
        if var is None:
            n = self._axis(axis).n if axis is not None else 0
            var = Var(name, kind, axis, dims, shape, dtype, {"long_name": name, "units": ""}, None, [], n)
            if kind == "scalar" and self.rank == 0:
                var.values = np.full((n, *shape), np.nan if np.dtype(dtype).kind in "fc" else 0, dtype=dtype)
            self.model.vars[name] = var
        if units is not None:
            var.attrs["units"] = str(units)
        if long_name is not None:
            var.attrs["long_name"] = str(long_name)
        for k, v in (attrs or {}).items():
            var.attrs[k] = v
        return var

    def write_scalar(
        self,
        name: str,
        value: Any,
        step: int,
        time: float | None = None,
        *,
        axis: str = "time",
        units: str | None = None,
        long_name: str | None = None,
        dims: Sequence[str] | None = None,
        coords: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one value of a series ``name`` (collective; rank 0's value is stored).

        ``value`` is a number or a small replicated array (one value per
        realization, a latitude profile); its shape is fixed by the first write,
        its dimensions are named by ``dims`` (default ``NAME_dim0``, ...).  Pass
        globally reduced quantities (``u.norm()``, a residual).
        """
        self._live()
        _check_name(name)
        val = np.asarray(value)
        if val.dtype.kind == "b":
            val = val.astype(np.int8)
        msg = None
        if val.dtype.kind not in "iufc":
            msg = f"write_scalar({name!r}): value must be numeric, got {val.dtype}"
        msg = msg or (None if step is not None else f"write_scalar({name!r}): a series value needs a step")
        msg = msg or self._series_args(step, time, axis)
        dt = np.result_type(val.dtype, np.float64) if val.dtype.kind == "f" else val.dtype
        dtype = np.dtype(dt).str
        dims_t = tuple(dims) if dims is not None else tuple(f"{name}_dim{k}" for k in range(val.ndim))
        msg = msg or self._dims_problem(f"write_scalar({name!r})", dims_t, val.shape, coords)
        msg = msg or self._var_problem(f"write_scalar({name!r})", name, "scalar", axis, dims_t, val.shape, dtype)
        slot = None
        if msg is None:
            slot, msg = self._slot(name, axis, int(step), time)
        self._check(msg)
        self._define_dims(dims_t, val.shape, coords)
        var = self._var(name, "scalar", axis, dims_t, val.shape, dtype, units, long_name, None)
        pos = self._enter(name, axis, int(step), time, slot)
        if self.rank == 0:
            assert var.values is not None
            if var.values.shape[0] < var.n:
                pad = np.full((var.n - var.values.shape[0], *var.shape), np.nan if np.dtype(dtype).kind in "fc" else 0)
                var.values = np.concatenate([var.values, pad.astype(dtype)])
            var.values[pos] = val

    # -- making the file readable -------------------------------------------------------------
    def _sync(self, force: bool = False) -> None:
        """Flush every rank's data, then rank 0 rewrites the main file (and the sidecar) if due."""
        self._writer.flush()
        if self.driver == "vds":
            self.comm.Barrier()  # every rank's data is with the OS before the main file points at it

        def due() -> bool:  # rank 0 decides (clocks differ between ranks), every rank learns it
            if not (force or time.monotonic() - self._main_written >= self.flush_seconds):
                return False
            self._write_main()
            self._main_written = time.monotonic()
            return True

        if root_call(self.comm, due):
            self._dirty = False

    def _write_main(self, durable: bool = False) -> None:
        """Rank 0: the main file from the model, then the sidecar; stale data files go after."""
        model = self._model_root
        for name, var in model.vars.items():
            if var.axis is not None:
                var.n = model.axes[var.axis].n
            if var.kind == "scalar" and var.values is not None and var.values.shape[0] < var.n:
                fill = np.nan if np.dtype(var.dtype).kind in "fc" else 0
                pad = np.full((var.n - var.values.shape[0], *var.shape), fill, dtype=var.dtype)
                var.values = np.concatenate([var.values, pad])
            if var.kind == "field" and name in self._written:
                # A static field written in this session replaces the earlier one.
                old = self._old_maps.get(name, []) if var.axis is not None else []
                var.maps = old + self._writer.mappings(name)
        write_main(self.path, model, durable=durable)
        if self._stale:  # mode "w": the replaced output's data files go once the new main file is in place
            remove_segments(self.parts, self._stale)
            self._stale = []
        if self.xdmf:
            from hpcml.io.xdmf import write_xdmf_for_model

            write_xdmf_for_model(self.xmf_path, self.path.name, model)

    def flush(self, force: bool = False) -> None:
        """Make everything written so far readable (collective; nothing to do if nothing changed).

        The main file is replaced if ``flush_seconds`` have passed since it last
        was, or with ``force``.
        """
        self._live()
        if self._dirty:
            self._sync(force)

    def close(self) -> None:
        """Flush, close the data files (fsync-ed), consolidate if asked, release the path (collective)."""
        if self._closed:
            return
        try:
            self._closed = True
            self._writer.close()  # flushed, fsync-ed and closed on every rank first
            root_call(self.comm, lambda: self._write_main(durable=True))
            if self.consolidate:
                from hpcml.io.consolidate import consolidate

                consolidate(self.path, remove_parts=True, comm=self.comm)
        finally:
            self._closed = True
            self._lock.release()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
            return
        # An exception may have hit only this rank: release what needs no collective call and
        # let the runtime abort the job (a collective close could hang).  The main file on disk
        # is the last complete one.
        self._closed = True
        self._writer.abandon()
        self._lock.release()

    def __repr__(self) -> str:
        return f"Output({str(self.path)!r}, driver={self.driver!r}, ranks={self.size}, vars={list(self.model.vars)})"
