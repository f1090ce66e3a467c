"""Serial references and random test matrices shared by the linalg tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sps


def random_sparse(m, n, density, seed, *, empty_rows=0, empty_cols=0, dense_rows=0, dtype="f8"):
    """A reproducible random CSR matrix with some empty rows/columns and some dense rows.

    Every rank calls it with the same arguments and gets the same matrix.
    """
    rng = np.random.default_rng(seed)
    a = sps.random_array((m, n), density=density, rng=rng, format="lil", dtype=np.float64)
    for i in rng.choice(m, size=min(dense_rows, m), replace=False):
        a[i, :] = rng.standard_normal(n)
    dense = a.toarray()
    dense[rng.choice(m, size=min(empty_rows, m), replace=False), :] = 0
    dense[:, rng.choice(n, size=min(empty_cols, n), replace=False)] = 0
    return sps.csr_array(dense.astype(dtype))


def random_spd(n, seed, density=0.1, shift=None):
    """A sparse, diagonally dominant SPD matrix (condition number of a few units)."""
    rng = np.random.default_rng(seed)
    b = sps.random_array((n, n), density=density, rng=rng, format="csr")
    s = (b + b.T).tocsr()
    row_sums = np.abs(s).sum(axis=1)
    shift = 1.0 if shift is None else shift
    return sps.csr_array(s + sps.diags_array(row_sums + shift))


def poisson_scipy(shape, periodic=False, spacing=1.0):
    """``-Laplacian`` (5/7-point) as a SciPy CSR matrix, natural ordering."""
    nd = len(shape)
    per = (periodic,) * nd if np.ndim(periodic) == 0 else tuple(periodic)
    hs = (spacing,) * nd if np.ndim(spacing) == 0 else tuple(spacing)
    mats = []
    for d, n in enumerate(shape):
        t = sps.lil_array((n, n))
        for i in range(n):
            t[i, i] += 2.0
            for j in (i - 1, i + 1):
                if per[d]:
                    t[i, j % n] += -1.0
                elif 0 <= j < n:
                    t[i, j] += -1.0
        mats.append(sps.csr_array(t) / hs[d] ** 2)
    total = None
    for d in range(nd):
        term = None
        for e in range(nd):
            f = mats[d] if e == d else sps.identity(shape[e], format="csr")
            term = f if term is None else sps.kron(term, f, format="csr")
        total = term if total is None else total + term
    return sps.csr_array(total)


def rel_err(a, b):
    """``max|a - b| / max(max|b|, tiny)``."""
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.abs(b).max()) if b.size else 0.0, np.finfo(float).tiny)
    return float(np.abs(a - b).max()) / scale if a.size else 0.0


def raises_everywhere(comm, exc, fn, match=None):
    """Call ``fn``; True on every rank iff it raised ``exc`` (matching ``match``) on this rank."""
    import re

    try:
        fn()
    except exc as e:
        return match is None or re.search(match, str(e)) is not None
    return False
