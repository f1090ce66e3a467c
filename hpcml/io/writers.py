"""Data-file writers: how one :class:`~hpcml.io.Output` session stores field blocks.

One class per driver, chosen by name from :data:`WRITERS`:

``mpio`` — :class:`SharedFileWriter`
    h5py built against parallel HDF5: one data file per session
    (``NAME.d/data.h5``, ``NAME.d/sKKKK/data.h5``) opened with ``driver="mpio"``;
    every snapshot is one collective hyperslab write of the global array, HDF5
    reading each rank's interior straight out of its ghosted buffer.
``vds`` — :class:`RankFilesWriter`
    The ordinary h5py wheel: each rank writes its block to its own file
    (``NAME.d/rank-RRRRR.h5``, ``NAME.d/sKKKK/rank-RRRRR.h5``); no communication.

Either way the main file maps the blocks into global virtual datasets
(:mod:`hpcml.io.mainfile`), so readers cannot tell the drivers apart.  A writer
knows, per field, the series positions it wrote (identical on every rank) and
every rank's block (gathered once), and gives rank 0 the mappings of its
session (:meth:`DataWriter.mappings`).  Data files are only ever appended to;
earlier sessions' files are never reopened.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcml.io._common import FORMAT_DATA, chunk_shape, fsync_file, h5py_has_mpi, write_box
from hpcml.io.errors import OutputError
from hpcml.io.vds import mapping

__all__ = ["DRIVERS", "WRITERS", "DataWriter", "RankFilesWriter", "SharedFileWriter", "choose_driver"]


@dataclass
class _Block:
    """What a writer records about one field of this session (the same on every rank)."""

    series: bool
    shape: tuple[int, ...]  # global
    dtype: np.dtype
    blocks: list[tuple[tuple[int, ...], tuple[int, ...]]]  # (start, shape) of every rank
    positions: list[int] = field(default_factory=list)  # series positions of the stored snapshots


class DataWriter(ABC):
    """Stores field blocks of one session in data files under ``segment_dir``.

    Parameters
    ----------
    main
        The main file (source names are relative to its directory).
    segment_dir
        Where this session's data files go (created by rank 0 beforehand).
    comm
        The session's communicator; :meth:`create`, :meth:`append`,
        :meth:`flush` and :meth:`close` are collective over it.
    collective
        Collective MPI-IO transfers (``mpio`` only).
    """

    #: Driver name (the ``writer`` root attribute of the main file).
    name = ""

    def __init__(self, main: Path, segment_dir: Path, comm: Any, collective: bool = True) -> None:
        self.main = main
        self.segment_dir = segment_dir
        self.comm = comm
        self.rank = comm.Get_rank()
        self.collective = collective
        self._collective = False  # collective MPI-IO transfers (the shared file only)
        self._file: h5py.File | None = None
        self.fields: dict[str, _Block] = {}

    def _relative(self, p: Path) -> str:
        return os.path.relpath(p, self.main.parent if str(self.main.parent) else ".")

    def create(self, name: str, array: Any, series: bool) -> None:
        """Start storing field ``name`` (collective): gather every rank's block, create its dataset."""
        d = array.decomp
        blocks = [(tuple(s), tuple(n)) for s, n in self.comm.allgather((tuple(d.start), tuple(d.local_shape)))]
        self.fields[name] = _Block(series, tuple(d.shape), np.dtype(array.dtype), blocks)
        self._create(name, array, series)

    def append(self, name: str, array: Any, position: int | None) -> None:
        """Store one snapshot of ``name`` at series ``position`` (``None``: the static field) (collective)."""
        rec = self.fields[name]
        if not rec.series:
            self._write(name, array, None)
            rec.positions = [0]
            return
        self._write(name, array, len(rec.positions))
        rec.positions.append(int(position))

    def mappings(self, name: str) -> list[dict[str, Any]]:
        """Mappings of this session's snapshots of ``name`` (runs of consecutive positions)."""
        rec = self.fields.get(name)
        if rec is None or not rec.positions:
            return []
        out = []
        if not rec.series:
            return self._maps(name, rec, None, 0, 0)
        runs = []
        j0 = 0
        for j in range(1, len(rec.positions) + 1):
            if j == len(rec.positions) or rec.positions[j] != rec.positions[j - 1] + 1:
                runs.append((j0, j))
                j0 = j
        for a, b in runs:
            out += self._maps(name, rec, rec.positions[a], a, b - a)
        return out

    @abstractmethod
    def _create(self, name: str, array: Any, series: bool) -> None: ...

    @abstractmethod
    def _maps(self, name: str, rec: _Block, pos: int | None, j0: int, k: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    def _file_start(self, decomp: Any) -> tuple[int, ...]:
        """Where this rank's block starts in its data file's dataset."""

    @abstractmethod
    def _synced_path(self) -> Path | None:
        """The data file this rank fsyncs on :meth:`close` (``None``: another rank does)."""

    def _write(self, name: str, array: Any, index: int | None) -> None:
        assert self._file is not None
        d = array.decomp
        ds = self._file[name]
        lead: tuple[int, ...] = ()
        if index is not None:
            ds.resize(index + 1, axis=0)
            lead = (index,)
        write_box(ds, self._file_start(d), array.data, d.interior, lead=lead, collective=self._collective)

    def flush(self) -> None:
        """Hand every write so far to the operating system (collective)."""
        if self._file is not None:
            self._file.flush()

    def close(self, durable: bool = True) -> None:
        """Close the data files, fsync-ed when ``durable``; every rank's is closed when this returns."""
        if self._file is not None:
            self._file.close()
            self._file = None
            path = self._synced_path()
            if durable and path is not None:
                fsync_file(path)
        # A reader (or the next main-file write) must not find a data file still open.
        self.comm.Barrier()

    @abstractmethod
    def abandon(self) -> None:
        """Close what needs no collective call (after an error on some rank)."""

    def files(self) -> list[Path]:
        """Data files this session writes (every rank's)."""
        return []


def _create_series(f: h5py.File, name: str, shape: tuple[int, ...], dtype: np.dtype, **kw: Any) -> h5py.Dataset:
    return f.create_dataset(
        name, shape=(0, *shape), maxshape=(None, *shape), chunks=chunk_shape(shape, dtype.itemsize), dtype=dtype, **kw
    )


class RankFilesWriter(DataWriter):
    """``vds``: every rank appends its blocks to its own file; no communication."""

    name = "vds"

    def rank_path(self, rank: int) -> Path:
        """Data file of ``rank``."""
        return self.segment_dir / f"rank-{rank:05d}.h5"

    def files(self) -> list[Path]:
        """Every rank's file."""
        return [self.rank_path(r) for r in range(self.comm.Get_size())]

    def _open(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.rank_path(self.rank), "w")
            self._file.attrs["format"] = FORMAT_DATA
            self._file.attrs["rank"] = self.rank
            self._file.attrs["main_file"] = self.main.name
        return self._file

    def _create(self, name: str, array: Any, series: bool) -> None:
        f = self._open()
        d = array.decomp
        local = tuple(d.local_shape)
        ds = (
            _create_series(f, name, local, np.dtype(array.dtype))
            if series
            else f.create_dataset(name, shape=local, dtype=array.dtype)
        )
        ds.attrs["start"] = list(d.start)
        ds.attrs["global_shape"] = list(d.shape)

    def _file_start(self, decomp: Any) -> tuple[int, ...]:
        return (0,) * decomp.ndim  # the file holds this rank's block only

    def _synced_path(self) -> Path | None:
        return self.rank_path(self.rank)

    def _maps(self, name: str, rec: _Block, pos: int | None, j0: int, k: int) -> list[dict[str, Any]]:
        out = []
        n = len(rec.positions)
        for r, (start, shape) in enumerate(rec.blocks):
            if 0 in shape:
                continue
            src = self._relative(self.rank_path(r))
            if pos is None:
                out.append(mapping(src, "/" + name, start, shape, shape))
            else:
                out.append(mapping(src, "/" + name, (pos, *start), (k, *shape), (n, *shape), (j0,) + (0,) * len(shape)))
        return out

    def abandon(self) -> None:
        """Close this rank's file."""
        if self._file is not None:
            self._file.close()
            self._file = None


class SharedFileWriter(DataWriter):
    """``mpio``: one shared data file per session, written collectively through MPI-IO."""

    name = "mpio"

    def __init__(self, main: Path, segment_dir: Path, comm: Any, collective: bool = True) -> None:
        super().__init__(main, segment_dir, comm, collective)
        self._collective = collective
        self.path = segment_dir / "data.h5"

    def files(self) -> list[Path]:
        """The shared file."""
        return [self.path]

    def _open(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "w", driver="mpio", comm=self.comm)
            self._file.attrs["format"] = FORMAT_DATA
            self._file.attrs["main_file"] = self.main.name
        return self._file

    def _create(self, name: str, array: Any, series: bool) -> None:
        f = self._open()
        shape, dtype = tuple(array.decomp.shape), np.dtype(array.dtype)
        # fill_time="never": parallel HDF5 allocates chunks early and would otherwise
        # write every snapshot twice (fill, then data).
        if series:
            _create_series(f, name, shape, dtype, fill_time="never")
        else:
            f.create_dataset(name, shape=shape, dtype=dtype, fill_time="never")

    def _file_start(self, decomp: Any) -> tuple[int, ...]:
        return tuple(decomp.start)  # the global array

    def _synced_path(self) -> Path | None:
        return self.path if self.rank == 0 else None

    def _maps(self, name: str, rec: _Block, pos: int | None, j0: int, k: int) -> list[dict[str, Any]]:
        src = self._relative(self.path)
        if pos is None:
            return [mapping(src, "/" + name, (0,) * len(rec.shape), rec.shape, rec.shape)]
        n = len(rec.positions)
        zeros = (0,) * len(rec.shape)
        return [mapping(src, "/" + name, (pos, *zeros), (k, *rec.shape), (n, *rec.shape), (j0, *zeros))]

    def abandon(self) -> None:
        """Nothing to do: closing the shared file is collective (the job is aborting)."""


WRITERS: dict[str, type[DataWriter]] = {"mpio": SharedFileWriter, "vds": RankFilesWriter}
DRIVERS = ("auto", *WRITERS)


def choose_driver(requested: str = "auto") -> str:
    """The driver for a session: ``"mpio"`` if h5py has MPI, else ``"vds"``.

    ``hpcml.settings.rc.io_driver`` (``HPCML_IO_DRIVER``) overrides ``"auto"``.  Asking for ``"mpio"`` without an
    MPI-enabled h5py raises :class:`~hpcml.io.errors.OutputError`.
    """
    if requested == "auto":
        from hpcml.settings import rc

        requested = rc.io_driver
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
