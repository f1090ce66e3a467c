"""HDF5 output, checkpoints, XDMF and analysis.

* :class:`Output` — time series (and static snapshots) of distributed fields and
  scalars in one output: a small netCDF-4 compatible main file (named
  dimensions, coordinates, CF attributes; xarray opens it as is) over data
  files written collectively through MPI-IO (h5py with MPI) or one per rank
  (the ordinary h5py wheel); see :mod:`hpcml.io.output`.
* :func:`read` — one snapshot onto any decomposition, each rank reading its hyperslab.
* :mod:`hpcml.io.checkpoint` — atomic, checksummed checkpoints that load on any rank count.
* :mod:`hpcml.io.lock` — output paths locked for a job's life.
* :mod:`hpcml.io.xdmf` — ``NAME.xmf`` sidecars for ParaView/VisIt/VTK.
* :func:`consolidate` — one self-contained file from an output.
* :mod:`hpcml.io.analyze` — ``hpcml analyze FILE``: summary and plots.

See ``docs/io.md``.  The names below load their modules on first use, so the serial
``hpcml analyze`` (a submodule) runs on a login node without initialising MPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from hpcml.io._common import h5py_has_mpi
    from hpcml.io.consolidate import consolidate
    from hpcml.io.errors import CheckpointError, CheckpointMismatchError, OutputError, OutputInUseError
    from hpcml.io.lock import PathLock
    from hpcml.io.output import Output, choose_driver
    from hpcml.io.reader import read, read_scalar, series
    from hpcml.io.xdmf import write_xdmf_for

_LAZY = {
    "h5py_has_mpi": "hpcml.io._common",
    "consolidate": "hpcml.io.consolidate",
    "CheckpointError": "hpcml.io.errors",
    "CheckpointMismatchError": "hpcml.io.errors",
    "OutputError": "hpcml.io.errors",
    "OutputInUseError": "hpcml.io.errors",
    "PathLock": "hpcml.io.lock",
    "Output": "hpcml.io.output",
    "choose_driver": "hpcml.io.output",
    "read": "hpcml.io.reader",
    "read_scalar": "hpcml.io.reader",
    "series": "hpcml.io.reader",
    "write_xdmf_for": "hpcml.io.xdmf",
}

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Output",
    "OutputError",
    "OutputInUseError",
    "PathLock",
    "choose_driver",
    "consolidate",
    "h5py_has_mpi",
    "read",
    "read_scalar",
    "series",
    "write_xdmf_for",
]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcml.io' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
