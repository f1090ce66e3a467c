"""HDF5 output, checkpoints, XDMF and analysis.

* :class:`Output` — time series of distributed fields and scalars, written
  collectively through MPI-IO (h5py with MPI) or per-rank files joined by HDF5
  virtual datasets (the ordinary h5py wheel); same file layout either way.
* :func:`read` — one snapshot onto any decomposition, each rank reading its hyperslab.
* :mod:`hpcml.io.checkpoint` — atomic, checksummed checkpoints that load on any rank count.
* :mod:`hpcml.io.xdmf` — ``NAME.xmf`` sidecars for ParaView/VisIt.
* :mod:`hpcml.io.analyze` — ``hpcml analyze FILE``: summary and PNG plots.

See ``docs/io.md``.
"""

from __future__ import annotations

from hpcml.io._common import h5py_has_mpi
from hpcml.io.errors import CheckpointError, CheckpointMismatchError, OutputError, OutputInUseError
from hpcml.io.output import Output, choose_driver, consolidate
from hpcml.io.reader import read, read_scalar, series
from hpcml.io.xdmf import write_xdmf_for

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "Output",
    "OutputError",
    "OutputInUseError",
    "choose_driver",
    "consolidate",
    "h5py_has_mpi",
    "read",
    "read_scalar",
    "series",
    "write_xdmf_for",
]
