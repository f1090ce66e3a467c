"""HDF5 output, checkpoints, XDMF and analysis.

* :class:`Output` — time series of distributed fields and scalars, written
  collectively through MPI-IO (h5py with MPI) or per-rank files joined by HDF5
  virtual datasets (the ordinary h5py wheel); same file layout either way.
* :func:`read` — one snapshot onto any decomposition, each rank reading its hyperslab.
* :mod:`hpcml.io.checkpoint` — atomic, checksummed checkpoints that load on any rank count.
* :mod:`hpcml.io.xdmf` — ``NAME.xmf`` sidecars for ParaView/VisIt.
* :mod:`hpcml.io.analyze` — ``hpcml analyze FILE``: summary and PNG plots.

See ``docs/io.md``.  The names below load their modules on first use, so the serial
``hpcml analyze`` (a submodule) runs on a login node without initialising MPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from hpcml.io._common import h5py_has_mpi
    from hpcml.io.errors import CheckpointError, OutputError
    from hpcml.io.output import Output, choose_driver, consolidate
    from hpcml.io.reader import read, read_scalar, series
    from hpcml.io.xdmf import write_xdmf_for

_LAZY = {
    "h5py_has_mpi": "hpcml.io._common",
    "CheckpointError": "hpcml.io.errors",
    "OutputError": "hpcml.io.errors",
    "Output": "hpcml.io.output",
    "choose_driver": "hpcml.io.output",
    "consolidate": "hpcml.io.output",
    "read": "hpcml.io.reader",
    "read_scalar": "hpcml.io.reader",
    "series": "hpcml.io.reader",
    "write_xdmf_for": "hpcml.io.xdmf",
}

__all__ = [
    "CheckpointError",
    "Output",
    "OutputError",
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
