"""Dense matrices block-distributed on a 2-D process grid, and their SUMMA product.

:class:`DistMatrix` is a 2-D :class:`~hpcml.distarray.DistArray` without
ghosts: the process grid ``(pr, pc)`` splits the rows into ``pr`` blocks and
the columns into ``pc`` blocks (sizes differ by at most one; any shape that
gives every rank at least one row and one column works).

:func:`summa` computes ``C = A @ B`` with the Scalable Universal Matrix
Multiplication Algorithm (van de Geijn & Watts, 1997): the inner dimension is
walked in *panels*; for each panel the process column owning that slice of
``A`` broadcasts it along the process rows, the process row owning that slice
of ``B`` broadcasts it along the process columns, and every rank adds the
product of the two panels to its block of ``C`` with
:func:`hpcml.kernels.gemm` (BLAS).  With uneven blocks, ``A``'s column split
(over ``pc``) and ``B``'s row split (over ``pr``) differ; the panels are the
intervals between the union of both sets of cut points, so every panel has
exactly one owner on each side.  The next panel's broadcasts are posted
(``Ibcast``) before the current panel's product, so a progressing MPI can
overlap them; a process-grid dimension of size 1 broadcasts nothing (the
panel is a view of the local block).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from hpcml.decomp import CartDecomp, block_range
from hpcml.distarray import DistArray
from hpcml.kernels import gemm
from hpcml.runtime import comm_or_world

__all__ = ["DistMatrix", "summa"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class DistMatrix:
    """A dense matrix in 2-D blocks over a process grid.

    Parameters
    ----------
    array
        A 2-D ``DistArray`` without ghost layers (``halo=0``).

    Attributes
    ----------
    shape, grid, coords : tuple of int
        Global shape, process grid ``(pr, pc)`` and this rank's grid position.
    local : numpy.ndarray
        This rank's block (a view of ``array.data``).
    start : tuple of int
        Global index of the block's first entry.
    array : DistArray
        The underlying distributed array.
    """

    def __init__(self, array: DistArray) -> None:
        if not isinstance(array, DistArray) or array.decomp.ndim != 2:
            raise TypeError("DistMatrix wraps a 2-D DistArray")
        if array.decomp.halo != (0, 0):
            raise ValueError(f"DistMatrix needs a DistArray without ghosts (halo=0), got halo={array.decomp.halo}")
        if array.dtype not in _FLOATS:
            raise TypeError(f"DistMatrix holds float32 or float64, got {array.dtype}")
        self.array = array
        self.decomp = array.decomp

    # -- construction --------------------------------------------------------------------
    @staticmethod
    def _decomp(shape: Sequence[int], comm: MPI.Comm | None, grid: Sequence[int] | None) -> CartDecomp:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2:
            raise ValueError(f"a matrix shape has two entries, got {shape}")
        comm = comm_or_world(comm)
        # One grid for every matrix of a rank count, whatever its shape: SUMMA needs A, B and C on
        # the same grid, which a shape-dependent choice (CartDecomp's default) would not give.
        dims = tuple(MPI.Compute_dims(comm.Get_size(), 2)) if grid is None else grid
        return CartDecomp(shape, comm, dims=dims, halo=0)

    @classmethod
    def zeros(
        cls, shape: Sequence[int], comm: MPI.Comm | None = None, grid: Sequence[int] | None = None, dtype: Any = "f8"
    ) -> DistMatrix:
        """Zero matrix of global ``shape`` on process ``grid`` (``None``: ``MPI.Compute_dims``)."""
        return cls(DistArray.zeros(cls._decomp(shape, comm, grid), dtype))

    @classmethod
    def from_global(
        cls,
        source: Any,
        comm: MPI.Comm | None = None,
        grid: Sequence[int] | None = None,
        root: int = 0,
        dtype: Any = None,
        shape: Sequence[int] | None = None,
    ) -> DistMatrix:
        """Scatter a global 2-D array from ``root`` (others pass ``None``), or evaluate ``source(i, j)``.

        For a callable, ``shape`` is required and the function is evaluated on
        every rank on its own block's global index arrays (nothing global is
        allocated).  For an array, the root's shape and dtype are broadcast.
        """
        comm = comm_or_world(comm)
        if callable(source):
            if shape is None:
                raise ValueError("from_global with a callable needs shape=")
            decomp = cls._decomp(shape, comm, grid)
            return cls(DistArray.from_global(decomp, source, dtype=dtype if dtype is not None else "f8"))
        verdict: tuple[str | None, Any, Any] = (None, None, None)
        if comm.Get_rank() == root:
            if not isinstance(source, np.ndarray) or source.ndim != 2:
                verdict = (f"expected a 2-D numpy array on the root, got {type(source).__name__}", None, None)
            else:
                dt = np.dtype(dtype if dtype is not None else source.dtype)
                if dt.kind in "biu":
                    dt = np.dtype(np.float64)
                bad = None if dt in _FLOATS else f"matrix dtype must be float32 or float64, got {dt}"
                verdict = (bad, source.shape, dt.str)
        err, gshape, dtstr = comm.bcast(verdict, root=root)
        if err is not None:
            raise ValueError(f"DistMatrix.from_global (array on rank {root}): {err}")
        decomp = cls._decomp(gshape, comm, grid)
        g = np.ascontiguousarray(source, dtype=dtstr) if comm.Get_rank() == root else None
        return cls(DistArray.from_global(decomp, g, root=root, dtype=dtstr))

    # -- properties ----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """Global shape."""
        return self.decomp.shape  # type: ignore[return-value]

    @property
    def grid(self) -> tuple[int, int]:
        """Process grid ``(pr, pc)``."""
        return self.decomp.dims  # type: ignore[return-value]

    @property
    def coords(self) -> tuple[int, int]:
        """``(row, column)`` of the calling rank in the process grid."""
        return self.decomp.coords  # type: ignore[return-value]

    @property
    def start(self) -> tuple[int, int]:
        """Global index of this rank's first entry."""
        return self.decomp.start  # type: ignore[return-value]

    @property
    def local(self) -> np.ndarray:
        """The block owned by the calling rank (a view)."""
        return self.array.data

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return self.array.dtype

    def gather(self, root: int = 0) -> np.ndarray | None:
        """The global matrix on ``root`` (``None`` elsewhere)."""
        return self.array.gather(root)

    def allgather(self) -> np.ndarray:
        """The global matrix on every rank."""
        return self.array.allgather()

    def free(self) -> None:
        """Release the process grid (collective)."""
        self.decomp.free()

    def __repr__(self) -> str:
        return f"DistMatrix(shape={self.shape}, grid={self.grid}, coords={self.coords}, local={self.local.shape})"


def _panels(k: int, pr: int, pc: int, width: int | None) -> list[tuple[int, int, int, int]]:
    """``(k0, k1, a_col_owner, b_row_owner)`` covering ``0..k``, each inside one block of both splits."""
    cuts = {k}
    cuts.update(block_range(k, pc, j)[0] for j in range(pc))
    cuts.update(block_range(k, pr, i)[0] for i in range(pr))
    edges = sorted(cuts)
    out = []
    for lo, hi in itertools.pairwise(edges):
        step = hi - lo if width is None else width
        for k0 in range(lo, hi, step):
            k1 = min(hi, k0 + step)
            out.append((k0, k1, _block_of(k0, k, pc), _block_of(k0, k, pr)))
    return out


def _block_of(i: int, n: int, parts: int) -> int:
    base, extra = divmod(n, parts)
    cut = extra * (base + 1)
    return i // (base + 1) if i < cut else extra + (i - cut) // base


def summa(
    A: DistMatrix,  # noqa: N803 - matrix names as in every GEMM text
    B: DistMatrix,  # noqa: N803
    *,
    panel: int | None = None,
) -> DistMatrix:
    """``C = A @ B`` for matrices on the same process grid (collective); ``C`` on that grid too.

    Parameters
    ----------
    A, B
        ``(m, k)`` and ``(k, n)`` ``DistMatrix`` objects on the same process grid
        of the same communicator, same dtype.  Any shapes (primes, uneven
        blocks), as long as every rank owns at least one row and column of each.
    panel
        Largest panel width along ``k``; ``None`` uses the whole blocks (fewest,
        largest BLAS calls; the panel buffers then take about as much memory as
        the local blocks of ``A`` and ``B``, twice over for the lookahead).

    Raises
    ------
    ValueError, TypeError
        On every rank, before any communication, for mismatched inner
        dimensions, process grids, communicators or dtypes.
    """
    if not isinstance(A, DistMatrix) or not isinstance(B, DistMatrix):
        raise TypeError("summa multiplies two DistMatrix objects")
    (m, k), (k2, n) = A.shape, B.shape
    if k != k2:
        raise ValueError(f"inner dimensions differ: A is {A.shape}, B is {B.shape}")
    if A.grid != B.grid:
        raise ValueError(f"A is on process grid {A.grid}, B on {B.grid}: both must be on the same grid")
    if MPI.Comm.Compare(A.decomp.cart, B.decomp.cart) not in (MPI.IDENT, MPI.CONGRUENT):
        raise ValueError("A and B are distributed over different communicators")
    if A.dtype != B.dtype:
        raise TypeError(f"A is {A.dtype}, B is {B.dtype}: convert one first")
    if panel is not None and panel < 1:
        raise ValueError(f"panel must be >= 1 or None, got {panel}")
    pr, pc = A.grid
    myr, myc = A.coords
    dt = A.dtype
    mpitype = from_numpy_dtype(dt)
    cart = A.decomp.cart
    C = DistMatrix.zeros((m, n), cart, A.grid, dt)  # noqa: N806
    mloc, nloc = C.local.shape
    a0 = A.start[1]  # global column of A.local[:, 0]
    b0 = B.start[0]  # global row of B.local[0, :]
    row_comm = cart.Sub([False, True]) if pc > 1 else None  # my process row; rank = my column
    col_comm = cart.Sub([True, False]) if pr > 1 else None  # my process column; rank = my row
    plan = _panels(k, pr, pc, panel)
    widest = max(k1 - k0 for k0, k1, _, _ in plan)
    # two sets of receive buffers: one being multiplied, one being filled (lookahead)
    abufs = [np.empty(mloc * widest, dt) for _ in range(2)] if row_comm is not None else None
    bbufs = [np.empty(widest * nloc, dt) for _ in range(2)] if col_comm is not None else None

    def post(t: int) -> tuple[np.ndarray, np.ndarray, list[MPI.Request]]:
        k0, k1, j, i = plan[t]
        w = k1 - k0
        reqs: list[MPI.Request] = []
        if row_comm is None:
            ap = A.local[:, k0 - a0 : k1 - a0]
        else:
            ap = abufs[t % 2][: mloc * w].reshape(mloc, w)
            if myc == j:
                ap[...] = A.local[:, k0 - a0 : k1 - a0]  # a column slice is strided: pack it
            reqs.append(row_comm.Ibcast([ap, ap.size, mpitype], root=j))
        if col_comm is None:
            bp = B.local[k0 - b0 : k1 - b0, :]
        else:
            # a row slice of a C-ordered block is contiguous: the owner sends it in place
            bp = B.local[k0 - b0 : k1 - b0, :] if myr == i else bbufs[t % 2][: w * nloc].reshape(w, nloc)
            reqs.append(col_comm.Ibcast([bp, bp.size, mpitype], root=i))
        return ap, bp, reqs

    try:
        current = post(0)
        for t in range(len(plan)):
            upcoming = post(t + 1) if t + 1 < len(plan) else None
            ap, bp, reqs = current
            MPI.Request.Waitall(reqs)
            gemm(ap, bp, C.local, beta=0.0 if t == 0 else 1.0)
            if upcoming is not None:
                current = upcoming
    finally:
        for sub in (row_comm, col_comm):
            if sub is not None:
                sub.Free()
    return C
