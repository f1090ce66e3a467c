"""Vector helpers shared by the distributed solvers: layouts, checks, reductions.

A solver works on :class:`~hpcml.distarray.DistArray` vectors that all share one
*layout* (decomposition and ghosted shape, C order), so that the fused kernels
of :mod:`hpcml.linalg._kernels` can walk the owned cells of every vector with
one list of runs.  Vectors given by the user in another layout (other halo
width, F order) are copied into the solver's layout once; vectors on a
different global shape or process grid are rejected on every rank before any
communication (those facts are the same on every rank, so every rank raises).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray
from hpcml.linalg import _kernels
from hpcml.runtime import raise_if_any

__all__ = ["Layout", "allreduce_sum", "distribute", "raise_if_any", "solve_vectors"]


def allreduce_sum(comm: MPI.Comm, *values: float) -> np.ndarray:
    """Global sums of a few float64 partials in one buffer ``Allreduce`` (no pickling)."""
    buf = np.array(values, dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    return buf


class Layout:
    """The common layout of a solver's vectors: a decomposition, a halo, C order.

    Parameters
    ----------
    decomp
        Decomposition of the vectors (its ``halo`` is the ghost width they carry).
    dtype
        Element type of the vectors.
    """

    def __init__(self, decomp: CartDecomp, dtype: Any = np.float64) -> None:
        self.decomp = decomp
        self.dtype = np.dtype(dtype)
        self.comm = decomp.cart
        self.runs = _kernels.interior_runs(decomp.ghosted_shape, decomp.halo)
        self.local_size = int(np.prod(decomp.local_shape))
        self._allocated = 0

    def zeros(self) -> DistArray:
        """A zero vector in this layout, its start staggered against the previous ones.

        Large NumPy arrays start on page boundaries, so the k-th elements of a
        dozen vectors fall into the same L1 cache set; the fused sweeps of
        pipelined CG stream 11 such vectors at once and measured 6x slower
        (157 ms against 25 ms per sweep of 2048^2) until each vector was shifted
        by a different multiple of 7 cache lines.
        """
        size = int(np.prod(self.decomp.ghosted_shape))
        lines = (7 * self._allocated) % 64  # 7 is coprime with the 64 sets of a 4 KiB stride
        self._allocated += 1
        shift = lines * 64 // self.dtype.itemsize
        buf = np.zeros(size + shift, dtype=self.dtype)
        return DistArray(self.decomp, buf[shift:].reshape(self.decomp.ghosted_shape))

    def flat(self, v: DistArray) -> np.ndarray:
        """The ghosted data of ``v`` as a flat view (``v`` must be in this layout)."""
        return v.data.reshape(-1)

    def matches(self, v: DistArray) -> bool:
        """Whether ``v`` already has exactly this layout (then it is used without a copy)."""
        return (
            v.decomp.ghosted_shape == self.decomp.ghosted_shape
            and v.decomp.halo == self.decomp.halo
            and v.dtype == self.dtype
            and v.data.flags.c_contiguous
            and v.xp is np
        )

    def check(self, v: Any, name: str) -> None:
        """Raise ``TypeError``/``ValueError`` unless ``v`` is a vector of this global layout.

        Every fact compared is global (shape, process grid, communicator size),
        so all ranks reach the same verdict without communicating.
        """
        if not isinstance(v, DistArray):
            raise TypeError(f"{name} must be a DistArray, got {type(v).__name__}")
        d, mine = v.decomp, self.decomp
        if d.shape != mine.shape:
            raise ValueError(f"{name} has global shape {d.shape}, the operator needs {mine.shape}")
        if d.dims != mine.dims or d.size != mine.size:
            raise ValueError(
                f"{name} is decomposed over process grid {d.dims} ({d.size} ranks), the operator over "
                f"{mine.dims} ({mine.size} ranks): create vectors with the operator's create_vector()"
            )
        if v.xp is not np:
            raise TypeError(f"{name} is a device array; the distributed solvers run on host (NumPy) arrays")

    def adopt(self, v: DistArray, name: str, copy: bool = False) -> DistArray:
        """``v`` itself when it has this layout (and ``copy`` is false), else a copy in this layout."""
        self.check(v, name)
        if self.matches(v) and not copy:
            return v
        out = self.zeros()
        out.interior[...] = v.interior
        return out

    def dot(self, a: DistArray, b: DistArray) -> float:
        """Local (not reduced) ``sum(a*b)`` over the owned cells."""
        return float(_kernels.dot_runs(self.runs, self.flat(a), self.flat(b)))

    def nonfinite(self, v: DistArray) -> int:
        """Local count of NaN/inf owned entries."""
        return int(_kernels.count_nonfinite_runs(self.runs, self.flat(v)))


def solve_vectors(layout: Layout, b: DistArray, x0: DistArray | None) -> tuple[DistArray, DistArray]:
    """``(b, x)`` of a solve in ``layout``: ``b`` adopted, ``x`` a fresh copy of ``x0`` (or zeros).

    Raises ``ValueError`` on every rank if ``b`` or ``x0`` holds NaN or inf on any rank.
    """
    b = layout.adopt(b, "b")
    x = layout.zeros() if x0 is None else layout.adopt(x0, "x0", copy=True)
    bad_b, bad_x = layout.nonfinite(b), (layout.nonfinite(x) if x0 is not None else 0)
    msg = None
    if bad_b:
        msg = f"b contains {bad_b} NaN/inf entries on this rank"
    elif bad_x:
        msg = f"x0 contains {bad_x} NaN/inf entries on this rank"
    raise_if_any(layout.comm, msg)
    return b, x


def distribute(decomp: CartDecomp, source: Any, root: int, dtype: Any) -> DistArray:
    """A ``DistArray`` on ``decomp``: zeros, a callable of the global index, or ``root``'s array.

    Whether an array was given is the root's decision (broadcast), since the
    other ranks pass ``None`` either way.
    """
    if callable(source):
        return DistArray.from_global(decomp, source, dtype=dtype)
    if not decomp.cart.bcast(source is not None, root=root):
        return DistArray.zeros(decomp, dtype)
    return DistArray.from_global(decomp, source, root=root, dtype=dtype)
