"""Hypothesis strategies and references shared by the kernel tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

DTYPES = st.sampled_from([np.float32, np.float64])


def tol(dtype) -> float:
    """Relative tolerance for sums of a few hundred terms in ``dtype``."""
    return 2e-4 if np.dtype(dtype) == np.float32 else 1e-11


@st.composite
def vectors(draw, n, dtype, count=1):
    """``count`` 1-D arrays of length ``n``, each a strided view (step 1-3, maybe reversed)."""
    out = []
    for _ in range(count):
        step = draw(st.sampled_from([1, 1, 2, 3, -1, -2]))
        seed = draw(st.integers(0, 2**31 - 1))
        base = np.random.default_rng(seed).standard_normal(n * abs(step) + 2).astype(dtype)
        v = base[1 : 1 + n * abs(step) : abs(step)]
        out.append(v[::-1] if step < 0 else v)
    return out


@st.composite
def matrices(draw, m, n, dtype):
    """An (m, n) array: C order, F order, or a strided view of a bigger one."""
    layout = draw(st.sampled_from(["C", "F", "strided", "T"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if layout == "strided":
        return rng.standard_normal((2 * m + 1, 3 * n + 1)).astype(dtype)[1::2, ::3][:m, :n]
    if layout == "T":  # a transposed view: F-contiguous without asfortranarray
        return rng.standard_normal((n, m)).astype(dtype).T
    return np.asarray(rng.standard_normal((m, n)).astype(dtype), order=layout)


@st.composite
def csr_parts(draw, max_rows=30, max_cols=30):
    """(indptr, indices, data, shape) with empty rows, unsorted and duplicate columns."""
    nrows = draw(st.integers(0, max_rows))
    ncols = draw(st.integers(1, max_cols))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    lens = rng.integers(0, 7, size=nrows) * (rng.random(nrows) > 0.2)
    indptr = np.zeros(nrows + 1, dtype=draw(st.sampled_from([np.int32, np.int64])))
    np.cumsum(lens, out=indptr[1:])
    nnz = int(indptr[-1])
    indices = rng.integers(0, ncols, size=nnz).astype(draw(st.sampled_from([np.int32, np.int64])))
    data = rng.standard_normal(nnz).astype(draw(DTYPES))
    return indptr, indices, data, (nrows, ncols)


def csr_reference(indptr, indices, data, shape, x):
    """Dense float64 product of a CSR matrix that may repeat columns (summed, as SciPy does)."""
    y = np.zeros(shape[0])
    for i in range(shape[0]):
        for jj in range(indptr[i], indptr[i + 1]):
            y[i] += float(data[jj]) * float(x[indices[jj]])
    return y


@st.composite
def ghosted(draw, ndim, dtype, max_interior):
    """A random ghosted array (interior 1..max_interior per axis), its halo and a layout."""
    halo = draw(st.integers(1, 3))
    interior = tuple(draw(st.integers(1, max_interior)) for _ in range(ndim))
    shape = tuple(s + 2 * halo for s in interior)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    layout = draw(st.sampled_from(["C", "F", "strided"]))
    if layout == "strided":
        big = rng.standard_normal(tuple(2 * s for s in shape)).astype(dtype)
        u = big[tuple(slice(None, None, 2) for _ in shape)]
    else:
        u = np.asarray(rng.standard_normal(shape).astype(dtype), order=layout)
    return u, halo
