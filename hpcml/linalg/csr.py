"""Row-block distributed CSR matrices with an overlapped ghost-column exchange.

:class:`DistCSR` follows PETSc's MPIAIJ layout: rank ``r`` owns a contiguous
block of rows (the block split of :func:`hpcml.decomp.block_range`, the same as
a 1-D :class:`~hpcml.distarray.DistArray`), and its rows are split into

* the *diagonal block* -- columns this rank also owns in the column layout,
  indexed locally, multiplied straight from the local part of ``x``; and
* the *off-diagonal block* -- columns owned by other ranks, renumbered
  ``0..nghost-1`` in ascending global order (PETSc's ``garray``), stored only
  for the rows that have such entries (compressed rows).

Setup computes the ghost plan once: which entries of ``x`` each rank needs and
from whom (one ``Alltoall`` of counts and one ``Alltoallv`` of indices), and
what it must send to whom.  :meth:`DistCSR.matvec` packs the entries others
need, starts persistent sends and receives, multiplies the diagonal block
while they travel, waits, and adds the off-diagonal block.  Nothing global is
allocated on any rank except by :meth:`DistCSR.from_scipy` on the root (which
is handed the global matrix) and :meth:`DistCSR.to_scipy` (asked for it).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sps
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from hpcml.decomp import CartDecomp, block_range
from hpcml.distarray import DistArray
from hpcml.kernels.spmv import csr_plan, csr_rows
from hpcml.linalg import _kernels
from hpcml.linalg.vector import Layout, distribute, raise_if_any
from hpcml.runtime import comm_or_world

__all__ = ["DistCSR"]

_TAG = 4242
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_INT32_MAX = np.iinfo(np.int32).max


def _index_dtype(limit: int) -> np.dtype:
    # int32 indices halve the index traffic of the SpMV (8 of 20 bytes per nonzero)
    return np.dtype(np.int32) if limit <= _INT32_MAX else np.dtype(np.int64)


def _owners(cols: np.ndarray, n: int, parts: int) -> np.ndarray:
    """Rank owning each global column under the block split of ``n`` over ``parts`` (vectorised)."""
    base, extra = divmod(n, parts)
    cut = extra * (base + 1)
    big = cols < cut
    out = np.empty(cols.shape, dtype=np.int64)
    out[big] = cols[big] // (base + 1)
    if base:
        out[~big] = extra + (cols[~big] - cut) // base
    return out


def _local_csr(rows: Any) -> tuple[sps.csr_array | None, str | None]:
    """The caller's local rows as a canonical SciPy CSR (copy), or an error message."""
    try:
        if isinstance(rows, tuple):
            if len(rows) != 4:
                return None, "local rows as a tuple must be (indptr, indices, data, shape)"
            indptr, indices, data, shape = rows
            mat = sps.csr_array((np.asarray(data), np.asarray(indices), np.asarray(indptr)), shape=tuple(shape))
        elif sps.issparse(rows):
            mat = sps.csr_array(rows)
        else:
            return None, f"local rows must be a scipy.sparse matrix or (indptr, indices, data, shape), got {type(rows)}"
    except (ValueError, TypeError) as exc:
        return None, f"invalid local CSR rows: {exc}"
    if mat.ndim != 2:
        return None, f"local rows must be 2-D, got shape {mat.shape}"
    if np.dtype(mat.dtype) not in _FLOATS:
        if mat.dtype.kind in "biu":
            mat = mat.astype(np.float64)
        else:
            return None, f"matrix values must be float32 or float64, got {mat.dtype}"
    if mat.nnz and (int(mat.indices.min()) < 0 or int(mat.indices.max()) >= mat.shape[1]):
        return None, (
            f"column indices must lie in [0, {mat.shape[1]}), got [{int(mat.indices.min())}, {int(mat.indices.max())}]"
        )
    mat = mat.copy()
    mat.sum_duplicates()  # sorted, unique column indices per row (also checks the index ranges)
    return mat, None


class DistCSR:
    """A sparse matrix distributed over ranks by blocks of rows (PETSc MPIAIJ style).

    Build one with :meth:`from_local_rows` (every rank passes its own rows:
    the scalable path) or :meth:`from_scipy` (rank ``root`` passes the whole
    SciPy matrix).  Vectors are 1-D :class:`~hpcml.distarray.DistArray` objects:
    ``y = A.matvec(x)`` takes ``x`` in the column layout and returns ``y`` in
    the row layout; :meth:`create_vector` makes either.

    Attributes
    ----------
    shape : tuple of int
        Global ``(nrows, ncols)``.
    nnz : int
        Global number of stored entries (after summing duplicates; explicit
        zeros are kept, as SciPy keeps them).
    dtype : numpy.dtype
        float32 or float64.
    row_decomp, col_decomp : CartDecomp
        1-D layouts of ``y`` (rows) and ``x`` (columns).
    comm : MPI.Comm
        Private duplicate of the communicator, used for the ghost exchange.
    stats : dict
        Accumulated ``matvecs`` and seconds spent packing and starting
        (``start_s``) and waiting for (``wait_s``) the ghost exchange.
    """

    def __init__(
        self,
        local: sps.csr_array,
        row_decomp: CartDecomp,
        col_decomp: CartDecomp,
        owns_decomps: tuple[bool, bool] = (True, True),
    ) -> None:
        # Internal: use from_local_rows / from_scipy.  All arguments are validated there.
        self.row_decomp, self.col_decomp = row_decomp, col_decomp
        self._owns = owns_decomps
        self.comm = row_decomp.cart.Dup()
        self.dtype = np.dtype(local.dtype)
        self.shape = (row_decomp.shape[0], col_decomp.shape[0])
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.rstart, self.nrows_local = row_decomp.start[0], row_decomp.local_shape[0]
        self.cstart, self.ncols_local = col_decomp.start[0], col_decomp.local_shape[0]
        self.stats: dict[str, float] = {"matvecs": 0, "start_s": 0.0, "wait_s": 0.0}
        self._layout: Layout | None = None
        self._split(local)
        self._plan_ghosts()
        self.nnz = int(self.comm.allreduce(self.nnz_local, op=MPI.SUM))

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_local_rows(
        cls,
        rows: Any,
        comm: MPI.Comm | None = None,
        *,
        col_decomp: CartDecomp | None = None,
    ) -> DistCSR:
        """Build from each rank's own block of rows (collective; nothing is gathered).

        Parameters
        ----------
        rows
            This rank's rows as a SciPy sparse matrix (any format) or an
            ``(indptr, indices, data, shape)`` tuple, shape ``(n_local_rows,
            ncols)`` with *global* column indices.  Rank ``r`` must hold rows
            ``block_range(nrows, size, r)`` (the 1-D ``DistArray`` layout):
            the first ``nrows % size`` ranks one row more than the others.
            Duplicates are summed; integer values become float64.
        comm
            Communicator (``MPI.COMM_WORLD`` by default).
        col_decomp
            Explicit column layout (a 1-D :class:`CartDecomp` of ``ncols`` cells
            on ``comm``); by default the block split of ``ncols``.

        Raises
        ------
        ValueError, TypeError
            On every rank, when any rank's rows are malformed (column index out of
            range, bad dtype), the ranks disagree on ``ncols`` or dtype, the row
            counts do not follow the block layout, or ``col_decomp`` does not fit.
        """
        comm = comm_or_world(comm)
        mat, err = _local_csr(rows)
        raise_if_any(comm, err)
        assert mat is not None
        everyone = comm.allgather((mat.shape[0], mat.shape[1], mat.dtype.str))
        nrows = sum(e[0] for e in everyone)
        ncols, dtypes = {e[1] for e in everyone}, {e[2] for e in everyone}
        if len(ncols) != 1:
            raise ValueError(f"ranks disagree on the number of columns: {[e[1] for e in everyone]}")
        if len(dtypes) != 1:
            raise TypeError(f"ranks hold different value dtypes: {[e[2] for e in everyone]}")
        expected = [block_range(nrows, comm.Get_size(), r)[1] for r in range(comm.Get_size())]
        got = [e[0] for e in everyone]
        if got != expected:
            raise ValueError(
                f"rows per rank {got} do not follow the block layout {expected} of {nrows} rows over "
                f"{comm.Get_size()} ranks (rank r holds rows block_range(nrows, size, r), as a 1-D DistArray)"
            )
        row_decomp = CartDecomp((nrows,), comm, halo=0)
        own_cols = col_decomp is None
        if col_decomp is None:
            col_decomp = CartDecomp((next(iter(ncols)),), comm, halo=0)
        else:
            _check_col_decomp(col_decomp, next(iter(ncols)), comm)
        return cls(mat, row_decomp, col_decomp, (True, own_cols))

    @classmethod
    def from_scipy(
        cls,
        matrix: Any,
        comm: MPI.Comm | None = None,
        root: int = 0,
        *,
        col_decomp: CartDecomp | None = None,
    ) -> DistCSR:
        """Scatter a SciPy sparse matrix held by rank ``root`` (collective).

        Parameters
        ----------
        matrix
            On ``root``: any ``scipy.sparse`` matrix or array (converted to CSR);
            ignored elsewhere (pass ``None``).
        comm, root
            Communicator and the rank holding the matrix.
        col_decomp
            Explicit column layout, as in :meth:`from_local_rows`.

        Raises
        ------
        ValueError, TypeError
            On every rank when the root's matrix is missing, not sparse, not
            2-D, of a non-float dtype, or has fewer rows than there are ranks.
        """
        comm = comm_or_world(comm)
        size, rank = comm.Get_size(), comm.Get_rank()
        if not 0 <= root < size:
            raise ValueError(f"root={root} is not a rank of a {size}-rank communicator")
        verdict: tuple[str | None, Any, Any] = (None, None, None)
        if rank == root:
            verdict = _validate_root_matrix(matrix, size)
        err, shape, dtstr = comm.bcast(verdict, root=root)
        if err is not None:
            raise ValueError(f"from_scipy (matrix on rank {root}): {err}")
        dt = np.dtype(dtstr)
        nrows, ncols = shape
        if rank == root:
            whole = sps.csr_array(matrix).astype(dt, copy=False)
            for r in range(size):
                start, count = block_range(nrows, size, r)
                block = whole[start : start + count]
                parts = (block.indptr.astype(np.int64), block.indices.astype(np.int64), block.data)
                if r == root:
                    mine = (*parts, (count, ncols))
                    continue
                comm.Send(np.array([parts[1].size], dtype=np.int64), r, _TAG)
                for a in parts:
                    comm.Send([a, from_numpy_dtype(a.dtype)], r, _TAG + 1)
        else:
            start, count = block_range(nrows, size, rank)
            head = np.empty(1, dtype=np.int64)
            comm.Recv(head, root, _TAG)
            parts = (np.empty(count + 1, np.int64), np.empty(int(head[0]), np.int64), np.empty(int(head[0]), dt))
            for a in parts:
                comm.Recv([a, from_numpy_dtype(a.dtype)], root, _TAG + 1)
            mine = (*parts, (count, ncols))
        return cls.from_local_rows(mine, comm, col_decomp=col_decomp)

    # -- setup ---------------------------------------------------------------------------
    def _split(self, local: sps.csr_array) -> None:
        """Split the local rows into the diagonal and the compressed off-diagonal block."""
        m, c0, c1 = self.nrows_local, self.cstart, self.cstart + self.ncols_local
        indptr = local.indptr.astype(np.int64)
        cols = local.indices.astype(np.int64)
        data = local.data
        self.nnz_local = int(cols.size)
        rowid = np.repeat(np.arange(m, dtype=np.int64), np.diff(indptr))
        inside = (cols >= c0) & (cols < c1)
        # diagonal block (row order and within-row order are kept by the boolean filters)
        d_counts = np.bincount(rowid[inside], minlength=m)
        d_ptr = np.zeros(m + 1, dtype=_index_dtype(int(d_counts.sum())))
        np.cumsum(d_counts, out=d_ptr[1:])
        self.diag = (
            d_ptr,
            (cols[inside] - c0).astype(_index_dtype(self.ncols_local)),
            np.ascontiguousarray(data[inside]),
            (m, self.ncols_local),
        )
        self._diag_is_square = self.shape[0] == self.shape[1]
        # the node kernel's plan (row blocks of equal nonzero count, indptr validated):
        # made once here, so a later change of the Numba thread count only changes the balance
        self._plan = csr_plan(self.diag[0], self.diag[1], m)
        # off-diagonal block over the ghost columns (garray), rows compressed
        outside = ~inside
        o_cols = cols[outside]
        self.garray, ghost_idx = np.unique(o_cols, return_inverse=True)
        o_rows, o_counts = np.unique(rowid[outside], return_counts=True)
        o_ptr = np.zeros(o_rows.size + 1, dtype=np.int64)
        np.cumsum(o_counts, out=o_ptr[1:])
        self.offd = (
            o_rows,
            o_ptr,
            ghost_idx.reshape(-1).astype(_index_dtype(self.garray.size)),
            np.ascontiguousarray(data[outside]),
        )

    def _plan_ghosts(self) -> None:
        """Who sends which entries of ``x`` to whom; persistent requests for the exchange."""
        comm, size = self.comm, self.size
        ncols = self.shape[1]
        owners = _owners(self.garray, ncols, size)
        need = np.bincount(owners, minlength=size).astype(np.int64)
        give = np.empty(size, dtype=np.int64)
        comm.Alltoall(need, give)
        rdispl = np.concatenate(([0], np.cumsum(need)[:-1])).astype(np.int64)
        sdispl = np.concatenate(([0], np.cumsum(give)[:-1])).astype(np.int64)
        requested = np.empty(int(give.sum()), dtype=np.int64)
        # garray is sorted, so each owner's columns are one contiguous segment
        comm.Alltoallv(
            [self.garray.astype(np.int64), (need, rdispl), MPI.INT64_T],
            [requested, (give, sdispl), MPI.INT64_T],
        )
        self._send_idx = requested - self.cstart
        bad = (self._send_idx < 0) | (self._send_idx >= self.ncols_local)
        raise_if_any(comm, "internal error: ghost request outside the local columns" if bad.any() else None)
        mpitype = from_numpy_dtype(self.dtype)
        self._ghost = np.zeros(self.garray.size, dtype=self.dtype)
        self._sendbuf = np.zeros(self._send_idx.size, dtype=self.dtype)
        reqs: list[MPI.Prequest] = []
        for q in np.flatnonzero(need):
            lo, n = int(rdispl[q]), int(need[q])
            reqs.append(comm.Recv_init([self._ghost[lo : lo + n], n, mpitype], int(q), _TAG))
        for q in np.flatnonzero(give):
            lo, n = int(sdispl[q]), int(give[q])
            reqs.append(comm.Send_init([self._sendbuf[lo : lo + n], n, mpitype], int(q), _TAG))
        self._reqs = reqs
        self.neighbors = sorted({int(q) for q in np.flatnonzero(need)} | {int(q) for q in np.flatnonzero(give)})

    # -- properties ----------------------------------------------------------------------
    #: Not known to be symmetric: cg() checks (two products) unless told otherwise.
    symmetric: bool | None = None

    @property
    def layout(self) -> Layout:
        """Layout of the row vectors (what :func:`~hpcml.linalg.cg.cg` iterates on)."""
        if self._layout is None:
            self._layout = Layout(self.row_decomp, self.dtype)
        return self._layout

    @property
    def ghost_count(self) -> int:
        """Entries of ``x`` this rank receives from other ranks per product."""
        return int(self.garray.size)

    def __repr__(self) -> str:
        return (
            f"DistCSR(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype}, rank={self.rank}/{self.size}, "
            f"rows {self.rstart}:{self.rstart + self.nrows_local}, ghosts={self.ghost_count}, "
            f"neighbors={self.neighbors})"
        )

    # -- vectors -------------------------------------------------------------------------
    def create_vector(self, global_or_none: Any = None, root: int = 0, *, layout: str = "rows") -> DistArray:
        """A 1-D ``DistArray`` laid out like the rows (``y``) or the columns (``x``) of A.

        Parameters
        ----------
        global_or_none
            ``None`` for zeros; on ``root`` a 1-D array of the global length to
            scatter (other ranks pass ``None``); or a callable of the global index
            evaluated locally on every rank.
        root
            Rank holding the global array.
        layout
            ``"rows"`` (length ``nrows``, the output of :meth:`matvec`) or
            ``"cols"`` (length ``ncols``, its input).
        """
        if layout not in ("rows", "cols"):
            raise ValueError(f"layout must be 'rows' or 'cols', got {layout!r}")
        decomp = self.row_decomp if layout == "rows" else self.col_decomp
        return distribute(decomp, global_or_none, root, self.dtype)

    def _check(self, v: Any, layout: str, name: str) -> np.ndarray:
        decomp = self.row_decomp if layout == "rows" else self.col_decomp
        if not isinstance(v, DistArray):
            raise TypeError(f"{name} must be a 1-D DistArray, got {type(v).__name__}")
        if v.decomp.shape != decomp.shape or v.decomp.size != decomp.size:
            what = "columns" if layout == "cols" else "rows"
            raise ValueError(
                f"{name} has global shape {v.decomp.shape} on {v.decomp.size} ranks; A has {decomp.shape[0]} "
                f"{what} on {decomp.size} ranks (use A.create_vector(layout={layout!r}))"
            )
        if v.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {v.dtype}, A has {self.dtype}")
        if v.xp is not np:
            raise TypeError(f"{name} is a device array; DistCSR runs on host (NumPy) arrays")
        return v.interior  # 1-D interior of a 1-D array: contiguous

    # -- products ------------------------------------------------------------------------
    def _start(self, x: np.ndarray) -> float:
        t0 = time.perf_counter()
        if self._reqs:
            _kernels.gather_into(x, self._send_idx, self._sendbuf)
            MPI.Prequest.Startall(self._reqs)
        return time.perf_counter() - t0

    def _finish(self) -> float:
        t0 = time.perf_counter()
        if self._reqs:
            MPI.Prequest.Waitall(self._reqs)
        return time.perf_counter() - t0

    def _account(self, t_start: float, t_wait: float) -> None:
        self.stats["matvecs"] += 1
        self.stats["start_s"] += t_start
        self.stats["wait_s"] += t_wait

    def matvec(self, x: DistArray, y: DistArray | None = None) -> DistArray:
        """``y = A x`` (collective).

        The ghost exchange runs while the diagonal block is multiplied.

        Parameters
        ----------
        x
            1-D ``DistArray`` in the column layout (``A.create_vector(layout="cols")``).
        y
            Output in the row layout; allocated when ``None``.  Must not share
            memory with ``x``.
        """
        xl = self._check(x, "cols", "x")
        if y is None:
            y = DistArray.zeros(self.row_decomp, self.dtype)
        yl = self._check(y, "rows", "y")
        if np.may_share_memory(xl, yl):
            raise ValueError("y must not share memory with x")
        t_start = self._start(xl)
        ptr, idx, val, _ = self.diag
        csr_rows(self._plan, ptr, idx, val, xl, yl)
        t_wait = self._finish()
        rows, ptr, idx, val = self.offd
        if rows.size:
            _kernels.csr_rows_add(rows, ptr, idx, val, self._ghost, yl, None)
        self._account(t_start, t_wait)
        return y

    def matvec_dot(self, x: DistArray, y: DistArray) -> float:
        """``y = A x`` and return the *local* part of ``x . y`` (square A; used by CG).

        The dot product is fused into the product's row loop, saving one pass
        over ``x`` and ``y``; the caller reduces it (together with whatever else
        it reduces) in one ``Allreduce``.
        """
        if not self._diag_is_square:
            raise ValueError(f"matvec_dot needs a square matrix, A is {self.shape}")
        xl = self._check(x, "cols", "x")
        yl = self._check(y, "rows", "y")
        t_start = self._start(xl)
        ptr, idx, val, _ = self.diag
        s = csr_rows(self._plan, ptr, idx, val, xl, yl, xd=xl)
        t_wait = self._finish()
        rows, optr, oidx, oval = self.offd
        if rows.size:
            s += _kernels.csr_rows_add(rows, optr, oidx, oval, self._ghost, yl, xl)
        self._account(t_start, t_wait)
        return float(s)

    # -- other queries -------------------------------------------------------------------
    def diagonal(self) -> DistArray:
        """The main diagonal as a row-layout vector (square matrices)."""
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"diagonal() needs a square matrix, A is {self.shape}")
        ptr, idx, val, _ = self.diag
        rowid = np.repeat(np.arange(self.nrows_local), np.diff(ptr.astype(np.int64)))
        on = idx == rowid
        d = DistArray.zeros(self.row_decomp, self.dtype)
        d.interior[rowid[on]] = val[on]
        return d

    def local_rows(self) -> sps.csr_array:
        """The rows owned here, with global column indices (a new SciPy CSR array)."""
        ptr, idx, val, (m, _) = self.diag
        rows, optr, oidx, oval = self.offd
        drow = np.repeat(np.arange(m), np.diff(ptr.astype(np.int64)))
        orow = np.repeat(rows, np.diff(optr))
        r = np.concatenate((drow, orow))
        c = np.concatenate((idx.astype(np.int64) + self.cstart, self.garray[oidx]))
        v = np.concatenate((val, oval))
        return sps.csr_array((v, (r, c)), shape=(m, self.shape[1]))

    def to_scipy(self, root: int = 0) -> sps.csr_array | None:
        """The global matrix as SciPy CSR on ``root`` (``None`` elsewhere); for tests and small cases."""
        parts = self.comm.gather(self.local_rows(), root=root)
        return None if parts is None else sps.csr_array(sps.vstack(parts, format="csr"))

    def free(self) -> None:
        """Release the persistent requests, the private communicator and owned decompositions (collective)."""
        for req in self._reqs:
            req.Free()
        self._reqs = []
        if self.comm != MPI.COMM_NULL:
            self.comm.Free()
        for owned, d in zip(self._owns, (self.row_decomp, self.col_decomp)):
            if owned:
                d.free()


def _check_col_decomp(col_decomp: CartDecomp, ncols: int, comm: MPI.Comm) -> None:
    if not isinstance(col_decomp, CartDecomp) or col_decomp.ndim != 1:
        raise TypeError("col_decomp must be a 1-D CartDecomp")
    if col_decomp.shape != (ncols,):
        raise ValueError(f"col_decomp has {col_decomp.shape[0]} cells, the matrix has {ncols} columns")
    if MPI.Comm.Compare(col_decomp.cart, comm) not in (MPI.IDENT, MPI.CONGRUENT):
        raise ValueError("col_decomp is not a decomposition over the matrix's communicator")


def _validate_root_matrix(matrix: Any, size: int) -> tuple[str | None, Any, Any]:
    if matrix is None:
        return "no matrix given on the root", None, None
    if not sps.issparse(matrix):
        return f"expected a scipy.sparse matrix, got {type(matrix).__name__}", None, None
    if matrix.ndim != 2:
        return f"the matrix must be 2-D, got shape {matrix.shape}", None, None
    dt = np.dtype(matrix.dtype)
    if dt.kind in "biu":
        dt = np.dtype(np.float64)
    if dt not in _FLOATS:
        return f"matrix values must be float32 or float64, got {matrix.dtype}", None, None
    if matrix.shape[0] < size or matrix.shape[1] < size:
        return (
            f"a {matrix.shape} matrix cannot be split over {size} ranks (every rank needs at least one row "
            "and one column)",
            None,
            None,
        )
    return None, tuple(int(s) for s in matrix.shape), dt.str
