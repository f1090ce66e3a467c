"""Checkpoint and restart on any rank count.

``save(path, state, step)`` writes ``path/ckpt-SSSSSSSSSS.h5``; ``load(path, decomp)``
restores the newest good one.  ``state`` maps names to :class:`DistArray` fields,
NumPy arrays (replicated, e.g. optimiser moments or an RNG state), numbers,
strings, ``None`` and nested dicts of those; nothing is pickled.

Safety
    Written to ``path/.ckpt-SSSSSSSSSS.h5.tmp``, flushed, ``fsync``-ed, then renamed
    (``os.replace`` is atomic) and the directory fsync-ed: a crash at any point
    leaves the previous checkpoint untouched.  The newest ``keep`` are kept.
Checksums
    Every dataset carries a ``checksum`` attribute: Adler-32's two sums over the
    bytes of the *global* array with global byte positions, modulo ``2**31-1``
    (see :func:`hpcml.io._common.checksum_partial`).  Each rank adds the terms of
    the bytes it holds, so the value is the same for any decomposition; a
    restart on another rank count verifies exactly the bytes it loaded, with no
    extra read.  Any changed byte is detected.
Any decomposition
    A field is stored as its global array padded by the halo width (the outer
    ghost frame holds physical-boundary values, e.g. Dirichlet data kept in the
    ghosts).  Loading, each rank reads its interior block plus, on the global
    boundary, the frame, then exchanges halos.
Errors
    Rank 0 opens and checks each candidate before anyone reads, and read or
    checksum failures on any rank are agreed on collectively, so every rank
    raises (or falls back) together: a truncated or corrupt file is reported
    by name and ``load`` moves on to the previous checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from mpi4py import MPI

from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray, check_dtype
from hpcml.io._common import (
    CHECKSUM_ALGO,
    agree,
    allreduce_checksum,
    as_str,
    checksum,
    checksum_partial,
    fsync_dir,
    fsync_file,
    h5py_has_mpi,
    open_h5,
    provenance,
    read_box,
    root_call,
    write_box,
)
from hpcml.io.errors import CheckpointError, CheckpointMismatchError
from hpcml.io.progress import Progress
from hpcml.runtime import comm_or_world

__all__ = ["FORMAT", "Restored", "list_checkpoints", "load", "save"]

log = logging.getLogger("hpcml.io")

FORMAT = "hpcml-checkpoint-1"
_NAME = re.compile(r"^ckpt-(\d+)\.h5$")
_TMP = re.compile(r"^\.ckpt-(\d+)\.h5\.tmp$")
_STATE = "state"


class Restored(dict):
    """The state loaded by :func:`load`: a dict, plus where it came from.

    Attributes
    ----------
    step, time
        Step and time given to :func:`save`.
    path
        The checkpoint file that was loaded.
    skipped
        ``(file, reason)`` for every newer checkpoint that failed and was skipped.
    attrs
        The file's root attributes (config text, versions, decomposition, ...).
    """

    step: int
    time: float | None
    path: Path
    skipped: list[tuple[str, str]]
    attrs: dict[str, Any]


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint of ``step``."""
    return f"ckpt-{int(step):010d}.h5"


def list_checkpoints(path: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in directory ``path``, newest (highest step) first."""
    p = Path(path)
    if not p.is_dir():
        return []
    found = [(int(m.group(1)), q) for q in p.iterdir() if (m := _NAME.match(q.name)) and q.is_file()]
    return [q for _, q in sorted(found, reverse=True)]


# -- state flattening -------------------------------------------------------------------------


def _leaves(state: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in state.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise CheckpointError(f"state keys must be non-empty strings without '/', got {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, name + "/")
        else:
            yield name, value


def _kind(name: str, value: Any) -> tuple[str, tuple[Any, ...]]:
    """Classify a leaf and give the signature every rank must agree on."""
    if isinstance(value, DistArray):
        return "distarray", (value.shape, value.dtype.str, value.decomp.halo, value.decomp.periodic)
    if value is None:
        return "none", ()
    if isinstance(value, Mapping):  # only empty ones reach here: kept as an empty group
        return "dict", ()
    if isinstance(value, str):
        return "str", ()
    if isinstance(value, (bool, int, float, complex, np.generic)):
        return "scalar", (type(value).__name__,)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":
            raise CheckpointError(f"state[{name!r}]: array dtype {value.dtype} cannot be checkpointed")
        return "array", (value.shape, value.dtype.str)
    raise CheckpointError(
        f"state[{name!r}]: cannot checkpoint a {type(value).__name__} (use DistArray, numpy.ndarray, "
        "int/float/bool/complex, str, None or a dict of these; nothing is pickled)"
    )


def _frame_box(decomp: CartDecomp, width: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Part of the ``width``-padded global array this rank stores or loads.

    Returns ``(start in the padded array, count, start in the ghosted local block)``:
    the interior block, extended by the frame on sides that touch the global
    boundary.  These boxes tile the padded array exactly once.
    """
    gstart, count, lstart = [], [], []
    for d in range(decomp.ndim):
        lo = width[d] if decomp.coords[d] == 0 else 0
        hi = width[d] if decomp.coords[d] == decomp.dims[d] - 1 else 0
        gstart.append(decomp.start[d] + width[d] - lo)
        count.append(decomp.local_shape[d] + lo + hi)
        lstart.append(decomp.halo[d] - lo)
    return tuple(gstart), tuple(count), tuple(lstart)


def _box(start: tuple[int, ...], count: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(s, s + c) for s, c in zip(start, count))


def _host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()


# -- save ------------------------------------------------------------------------------------


def save(
    path: str | os.PathLike[str],
    state: Mapping[str, Any],
    step: int,
    *,
    time: float | None = None,
    comm: MPI.Comm | None = None,
    keep: int = 3,
    config: Any = None,
    solution: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> Path:
    """Write a checkpoint of ``state`` at ``step`` into directory ``path`` (collective).

    Parameters
    ----------
    path
        Checkpoint directory (created if needed); the file is ``ckpt-<step>.h5``.
    state
        Mapping of names to DistArrays, arrays, scalars, strings, ``None`` or
        nested mappings; every rank passes the same structure.  Arrays and
        scalars are taken from rank 0.
    step, time
        Stored with the checkpoint and returned by :func:`load`.
    comm
        Communicator of the ranks holding the DistArrays (``MPI.COMM_WORLD``).
    keep
        How many checkpoints to keep (older ones are deleted); ``0`` keeps all.
    config
        The run configuration (TOML text or mapping), stored as text.
    solution
        The configuration values that determine the solution (``{dotted key:
        value}``, JSON-able), stored as the ``solution`` attribute; ``load(...,
        expect=...)`` refuses a checkpoint whose record differs.

    Returns
    -------
    Path
        The checkpoint file.
    """
    comm = comm_or_world(comm)
    rank = comm.Get_rank()
    leaves = list(_leaves(state))
    error = None
    try:
        kinds = [(name, *_kind(name, value)) for name, value in leaves]
        for name, value in leaves:
            if isinstance(value, DistArray) and value.decomp.size != comm.Get_size():
                raise CheckpointError(
                    f"state[{name!r}] is decomposed over {value.decomp.size} ranks, comm has {comm.Get_size()}"
                )
    except CheckpointError as exc:
        error, kinds = str(exc), []
    errors = comm.allgather(error)
    if any(errors):
        r = next(i for i, e in enumerate(errors) if e)
        raise CheckpointError(f"checkpoint {path}: {errors[r]}" + (f" (rank {r})" if comm.Get_size() > 1 else ""))
    every = comm.allgather(kinds)
    if any(k != every[0] for k in every):
        r = next(i for i, k in enumerate(every) if k != every[0])
        raise CheckpointError(f"checkpoint {path}: the state differs between rank 0 and rank {r}")
    # Replicated values are rank 0's on every rank, so metadata written collectively
    # (checksum attributes) is identical everywhere.
    small = comm.bcast({n: v for n, v in leaves if not isinstance(v, DistArray)} if rank == 0 else None, root=0)
    leaves = [(n, v if isinstance(v, DistArray) else small[n]) for n, v in leaves]
    directory = Path(path)
    final = directory / checkpoint_name(step)
    tmp = directory / f".{checkpoint_name(step)}.tmp"
    prov = root_call(comm, lambda: _prepare_dir(directory, tmp, comm, config))
    if solution is not None:
        prov["solution"] = json.dumps(dict(solution), sort_keys=True)
    mpio = h5py_has_mpi()
    total = sum(v.data.nbytes for _, v in leaves if isinstance(v, DistArray))
    with Progress(total * comm.Get_size(), f"checkpoint {final.name} (approx.)", comm=comm, enabled=progress) as bar:
        if mpio:
            with open_h5(tmp, "w", comm) as f:
                _write_all(f, leaves, comm, prov, step, time, bar)
                f.flush()
        else:
            _write_serial(tmp, leaves, comm, prov, step, time, bar)
    return root_call(comm, lambda: _commit(tmp, final, keep))


def _prepare_dir(directory: Path, tmp: Path, comm: MPI.Comm, config: Any) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    for q in directory.iterdir():  # leftovers of writers killed before their rename
        if _TMP.match(q.name):
            q.unlink(missing_ok=True)
    return provenance(comm, config)


def _root_attrs(f: h5py.File, prov: dict[str, Any], step: int, time: float | None) -> None:
    for k, v in prov.items():
        f.attrs[k] = v
    f.attrs["format"] = FORMAT
    f.attrs["step"] = int(step)
    f.attrs["time"] = np.nan if time is None else float(time)
    f.attrs["checksum_algo"] = CHECKSUM_ALGO


def _leaf_checksum(value: Any) -> str:
    if value is None:
        return checksum(np.zeros(0, np.uint8))
    if isinstance(value, str):
        return checksum(np.frombuffer(value.encode(), dtype=np.uint8))
    return checksum(np.asarray(value))


def _create_leaf(f: h5py.File, name: str, value: Any, rank: int, collective: bool) -> h5py.Dataset | None:
    """Create a leaf's dataset with its attributes; write small values (rank 0 data)."""
    key = f"{_STATE}/{name}"
    if isinstance(value, DistArray):
        d = value.decomp
        padded = tuple(n + 2 * h for n, h in zip(d.shape, d.halo))
        kw = {"fill_time": "never"} if collective else {}
        dset = f.create_dataset(key, shape=padded, dtype=value.dtype, **kw)
        dset.attrs["kind"] = "distarray"
        dset.attrs["shape"] = list(d.shape)
        dset.attrs["halo"] = list(d.halo)
        dset.attrs["periodic"] = [int(p) for p in d.periodic]
        dset.attrs["dims"] = list(d.dims)
        return dset
    if isinstance(value, Mapping):
        f.require_group(key).attrs["kind"] = "dict"
        return None
    if value is None:
        dset = f.create_dataset(key, data=np.zeros((), np.int8))
        kind = "none"
    elif isinstance(value, str):
        # UTF-8 bytes, not an HDF5 variable-length string: writing those allocates
        # heap objects, which parallel HDF5 only allows collectively.
        raw = np.frombuffer(value.encode(), dtype=np.uint8)
        dset = f.create_dataset(key, shape=raw.shape, dtype=np.uint8)
        if rank == 0 and raw.size:
            dset[...] = raw
        kind = "str"
    else:
        arr = np.asarray(value)
        dset = f.create_dataset(key, shape=arr.shape, dtype=arr.dtype)
        if rank == 0 and arr.size:
            dset[...] = arr
        kind = "array" if isinstance(value, np.ndarray) else "scalar"
        dset.attrs["pytype"] = type(value).__name__ if not isinstance(value, np.generic) else "numpy"
    dset.attrs["kind"] = kind
    dset.attrs["checksum"] = _leaf_checksum(value)
    return dset


def _write_all(
    f: h5py.File,
    leaves: list[tuple[str, Any]],
    comm: MPI.Comm,
    prov: dict[str, Any],
    step: int,
    time: float | None,
    bar: Progress,
) -> None:
    """Collective (MPI-IO) checkpoint write: metadata by all, each rank its box."""
    _root_attrs(f, prov, step, time)
    f.require_group(_STATE)
    rank = comm.Get_rank()
    for name, value in leaves:
        dset = _create_leaf(f, name, value, rank, collective=True)
        if isinstance(value, DistArray):
            gstart, count, lstart = _frame_box(value.decomp, value.decomp.halo)
            box = _box(lstart, count)
            part = checksum_partial(_host(value.data)[box], gstart, dset.shape)
            write_box(dset, gstart, value.data, box, collective=True)
            dset.attrs["checksum"] = allreduce_checksum(comm, part)
            bar.update(value.data.nbytes * comm.Get_size())


def _write_serial(
    tmp: Path,
    leaves: list[tuple[str, Any]],
    comm: MPI.Comm,
    prov: dict[str, Any],
    step: int,
    time: float | None,
    bar: Progress,
) -> None:
    """Checkpoint write without parallel HDF5: rank 0 writes, blocks arrive one at a time."""
    rank, size = comm.Get_rank(), comm.Get_size()
    f = h5py.File(tmp, "w") if rank == 0 else None
    failed = None
    try:
        if f is not None:
            _root_attrs(f, prov, step, time)
            f.require_group(_STATE)
        for name, value in leaves:
            dset = _create_leaf(f, name, value, rank, collective=False) if f is not None else None
            if not isinstance(value, DistArray):
                continue
            gstart, count, lstart = _frame_box(value.decomp, value.decomp.halo)
            local = np.ascontiguousarray(_host(value.data[_box(lstart, count)]))
            part = checksum_partial(local, gstart, tuple(n + 2 * h for n, h in zip(value.shape, value.decomp.halo)))
            boxes = comm.gather((gstart, count), root=0)
            crc = allreduce_checksum(comm, part)
            if rank != 0:
                comm.Send(local, dest=0, tag=91)
                continue
            assert dset is not None and boxes is not None
            zero = (0,) * local.ndim
            write_box(dset, gstart, local, _box(zero, count))
            for r in range(1, size):
                g, c = boxes[r]
                block = np.empty(c, dtype=value.dtype)
                comm.Recv(block, source=r, tag=91)
                write_box(dset, g, block, _box(zero, c))
                bar.update(block.nbytes)
            dset.attrs["checksum"] = crc
    except Exception as exc:  # reported collectively below, after the file is closed
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        if f is not None:
            f.close()
    msg = comm.bcast(failed, root=0)
    if msg:
        raise CheckpointError(f"writing checkpoint {tmp} failed: {msg}", str(tmp))


def _commit(tmp: Path, final: Path, keep: int) -> Path:
    """Rank 0: make the temporary file durable, rename it into place, prune old ones."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if keep > 0:
        for old in list_checkpoints(final.parent)[keep:]:
            old.unlink(missing_ok=True)
    log.info("hpcml.io: checkpoint %s written", final)
    return final


# -- load ------------------------------------------------------------------------------------


def compare_solution(file: Path, recorded: Any, expect: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointMismatchError` naming every key whose recorded value differs from ``expect``."""
    want = json.loads(json.dumps(dict(expect), sort_keys=True))  # same normalisation as the stored record
    if not isinstance(recorded, dict):
        raise CheckpointMismatchError(
            f"checkpoint {file} records no solution keys (written by an older hpcml or by hand), so it cannot "
            f"be checked against this run ({', '.join(sorted(want))}); start fresh with run.restart = false",
            str(file),
        )
    diffs = []
    for key in sorted(want):
        if key not in recorded:
            diffs.append(f"{key} = (not recorded) there, {json.dumps(want[key])} now")
        elif recorded[key] != want[key]:
            diffs.append(f"{key} = {json.dumps(recorded[key])} there, {json.dumps(want[key])} now")
    if diffs:
        raise CheckpointMismatchError(
            f"checkpoint {file} was written for another problem: {'; '.join(diffs)}. Restore those values to "
            "resume it, or start fresh (run.restart = false) or in another checkpoint directory",
            str(file),
        )


def _describe(file: Path, expect: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Rank 0: open and check one checkpoint; what every rank needs to read it."""
    try:
        f = h5py.File(file, "r")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {file}: no such file", str(file)) from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {file} is truncated or not an HDF5 file ({exc})", str(file)) from None
    with f:
        try:
            if as_str(f.attrs.get("format", "")) != FORMAT:
                raise CheckpointError(
                    f"checkpoint {file}: not an hpcml checkpoint (format attribute missing)", str(file)
                )
            if expect is not None:
                raw = f.attrs.get("solution")
                compare_solution(file, json.loads(as_str(raw)) if raw is not None else None, expect)
            leaves: list[dict[str, Any]] = []

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group) and as_str(obj.attrs.get("kind", "")) == "dict":
                    leaves.append({"name": name, "kind": "dict", "checksum": "", "dtype": "", "pytype": ""})
                if isinstance(obj, h5py.Dataset):
                    a = obj.attrs
                    leaf = {
                        "name": name,
                        "kind": as_str(a["kind"]),
                        "checksum": as_str(a["checksum"]),
                        "dtype": obj.dtype.str,
                        "fshape": list(obj.shape),
                        "pytype": as_str(a.get("pytype", "")),
                    }
                    if leaf["kind"] == "distarray":
                        leaf |= {
                            "shape": [int(x) for x in a["shape"]],
                            "halo": [int(x) for x in a["halo"]],
                            "periodic": [bool(x) for x in a["periodic"]],
                        }
                    leaves.append(leaf)

            if _STATE in f:
                f[_STATE].visititems(visit)
            attrs = {
                k: (v.item() if isinstance(v, np.generic) else as_str(v) if isinstance(v, bytes) else v)
                for k, v in f.attrs.items()
            }
            t = attrs.get("time")
            return {
                "leaves": leaves,
                "step": int(attrs["step"]),
                "time": None if t is None or (isinstance(t, float) and np.isnan(t)) else float(t),
                "attrs": attrs,
            }
        except CheckpointError:
            raise
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {file} is damaged: {exc}", str(file)) from None


def _decomp_for(
    leaf: dict[str, Any], decomp: CartDecomp | Mapping[str, CartDecomp], cache: dict[Any, CartDecomp]
) -> CartDecomp:
    shape = tuple(leaf["shape"])
    if isinstance(decomp, Mapping):
        if leaf["name"] in decomp:
            return decomp[leaf["name"]]
        base = next(iter(decomp.values()))
    else:
        base = decomp
        if tuple(base.shape) == shape:
            return base
    key = (shape, tuple(leaf["periodic"]), tuple(leaf["halo"]))
    if key not in cache:  # same rank count, new grid for a field of another shape
        cache[key] = CartDecomp(shape, base.comm, periodic=key[1], halo=key[2])
    return cache[key]


def _read_distarray(f: h5py.File, leaf: dict[str, Any], d: CartDecomp) -> tuple[DistArray, tuple[int, int]]:
    """Read this rank's box (interior + boundary frame) and its checksum terms."""
    out = DistArray.zeros(d, check_dtype(leaf["dtype"]), np)
    saved = tuple(leaf["halo"])
    gstart, count, _ = _frame_box(d, saved)
    dset = f[f"{_STATE}/{leaf['name']}"]
    if all(w <= h for w, h in zip(saved, d.halo)):
        _, _, lstart = _frame_box(d, saved)
        box = _box(lstart, count)
        read_box(dset, gstart, out.data, box)
        part = checksum_partial(out.data[box], gstart, dset.shape)
    else:  # saved frame wider than our ghosts: read it whole (for the checksum), keep what fits
        tmp = np.empty(count, dtype=out.dtype)
        read_box(dset, gstart, tmp, _box((0,) * d.ndim, count))
        part = checksum_partial(tmp, gstart, dset.shape)
        src, dst = [], []
        for k in range(d.ndim):
            lo = saved[k] if d.coords[k] == 0 else 0
            hi = saved[k] if d.coords[k] == d.dims[k] - 1 else 0
            lo2, hi2 = min(lo, d.halo[k]), min(hi, d.halo[k])
            src.append(slice(lo - lo2, count[k] - (hi - hi2)))
            dst.append(slice(d.halo[k] - lo2, d.halo[k] + d.local_shape[k] + hi2))
        out.data[tuple(dst)] = tmp[tuple(src)]
    return out, part


def _restore_small(f: h5py.File, leaf: dict[str, Any]) -> Any:
    kind = leaf["kind"]
    if kind == "dict":
        return {}, None
    dset = f[f"{_STATE}/{leaf['name']}"]
    if kind == "none":
        return None, _leaf_checksum(None)
    if kind == "str":
        value = dset[...].tobytes().decode()
        return value, _leaf_checksum(value)
    arr = dset[()]
    got = checksum(np.asarray(arr))
    if kind == "array":
        return np.asarray(arr), got
    py = {"int": int, "float": float, "bool": bool, "complex": complex}.get(leaf["pytype"])
    return (py(arr) if py else arr), got


def _try_load(
    file: Path,
    desc: dict[str, Any],
    decomp: CartDecomp | Mapping[str, CartDecomp],
    comm: MPI.Comm,
    verify: bool,
    xp: Any,
) -> tuple[dict[str, Any] | None, str | None]:
    """Collective: read every leaf; ``(state, None)`` or ``(None, reason)`` on every rank."""
    cache: dict[Any, CartDecomp] = {}
    decomps = {}
    for leaf in desc["leaves"]:  # CartDecomp is collective: build them all before any read
        if leaf["kind"] == "distarray":
            decomps[leaf["name"]] = _decomp_for(leaf, decomp, cache)
    values: dict[str, Any] = {}
    parts: dict[str, tuple[int, int]] = {}
    bad: list[str] = []
    local_error = None
    # Rank 0 reports its own share: the job reads about size times that.
    total = sum(
        int(np.prod(decomps[leaf["name"]].local_shape)) * np.dtype(leaf["dtype"]).itemsize
        for leaf in desc["leaves"]
        if leaf["kind"] == "distarray"
    )
    try:
        with h5py.File(file, "r") as f, Progress(total, f"load {file.name} (rank 0)", comm=comm) as bar:
            for leaf in desc["leaves"]:
                if leaf["kind"] == "distarray":
                    values[leaf["name"]], parts[leaf["name"]] = _read_distarray(f, leaf, decomps[leaf["name"]])
                    bar.update(values[leaf["name"]].interior.nbytes)
                else:
                    values[leaf["name"]], got = _restore_small(f, leaf)
                    if verify and got is not None and got != leaf["checksum"]:
                        bad.append(leaf["name"])
    except Exception as exc:  # any rank's read failure is agreed on below
        local_error = f"{type(exc).__name__}: {exc}"
    errors = comm.allgather(local_error)
    if any(errors):
        r = next(i for i, e in enumerate(errors) if e)
        return None, f"read failed on rank {r}: {errors[r]}"
    if verify:
        for leaf in desc["leaves"]:
            if leaf["kind"] == "distarray":
                if allreduce_checksum(comm, parts[leaf["name"]]) != leaf["checksum"]:
                    bad.append(leaf["name"])
        if not agree(comm, not bad):
            names = sorted({n for names in comm.allgather(bad) for n in names})
            return None, f"checksum mismatch in {', '.join(names)}"
    for name, v in values.items():
        if isinstance(v, DistArray):
            v.exchange_halos()
            values[name] = v._to(xp)
    return values, None


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *groups, last = name.split("/")
        for g in groups:
            node = node.setdefault(g, {})
        node[last] = value
    return out


def load(
    path: str | os.PathLike[str],
    decomp: CartDecomp | Mapping[str, CartDecomp],
    *,
    fallback: bool = True,
    verify: bool = True,
    expect: Mapping[str, Any] | None = None,
    xp: Any = np,
) -> Restored:
    """Load the newest good checkpoint onto ``decomp`` (collective over ``decomp.comm``).

    Parameters
    ----------
    path
        Checkpoint directory (newest file first) or one checkpoint file.
    decomp
        Decomposition for the fields: any rank count and process grid.  Fields of
        another global shape get a decomposition of their own over the same
        communicator (with their saved halo and periodicity), unless a mapping
        ``{state name: CartDecomp}`` is given.
    fallback
        On a corrupt, truncated or unreadable file, warn (naming it and the
        reason) and try the next older checkpoint; ``False`` raises at once.
    verify
        Compare every dataset's checksum (no extra I/O; on by default).
    expect
        The solution record of this run (see ``save(solution=...)``): a
        checkpoint recording other values for any of these keys, or none, raises
        :class:`~hpcml.io.errors.CheckpointMismatchError` naming them, before any
        data is read; it is never skipped for an older one.
    xp
        Array module of the restored fields.

    Returns
    -------
    Restored
        The state as nested dicts, with ``.step``, ``.time``, ``.path``,
        ``.skipped`` and ``.attrs``.

    Raises
    ------
    CheckpointError
        On every rank, naming the file(s) and the reasons, when none loads.
    CheckpointMismatchError
        On every rank, when ``expect`` differs from the newest readable checkpoint's record.
    """
    comm = (next(iter(decomp.values())) if isinstance(decomp, Mapping) else decomp).comm
    target = Path(path)

    def candidates() -> list[str]:
        if target.is_dir():
            return [str(p) for p in list_checkpoints(target)]
        if target.exists() or _NAME.match(target.name):
            older = [p for p in list_checkpoints(target.parent) if _step_of(p) < _step_of(target)]
            return [str(target)] + ([str(p) for p in older] if fallback else [])
        raise CheckpointError(f"checkpoint {target}: no such file or directory", str(target))

    files = root_call(comm, candidates)
    if not files:
        raise CheckpointError(f"no checkpoint found in {target}", str(target))
    skipped: list[tuple[str, str]] = []
    for name in files:
        file = Path(name)
        try:
            desc = root_call(comm, lambda file=file: _describe(file, expect))
            state, reason = _try_load(file, desc, decomp, comm, verify, xp)
        except CheckpointMismatchError:
            raise
        except CheckpointError as exc:
            state, reason = None, str(exc)
        if state is not None:
            out = Restored(_nest(state))
            out.step, out.time, out.path = desc["step"], desc["time"], file
            out.skipped, out.attrs = skipped, desc["attrs"]
            if skipped and comm.Get_rank() == 0:
                log.warning("hpcml.io: restarted from %s after skipping %s", file, [s[0] for s in skipped])
            return out
        reason = reason if str(file) in reason else f"checkpoint {file}: {reason}"
        skipped.append((str(file), reason))
        if not fallback:
            raise CheckpointError(reason, str(file))
        if comm.Get_rank() == 0:
            warnings.warn(f"{reason}; trying the previous checkpoint", stacklevel=2)
            log.warning("hpcml.io: %s", reason)
    listing = "; ".join(r for _, r in skipped)
    raise CheckpointError(f"no loadable checkpoint in {target}: {listing}", str(target))


def _step_of(p: Path) -> int:
    m = _NAME.match(p.name)
    return int(m.group(1)) if m else 1 << 62
