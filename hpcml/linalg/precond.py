"""Preconditioners for the Krylov solvers, as objects with ``apply(r, z)``.

``M=`` of :func:`~hpcml.linalg.cg.cg`, :func:`~hpcml.linalg.krylov.gmres` and
:func:`~hpcml.linalg.krylov.bicgstab` accepts

* ``None`` or ``"none"``: no preconditioner;
* ``"jacobi"``: :class:`Jacobi`, ``z = D^-1 r`` (CG fuses it into its sweeps);
* ``"block-ilu"``: :class:`BlockILU`, ILU(0) of each rank's diagonal block
  (PETSc's default ``-pc_type bjacobi -sub_pc_type ilu``);
* a :class:`~hpcml.linalg.multigrid.Multigrid`, or any object with
  ``apply(r, z)`` writing ``z = M^-1 r`` for two vectors of the operator's
  layout (collective).

:func:`make_preconditioner` maps a name to its class through ``REGISTRY``.
Each class is built once per solve from the operator and validated on every
rank before the first iteration (a zero pivot on one rank raises on all).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import scipy.sparse as sps
from numba import njit

from hpcml.distarray import DistArray
from hpcml.linalg import _kernels
from hpcml.linalg.vector import Layout, raise_if_any

__all__ = ["REGISTRY", "BlockILU", "Jacobi", "Preconditioner", "make_preconditioner"]


class Preconditioner(ABC):
    """Base of the named preconditioners: ``apply(r, z)`` sets ``z = M^-1 r`` on the owned cells."""

    name = ""

    @abstractmethod
    def apply(self, r: DistArray, z: DistArray) -> None:
        """``z = M^-1 r`` (collective)."""


class Jacobi(Preconditioner):
    """Diagonal scaling ``z = D^-1 r``.

    Parameters
    ----------
    A
        Operator with ``diagonal()`` and ``layout``.
    layout
        The solver's vector layout.
    positive
        Require a positive diagonal (CG: the operator must be SPD); otherwise
        only a nonzero one.
    """

    name = "jacobi"

    def __init__(self, A: Any, layout: Layout, positive: bool = True) -> None:  # noqa: N803
        self.layout = layout
        d = layout.adopt(A.diagonal(), "diagonal")
        own = d.interior
        bad = np.flatnonzero(~(own > 0).ravel() if positive else (own == 0).ravel())
        msg = None
        if bad.size:
            idx = np.unravel_index(int(bad[0]), own.shape)
            where = tuple(int(s + i) for s, i in zip(layout.decomp.start, idx))
            msg = f"Jacobi preconditioner: diagonal entry {float(own[idx])!r} at global index {where} is " + (
                "not positive, so A is not symmetric positive definite" if positive else "zero"
            )
        from hpcml.linalg.cg import NotSPDError

        raise_if_any(layout.comm, msg, NotSPDError if positive else ValueError)
        inv = layout.zeros()
        inv.interior[...] = 1.0 / own
        self.dinv = layout.flat(inv)

    def apply(self, r: DistArray, z: DistArray) -> None:
        """``z = D^-1 r``."""
        _kernels.precondition_runs(self.layout.runs, self.layout.flat(r), self.layout.flat(z), self.dinv)


# -- block ILU(0) ------------------------------------------------------------------------------


def local_block(A: Any) -> sps.csr_array:  # noqa: N803
    """The operator's diagonal block on this rank (owned rows x owned columns, local C order)."""
    own = getattr(A, "local_block", None)
    if callable(own):
        return sps.csr_array(own())
    from hpcml.linalg.csr import DistCSR
    from hpcml.linalg.poisson import PoissonOperator

    if isinstance(A, DistCSR):
        ptr, idx, val, shape = A.diag
        return sps.csr_array((val, idx, ptr), shape=shape)
    if isinstance(A, PoissonOperator):
        return _poisson_block(A)
    raise TypeError(
        f"block-ilu needs a DistCSR, a PoissonOperator or an operator with local_block(); got {type(A).__name__}"
    )


def _poisson_block(op: Any) -> sps.csr_array:
    """The stencil restricted to the local block; a dimension held whole by one rank keeps its wrap."""
    shape = op.decomp.local_shape
    total = None
    for d, n in enumerate(shape):
        off = -np.ones(n - 1)
        t = sps.diags_array([off, 2.0 * np.ones(n), off], offsets=[-1, 0, 1], shape=(n, n)).tolil()
        if op.periodic[d] and op.decomp.dims[d] == 1 and n > 1:
            t[0, n - 1] += -1.0
            t[n - 1, 0] += -1.0
        t = sps.csr_array(t) * float(op.coef[d])
        term = None
        for e, m in enumerate(shape):
            f = t if e == d else sps.identity(m, format="csr")
            term = f if term is None else sps.kron(term, f, format="csr")
        total = term if total is None else total + term
    return sps.csr_array(total)


@njit(cache=True)
def _ilu0(ptr, idx, val, diag):  # pragma: no cover - compiled
    """In-place ILU(0) (IKJ order) of a CSR matrix with sorted column indices; -1 or the row of a zero pivot."""
    n = ptr.shape[0] - 1
    pos = -np.ones(n, dtype=np.int64)
    for i in range(n):
        for p in range(ptr[i], ptr[i + 1]):
            pos[idx[p]] = p
        for p in range(ptr[i], diag[i]):
            k = idx[p]
            piv = val[diag[k]]
            if piv == 0.0:
                return k
            val[p] /= piv
            lik = val[p]
            for q in range(diag[k] + 1, ptr[k + 1]):
                t = pos[idx[q]]
                if t >= 0:
                    val[t] -= lik * val[q]
        for p in range(ptr[i], ptr[i + 1]):
            pos[idx[p]] = -1
        if val[diag[i]] == 0.0:
            return i
    return -1


@njit(cache=True)
def _ilu0_solve(ptr, idx, val, diag, b, x):  # pragma: no cover - compiled
    """``x = (LU)^-1 b`` with unit lower ``L`` and upper ``U`` stored in one CSR."""
    n = ptr.shape[0] - 1
    for i in range(n):
        s = b[i]
        for p in range(ptr[i], diag[i]):
            s -= val[p] * x[idx[p]]
        x[i] = s
    for i in range(n - 1, -1, -1):
        s = x[i]
        for p in range(diag[i] + 1, ptr[i + 1]):
            s -= val[p] * x[idx[p]]
        x[i] = s / val[diag[i]]


class BlockILU(Preconditioner):
    """Block Jacobi with ILU(0) of each rank's diagonal block (no communication in ``apply``).

    The factorisation keeps the sparsity pattern of the block (plus a stored
    zero diagonal where one is missing); rows are processed in the local C
    order of the owned cells.  A zero pivot on any rank raises ``ValueError``
    on every rank.
    """

    name = "block-ilu"

    def __init__(self, A: Any, layout: Layout) -> None:  # noqa: N803
        self.layout = layout
        block = local_block(A).astype(np.float64)
        n = block.shape[0]
        # Every diagonal entry stored, a missing one as an explicit zero (so that ILU(0)
        # meets it as a zero pivot): adding a zero diagonal matrix would not store it,
        # SciPy drops the zeros of a sum; duplicates of a COO matrix are summed instead.
        c = sps.coo_array(block)
        diag_i = np.arange(n)
        block = sps.csr_array(
            sps.coo_array((np.r_[c.data, np.zeros(n)], (np.r_[c.row, diag_i], np.r_[c.col, diag_i])), shape=(n, n))
        )
        block.sum_duplicates()
        block.sort_indices()
        ptr, idx = block.indptr.astype(np.int64), block.indices.astype(np.int64)
        val = block.data.copy()
        rows = np.repeat(np.arange(n), np.diff(ptr))
        diag = np.full(n, -1, dtype=np.int64)
        on = np.flatnonzero(idx == rows)
        diag[rows[on]] = on
        bad = _ilu0(ptr, idx, val, diag) if n else -1
        msg = None
        if bad >= 0:
            where = tuple(
                int(s + i) for s, i in zip(layout.decomp.start, np.unravel_index(bad, layout.decomp.local_shape))
            )
            msg = f"block-ilu: zero pivot at global index {where} in ILU(0) of the local diagonal block"
        raise_if_any(layout.comm, msg)
        self._factors = (ptr, idx, val, diag)
        self._b = np.empty(n)
        self._x = np.empty(n)
        self._shape = layout.decomp.local_shape

    def apply(self, r: DistArray, z: DistArray) -> None:
        """``z = (L U)^-1 r`` on the owned cells."""
        self._b[...] = r.interior.reshape(-1)
        _ilu0_solve(*self._factors, self._b, self._x)
        z.interior[...] = self._x.reshape(self._shape)


REGISTRY: dict[str, Any] = {"jacobi": Jacobi, "block-ilu": BlockILU}


def make_preconditioner(M: Any, A: Any, layout: Layout, *, spd: bool = False) -> Any:  # noqa: N803
    """The preconditioner object for ``M=`` (``None`` for none); see the module docstring.

    ``spd`` asks the Jacobi preconditioner for a positive diagonal (CG).
    """
    if M is None or (isinstance(M, str) and M.lower() == "none"):
        return None
    if isinstance(M, str):
        cls = REGISTRY.get(M.lower())
        if cls is None:
            names = ", ".join(repr(k) for k in REGISTRY)
            raise ValueError(f"M must be None, 'none', {names} or an object with apply(r, z); got {M!r}")
        return cls(A, layout, positive=spd) if cls is Jacobi else cls(A, layout)
    if callable(getattr(M, "apply", None)):
        check = getattr(M, "check_layout", None)
        if callable(check):
            check(layout)
        return M
    raise TypeError(f"M must be a name ({', '.join(REGISTRY)}) or an object with apply(r, z), got {type(M).__name__}")
