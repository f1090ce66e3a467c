"""Sparse matrix-vector product ``y <- alpha * A @ x + beta * y`` for CSR.

``A`` may be a ``scipy.sparse`` CSR matrix/array, a ``cupyx.scipy.sparse``
CSR matrix, a tuple ``(indptr, indices, data, shape)`` of NumPy or CuPy arrays,
or a :class:`SellMatrix` (SELL-C-sigma, built by :func:`sell_from_csr`).

The semantics are SciPy's: rows may be empty, column indices may be unsorted
and repeated (duplicates are summed), ``indptr``/``indices`` may be int32 or
int64 (independently).  As in BLAS, ``beta == 0`` means ``y`` is not read.

CPU: a Numba kernel over row blocks of equal nonzero count (balanced for skewed
row lengths; one thread runs without a parallel region).  The blocks come from a
:class:`CsrPlan` cached per matrix structure, built once with a check of
``indptr`` (``IndexError`` rather than a read outside ``indices``/``data``), so
the row loop itself is branch-free; column indices are trusted as SciPy trusts
them, and checked with ``check=True``.  GPU: cuSPARSE through CuPy (``method="auto"``), our Numba-CUDA
one-thread-per-row CSR kernel (``method="csr"``), or the SELL-C-sigma kernel
(pass a :class:`SellMatrix`), whose column-major slices make neighbouring
threads read neighbouring addresses.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import OrderedDict
from typing import Any

import numba
import numpy as np
from numba import cuda, njit, prange

from hpcml.backend import cupy_module, is_device_array, resolve_backend

from ._common import (
    CUDA_BLOCK,
    FM_REDUCE,
    as_scalar,
    check_float_dtype,
    check_method,
    check_writeable,
    cupy_axpby,
    grid_1d,
    kernel_module,
    launch,
)

__all__ = ["CsrPlan", "SellMatrix", "csr_plan", "csr_rows", "sell_from_csr", "spmv"]

# row blocks per thread: equal-nnz blocks, a few per thread so that a slow
# thread (shared core, NUMA) does not hold the others up much
_BLOCKS_PER_THREAD = 4


# ------------------------------------------------------------------ formats ---


@dataclasses.dataclass(frozen=True)
class SellMatrix:
    """A sparse matrix in SELL-C-sigma format (Kreutzer et al., 2014).

    Rows are sorted by length inside windows of ``sigma`` rows, cut into
    slices of ``C`` rows, and each slice is stored column-major and padded to
    its longest row: lane ``r`` of slice ``s`` holds its ``k``-th entry at
    ``slice_ptr[s] + k*C + r``.  ``row_len`` keeps every lane's true length, so
    padding is never multiplied (``0 * inf`` would be NaN) and duplicates stay
    separate entries, summed in CSR order.

    Attributes
    ----------
    shape : (nrows, ncols)
    C, sigma : slice height and sorting window
    slice_ptr : int64 (nslices + 1,)  start of each slice in ``col``/``val``
    perm : int64 (nslices * C,)       original row of each lane, -1 for padding
    row_len : int64 (nslices * C,)    entries of each lane
    col : int32/int64, val : float    padded column indices and values
    nnz : int                         stored entries without padding
    """

    shape: tuple[int, int]
    C: int
    sigma: int
    slice_ptr: Any
    perm: Any
    row_len: Any
    col: Any
    val: Any
    nnz: int

    @property
    def dtype(self) -> np.dtype:
        """Value dtype."""
        return np.dtype(self.val.dtype)

    @property
    def fill_ratio(self) -> float:
        """Stored slots (with padding) per nonzero; 1.0 means no padding."""
        return float(self.val.shape[0]) / max(1, self.nnz)

    def to_device(self) -> SellMatrix:
        """Copy the arrays to the current GPU with CuPy."""
        cp = cupy_module()
        if cp is None:
            raise ImportError("SellMatrix.to_device needs CuPy")
        fields = ("slice_ptr", "perm", "row_len", "col", "val")
        return dataclasses.replace(self, **{f: cp.asarray(getattr(self, f)) for f in fields})


def _host(a: Any) -> np.ndarray:
    return a.get() if is_device_array(a) else np.asarray(a)


def sell_from_csr(A: Any, C: int = 32, sigma: int | None = None) -> SellMatrix:
    """Convert a CSR matrix (any form :func:`spmv` takes) to :class:`SellMatrix`.

    Parameters
    ----------
    A : CSR matrix or ``(indptr, indices, data, shape)``
        On the host or the GPU; the conversion runs on the host and the result
        lives where ``A`` lived.
    C : int
        Slice height; 32 (a warp) for GPUs.
    sigma : int or None
        Sorting window, a multiple of ``C`` or 1 (no sorting: ELLPACK per
        slice).  Default ``8*C``.
    """
    indptr, indices, data, shape, on_device = _csr_parts(A)
    sigma = 8 * C if sigma is None else int(sigma)
    if C < 1 or sigma < 1 or (sigma != 1 and sigma % C):
        raise ValueError(f"need C >= 1 and sigma = 1 or a multiple of C, got C={C}, sigma={sigma}")
    indptr, indices, data = _host(indptr).astype(np.int64), _host(indices), _host(data)
    nrows = shape[0]
    lens = np.diff(indptr)
    nslices = -(-nrows // C)
    P = nslices * C
    perm = np.full(P, -1, dtype=np.int64)
    if sigma == 1:
        perm[:nrows] = np.arange(nrows)
    else:
        for w0 in range(0, nrows, sigma):
            w = lens[w0 : w0 + sigma]
            perm[w0 : w0 + w.shape[0]] = w0 + np.argsort(-w, kind="stable")
    row_len = np.where(perm >= 0, lens[np.maximum(perm, 0)], 0).astype(np.int64)
    width = row_len.reshape(nslices, C).max(axis=1) if nslices else np.zeros(0, np.int64)
    slice_ptr = np.zeros(nslices + 1, dtype=np.int64)
    np.cumsum(width * C, out=slice_ptr[1:])
    total = int(slice_ptr[-1])
    col = np.zeros(total, dtype=indices.dtype)
    val = np.zeros(total, dtype=data.dtype)
    # scatter every nonzero to its slot: lane p, k-th entry -> slice_ptr + k*C + r
    pos = np.repeat(np.arange(P), row_len)
    k = np.arange(pos.shape[0]) - np.repeat(np.cumsum(row_len) - row_len, row_len)
    dest = slice_ptr[pos // C] + k * C + pos % C
    src = indptr[perm[pos]] + k
    col[dest] = indices[src]
    val[dest] = data[src]
    S = SellMatrix(tuple(shape), C, sigma, slice_ptr, perm, row_len, col, val, int(row_len.sum()))
    return S.to_device() if on_device else S


def _csr_parts(A: Any) -> tuple[Any, Any, Any, tuple[int, int], bool]:
    """Return ``(indptr, indices, data, shape, on_device)`` of a CSR matrix."""
    if isinstance(A, tuple):
        if len(A) != 4:
            raise TypeError("a CSR tuple is (indptr, indices, data, shape)")
        indptr, indices, data, shape = A
    elif getattr(A, "format", None) == "csr":
        indptr, indices, data, shape = A.indptr, A.indices, A.data, A.shape
    elif hasattr(A, "format"):
        raise TypeError(f"spmv takes CSR matrices; got format {A.format!r} (call .tocsr() first)")
    else:
        raise TypeError(
            f"spmv takes a CSR matrix, a (indptr, indices, data, shape) tuple or a SellMatrix, got {type(A).__name__}"
        )
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"shape must have two entries, got {shape}")
    dev = [is_device_array(a) for a in (indptr, indices, data)]
    if any(dev) and not all(dev):
        raise TypeError("CSR arrays on different devices (host and GPU mixed)")
    for name, a in (("indptr", indptr), ("indices", indices)):
        if a.ndim != 1 or np.dtype(a.dtype) not in (np.dtype(np.int32), np.dtype(np.int64)):
            raise TypeError(f"{name} must be a 1-D int32 or int64 array, got {a.dtype} {a.shape}")
    if data.ndim != 1 or data.shape[0] != indices.shape[0]:
        raise ValueError(f"data and indices must be 1-D of one length, got {data.shape} and {indices.shape}")
    if indptr.shape[0] != shape[0] + 1:
        raise ValueError(f"indptr has length {indptr.shape[0]}, expected nrows + 1 = {shape[0] + 1}")
    return indptr, indices, data, shape, all(dev)


# ---------------------------------------------------------------- Numba CPU ---


@njit(cache=True, nogil=True)
def _csr_rows(indptr, indices, data, x, y, r0, r1, alpha, beta, zero, mode, xd):  # pragma: no cover - compiled
    # Rows r0..r1 of a trusted CSR matrix (structure validated when its plan was built).
    # Each row starts where the previous one ended (one indptr load per row), every
    # index is used as unsigned (Numba adds a negative-index wraparound select to each
    # signed access: measured 78 -> 54 ms on the 3000^2 Poisson matrix) and the inner loop has no
    # branch and no reassociation: rows of a few entries gain nothing from vector
    # remainder code.  ``mode``: 0 y = s, 1 y = alpha s, 2 y = alpha s + beta y.
    # With ``xd`` (an array, not None) the dot product sum(xd * y) is returned too.
    t = 0.0
    hi = np.int64(indptr[r0])
    for i in range(r0, r1):
        lo = hi
        hi = np.int64(indptr[i + 1])
        s = zero
        for k in range(lo, hi):
            s += data[np.uint64(k)] * x[np.uint64(indices[np.uint64(k)])]
        ui = np.uint64(i)
        if mode == 0:
            y[ui] = s
        elif mode == 1:
            y[ui] = alpha * s
        else:
            y[ui] = alpha * s + beta * y[ui]
        if xd is not None:
            t += np.float64(xd[ui]) * np.float64(y[ui])
    return t


@njit(parallel=True, cache=True)
def _csr_blocks(indptr, indices, data, x, y, bounds, alpha, beta, zero, mode, xd):  # pragma: no cover - compiled
    t = 0.0
    for c in prange(bounds.shape[0] - 1):
        t += _csr_rows(indptr, indices, data, x, y, bounds[c], bounds[c + 1], alpha, beta, zero, mode, xd)
    return t


@njit(parallel=True, cache=True)
def _count_bad_columns(indices, ncol):  # pragma: no cover - compiled
    nbad = 0
    for k in prange(indices.shape[0]):
        c = indices[k]
        if c < 0 or c >= ncol:
            nbad += 1
    return nbad


@njit(parallel=True, cache=True, fastmath=FM_REDUCE)
def _sell_cpu(C, slice_ptr, perm, row_len, col, val, x, y, alpha, beta, zero):  # pragma: no cover - compiled
    for s in prange(slice_ptr.shape[0] - 1):
        base = slice_ptr[s]
        for r in range(C):
            p = s * C + r
            row = perm[p]
            if row < 0:
                continue
            acc = zero
            for k in range(row_len[p]):
                q = base + k * C + r
                acc += val[q] * x[col[q]]
            if beta == zero:
                y[row] = alpha * acc
            else:
                y[row] = alpha * acc + beta * y[row]


# --------------------------------------------------------------- Numba-CUDA ---


@functools.cache
def _cuda_kernels() -> dict[str, Any]:

    @cuda.jit
    def csr_k(indptr, indices, data, x, y, alpha, beta):  # pragma: no cover - device code
        i = cuda.grid(1)
        if i < y.shape[0]:
            s = 0.0
            for jj in range(indptr[i], indptr[i + 1]):
                s += data[jj] * x[indices[jj]]
            if beta == 0:
                y[i] = alpha * s
            else:
                y[i] = alpha * s + beta * y[i]

    @cuda.jit
    def sell_k(C, slice_ptr, perm, row_len, col, val, x, y, alpha, beta):  # pragma: no cover - device code
        p = cuda.grid(1)
        if p < perm.shape[0]:
            row = perm[p]
            if row >= 0:
                s = p // C
                r = p - s * C
                base = slice_ptr[s] + r
                acc = 0.0
                for k in range(row_len[p]):
                    q = base + k * C
                    acc += val[q] * x[col[q]]
                if beta == 0:
                    y[row] = alpha * acc
                else:
                    y[row] = alpha * acc + beta * y[row]

    return {"csr": csr_k, "sell": sell_k}


# ------------------------------------------------------------------ public ---


@dataclasses.dataclass(frozen=True)
class CsrPlan:
    """What :func:`spmv` derives from a CSR matrix's structure once and reuses: cached per matrix.

    Attributes
    ----------
    bounds : int64 (nblocks + 1,)
        Row blocks of about equal nonzero count, a few per Numba thread (balanced
        for skewed row lengths).
    threads : int
        Numba threads the blocks were cut for (one thread: no parallel region).
    index_bytes : int
        Width of the column indices (4 for SciPy's int32, 8 for int64).
    first, last : int
        ``indptr[0]`` and ``indptr[nrows]`` when the plan was built (a cheap sign
        that the pattern changed in place).
    """

    bounds: np.ndarray
    threads: int
    index_bytes: int
    first: int
    last: int


#: plans of the matrices seen last, keyed by where their structure lives
_PLANS: OrderedDict[tuple[Any, ...], CsrPlan] = OrderedDict()
_MAX_PLANS = 16


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def csr_plan(indptr: np.ndarray, indices: np.ndarray, nrows: int, *, rebuild: bool = False) -> CsrPlan:
    """The cached :class:`CsrPlan` of a host CSR structure, built (and validated) on first use.

    The key is where ``indptr`` and ``indices`` live, their lengths and index types
    and the Numba thread count; a plan whose first or last row pointer no longer
    matches is rebuilt.  So a matrix whose *values* change keeps its plan, and one
    whose pattern changes (new arrays, or ``eliminate_zeros`` changing the nonzero
    count in place) gets a new one.  Building checks that ``indptr`` starts at a
    non-negative offset, never decreases and ends inside ``indices``, which is what
    lets the row kernel run without checks.

    Raises
    ------
    IndexError
        For a malformed ``indptr``.
    """
    threads = numba.get_num_threads()
    key = (_address(indptr), indptr.dtype.char, nrows, _address(indices), indices.dtype.char, indices.shape[0], threads)
    plan = _PLANS.get(key)
    first, last = (int(indptr[0]), int(indptr[nrows])) if nrows else (0, 0)
    if plan is not None and not rebuild and (plan.first, plan.last) == (first, last):
        _PLANS.move_to_end(key)
        return plan
    if nrows and (first < 0 or last > indices.shape[0] or bool((np.diff(indptr) < 0).any())):
        raise IndexError(
            f"malformed CSR matrix: indptr must start >= 0, never decrease and end <= {indices.shape[0]} "
            f"(the length of indices); it runs from {first} to {last}"
        )
    plan = CsrPlan(_row_blocks(indptr, nrows, threads), threads, indices.dtype.itemsize, first, last)
    _PLANS[key] = plan
    while len(_PLANS) > _MAX_PLANS:
        _PLANS.popitem(last=False)
    return plan


def _row_blocks(indptr: np.ndarray, nrows: int, threads: int) -> np.ndarray:
    """Row boundaries of blocks holding about equal numbers of nonzeros."""
    nblk = max(1, min(nrows, threads * _BLOCKS_PER_THREAD))
    start = int(indptr[0]) if nrows else 0
    nnz = (int(indptr[nrows]) - start) if nrows else 0
    # targets in indptr's own dtype: a float or wider key array would make
    # searchsorted convert all of indptr (measured 10 ms for 4 M rows)
    targets = (start + np.arange(nblk + 1, dtype=np.int64) * nnz // nblk).astype(indptr.dtype)
    bounds = np.searchsorted(indptr[: nrows + 1], targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, nrows
    return np.clip(np.maximum.accumulate(bounds), 0, nrows)


def csr_rows(
    plan: CsrPlan,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    alpha: Any = 1.0,
    beta: Any = 0.0,
    xd: np.ndarray | None = None,
) -> float:
    """``y <- alpha A x + beta y`` on the host with a plan from :func:`csr_plan`; no checks.

    The trusted path under :func:`spmv` and :class:`hpcml.linalg.DistCSR`.  With
    ``xd`` the local dot product ``sum(xd * y)`` is fused into the row loop and
    returned (0.0 otherwise).
    """
    dt = data.dtype.type
    mode = 0 if (alpha == 1 and beta == 0) else (1 if beta == 0 else 2)
    a, b = dt(alpha), dt(beta)
    nrows = plan.bounds[-1]
    if plan.threads == 1 or plan.bounds.shape[0] <= 2:
        return float(_csr_rows(indptr, indices, data, x, y, 0, nrows, a, b, dt(0), mode, xd))
    return float(_csr_blocks(indptr, indices, data, x, y, plan.bounds, a, b, dt(0), mode, xd))


def spmv(
    A: Any,
    x: Any,
    y: Any = None,
    alpha: float = 1.0,
    beta: float = 0.0,
    *,
    method: str = "auto",
    backend: str | None = None,
    check: bool = False,
) -> Any:
    """Compute ``y <- alpha * A @ x + beta * y`` for a CSR (or SELL) matrix; return ``y``.

    Parameters
    ----------
    A : scipy/cupyx CSR matrix, ``(indptr, indices, data, shape)`` or :class:`SellMatrix`
    x : array (ncols,), same dtype as the matrix values (float32/float64)
    y : array (nrows,) or None
        Allocated when ``None`` (``beta`` then ignored); not read when ``beta == 0``.
    alpha, beta : float
        Any IEEE value.
    method : {"auto", "csr", "library"}
        ``"csr"``: our Numba (CPU) / Numba-CUDA (GPU, sim) row kernel;
        ``"library"``: scipy.sparse on the CPU, cuSPARSE via CuPy on the GPU.
        ``"auto"`` is ``"csr"`` on the CPU and ``"library"`` on the GPU.
        A :class:`SellMatrix` always runs the SELL kernel.
    backend : {None, "cpu", "gpu", "sim"}
    check : bool
        Validate every column index first (one extra pass over ``indices``) and
        rebuild the matrix's plan.  Without it column indices are trusted, as
        SciPy's own product trusts them; ``indptr`` is checked on the CPU when the
        plan is built (first use of a structure), so a bad row pointer never
        reads outside ``indices``/``data``.

    Raises
    ------
    TypeError
        Unsupported matrix type/format, index or value dtypes, mixed devices.
    ValueError
        Inconsistent shapes.
    IndexError
        With ``check=True``: a column index outside ``[0, ncols)``; on the CPU:
        an ``indptr`` outside ``[0, nnz]`` or decreasing.
    """
    check_method(method, ("auto", "csr", "library"))
    sell = isinstance(A, SellMatrix)
    if sell:
        arrays = (A.slice_ptr, A.perm, A.row_len, A.col, A.val)
        shape, data = A.shape, A.val
    else:
        indptr, indices, data, shape, _ = _csr_parts(A)
        arrays = (indptr, indices, data)
    b = resolve_backend(*arrays, x, y, backend=backend)
    dt = check_float_dtype("A", data)
    if x.ndim != 1 or x.shape[0] != shape[1]:
        raise ValueError(f"x has shape {tuple(x.shape)}, A has {shape[1]} columns")
    if np.dtype(x.dtype) != dt:
        raise TypeError(f"dtype mismatch: A is {dt} but x is {np.dtype(x.dtype)}")
    xp = kernel_module(b, x)
    if y is None:
        y = xp.empty(shape[0], dtype=dt)
        beta = 0.0
    else:
        if y.ndim != 1 or y.shape[0] != shape[0]:
            raise ValueError(f"y has shape {tuple(y.shape)}, A has {shape[0]} rows")
        if np.dtype(y.dtype) != dt:
            raise TypeError(f"dtype mismatch: A is {dt} but y is {np.dtype(y.dtype)}")
        check_writeable("y", y)
    alpha, beta = as_scalar("alpha", alpha, dt), as_scalar("beta", beta, dt)
    if shape[0] == 0:
        return y
    if check:
        cols = A.col if sell else indices
        nbad = _count_bad_columns(_host(cols), shape[1]) if cols.shape[0] else 0
        if nbad:
            raise IndexError(f"{nbad} column indices outside [0, {shape[1]})")

    if sell:
        if b == "cpu":
            _sell_cpu(A.C, A.slice_ptr, A.perm, A.row_len, A.col, A.val, x, y, alpha, beta, dt.type(0))
        else:
            args = (A.C, A.slice_ptr, A.perm, A.row_len, A.col, A.val, x, y, alpha, beta)
            launch(_cuda_kernels()["sell"], grid_1d(A.perm.shape[0]), CUDA_BLOCK, b, *args)
        return y
    if method == "library" or (method == "auto" and b == "gpu"):
        if b == "sim":
            raise ValueError("method='library' has no simulator path; use method='csr'")
        if b == "gpu":
            import cupyx.scipy.sparse as cps

            M = A if not isinstance(A, tuple) else cps.csr_matrix((data, indices, indptr), shape=shape)
            return cupy_axpby(alpha, M @ x, beta, y)
        import scipy.sparse as sps

        M = A if not isinstance(A, tuple) else sps.csr_matrix((data, indices, indptr), shape=shape)
        t = M @ x
        y[...] = alpha * t if beta == 0 else alpha * t + beta * y
        return y
    if b == "cpu":
        plan = csr_plan(indptr, indices, shape[0], rebuild=check)
        csr_rows(plan, indptr, indices, data, x, y, alpha, beta)
        return y
    launch(_cuda_kernels()["csr"], grid_1d(shape[0]), CUDA_BLOCK, b, indptr, indices, data, x, y, alpha, beta)
    return y
