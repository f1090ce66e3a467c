"""Every HDF5 call of :mod:`hpcml.nn`, in one place, through :mod:`hpcml.io`.

* datasets: snapshots written with :class:`hpcml.io.Output` and read tile by
  tile with :func:`hpcml.io.read` (each spatial rank reads its hyperslab only);
* the loss history: the scalar series ``loss`` of the run's output file;
* checkpoints: :func:`hpcml.io.checkpoint.save` / ``load`` of replicated arrays
  (parameters and gathered optimizer state), which load on any rank count.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray

__all__ = ["LossWriter", "load_checkpoint", "read_tiles", "save_checkpoint", "series_length", "write_fields"]


def write_fields(output: Any, fields: Mapping[str, DistArray], step: int) -> None:
    """Append sample ``step`` of every field to an open :class:`hpcml.io.Output` (series axis ``sample``)."""
    for name, arr in fields.items():
        output.write(name, arr, step=step, axis="sample")


def open_output(path: str | os.PathLike[str], comm: MPI.Comm, config: Any = None, **kw: Any) -> Any:
    """An :class:`hpcml.io.Output` on ``comm``."""
    from hpcml.io import Output

    return Output(path, comm, config=config, **kw)


def series_length(path: str | os.PathLike[str], name: str, comm: MPI.Comm) -> int:
    """Number of snapshots of series ``name`` (rank 0 reads, then broadcasts)."""
    from hpcml.io import series

    n = None
    err = None
    if comm.Get_rank() == 0:
        try:
            n = int(series(path, name)["n"])
        except Exception as exc:  # shared with every rank below
            err = f"{type(exc).__name__}: {exc}"
    n, err = comm.bcast((n, err), root=0)
    if err is not None:
        raise ValueError(f"dataset {path}: {err}")
    return int(n)


def read_tiles(path: str | os.PathLike[str], name: str, decomp: CartDecomp, indices: Sequence[int]) -> np.ndarray:
    """Read this rank's tile of snapshots ``indices`` of field ``name``: ``(len(indices), *local_shape)``.

    Collective over ``decomp.cart``; every rank reads only its own hyperslab.
    """
    from hpcml.io import read

    out = np.empty((len(indices), *decomp.local_shape))
    for k, i in enumerate(indices):
        out[k] = read(path, name, decomp, step=None, index=int(i), exchange=False).interior
    return out


class LossWriter:
    """Buffers per-step losses and appends them as the scalar series ``loss``.

    Parameters
    ----------
    path
        The run's HDF5 output (``None``: keep nothing on disk).
    comm
        All ranks (collective writes).
    config
        Run configuration (stored in the file).
    restart_step
        When resuming, drop values written at steps ``>= restart_step``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        comm: MPI.Comm,
        config: Any = None,
        restart_step: int | None = None,
    ) -> None:
        self.path = path
        self.comm = comm
        self.pending: list[tuple[int, float]] = []
        self.out = None
        if path:
            mode = "a" if restart_step is not None else "w"
            self.out = open_output(path, comm, config, mode=mode, restart_step=restart_step, xdmf=False, flush_every=0)

    def add(self, step: int, loss: float) -> None:
        """Record the loss of ``step`` (written on the next :meth:`flush`)."""
        self.pending.append((int(step), float(loss)))

    def flush(self) -> None:
        """Write buffered values (collective)."""
        if self.out is None:
            self.pending.clear()
            return
        for step, loss in self.pending:
            self.out.write_scalar("loss", loss, step, axis="iteration", long_name="training loss (mean squared error)")
        self.pending.clear()
        self.out.flush()

    def close(self) -> None:
        """Flush and close (collective)."""
        self.flush()
        if self.out is not None:
            self.out.close()
            self.out = None


def save_checkpoint(
    path: str | os.PathLike[str],
    state: Mapping[str, Any],
    step: int,
    comm: MPI.Comm,
    config: Any = None,
    keep: int = 3,
    solution: Mapping[str, Any] | None = None,
) -> Any:
    """Write ``state`` (replicated arrays and scalars) as checkpoint ``step`` in directory ``path``."""
    from hpcml.io import checkpoint

    return checkpoint.save(path, state, step, comm=comm, config=config, keep=keep, solution=solution, progress=False)


def load_checkpoint(path: str | os.PathLike[str], comm: MPI.Comm, expect: Mapping[str, Any] | None = None) -> Any:
    """Newest good checkpoint in ``path`` (a nested dict with ``.step``); any rank count.

    ``expect``: the run's solution record; a checkpoint of another problem is refused.
    """
    from hpcml.io import checkpoint

    # The state holds replicated arrays only; a one-cell-per-rank decomposition
    # just names the communicator the load is collective over.
    d = CartDecomp((comm.Get_size(),), comm, halo=0)
    try:
        return checkpoint.load(path, d, expect=expect)
    finally:
        d.free()


def has_checkpoint(path: str | os.PathLike[str] | None, comm: MPI.Comm) -> bool:
    """Whether directory ``path`` holds a checkpoint (rank 0 looks, everyone agrees)."""
    if not path:
        return False
    from hpcml.io.checkpoint import list_checkpoints

    found = bool(list_checkpoints(path)) if comm.Get_rank() == 0 else None
    return bool(comm.bcast(found, root=0))
