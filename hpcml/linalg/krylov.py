"""Krylov solvers for non-symmetric systems: restarted GMRES and BiCGStab.

Both take the operators :func:`~hpcml.linalg.cg.cg` takes (a square
:class:`~hpcml.linalg.csr.DistCSR`, a :class:`~hpcml.linalg.poisson.PoissonOperator`
or any object with ``layout`` and ``matvec(x, y)``), return ``(x, SolveInfo)``
with the same fields, call ``callback(k, residual_norm, x)`` after every
iteration, and take ``M=`` as in :mod:`hpcml.linalg.precond`.  Both
precondition on the right (``A M^-1 y = b, x = M^-1 y``), so the residual
they monitor is the true, unpreconditioned ``b - A x`` -- the quantity the
stopping test ``||r|| < max(rtol ||b||, atol)`` is about -- and convergence
is declared only after ``||b - A x||`` has been recomputed and passed the
test; otherwise the iteration restarts from the true residual.

GMRES(m) keeps its Krylov basis as the rows of one ``(m+1, n_local)`` array
of owned cells, so the Gram-Schmidt projections are two BLAS ``gemv`` calls
and one ``Allreduce`` of ``j+2`` numbers (classical Gram-Schmidt with a
second pass when the norm drops below ``1/sqrt(2)`` of its value, the DGKS
criterion): two reductions per iteration, where modified Gram-Schmidt needs
``j+1``.  BiCGStab (van der Vorst 1992) needs four reductions per iteration.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import scipy.linalg as sla

from hpcml.distarray import DistArray
from hpcml.linalg import _kernels
from hpcml.linalg.cg import (
    Callback,
    SolveInfo,
    _begin,
    _exchange_seconds,
    _layout,
    _matvecs,
    _stop_reason,
    finalize_info,
)
from hpcml.linalg.precond import make_preconditioner
from hpcml.linalg.vector import Layout, allreduce_sum, solve_vectors

__all__ = ["bicgstab", "gmres"]

_DGKS = 1.0 / math.sqrt(2.0)


class _Solve:
    """The state shared by both solvers: layout, vectors, preconditioner, bookkeeping."""

    def __init__(
        self, method: str, op: Any, b: DistArray, x0: Any, precond: Any, rtol: float, atol: float, maxiter: Any
    ) -> None:
        self.A = op
        self.layout: Layout = _layout(op)
        self.b, self.x = solve_vectors(self.layout, b, x0)
        self.pre = make_preconditioner(precond, op, self.layout)
        self.rtol, self.atol = rtol, atol
        self.maxiter = 10 * math.prod(self.layout.decomp.shape) if maxiter is None else int(maxiter)
        self.info = SolveInfo(method)
        self.t0, self.ex0, self.mv0 = time.perf_counter(), _exchange_seconds(op), _matvecs(op)
        self.comm = self.layout.comm
        self._scratch = self.layout.zeros()

    def residual(self, r: DistArray) -> float:
        """``r = b - A x``; the global ``||r||``."""
        ax = self._scratch
        self.A.matvec(self.x, ax)
        _, rr = _kernels.residual_runs(
            self.layout.runs, self.layout.flat(self.b), self.layout.flat(ax), self.layout.flat(r), None
        )
        return math.sqrt(max(allreduce_sum(self.comm, rr)[0], 0.0))

    def precondition(self, r: DistArray, z: DistArray) -> DistArray:
        """``z = M^-1 r``; ``r`` itself without a preconditioner."""
        if self.pre is None:
            return r
        self.pre.apply(r, z)
        return z

    def meets(self, rnorm: float) -> str | None:
        return _stop_reason(rnorm, self.rtol * self.info.bnorm, self.atol)

    def finish(self, history: list[float], true_residual: bool) -> tuple[DistArray, SolveInfo]:
        finalize_info(
            self.A, self.info, self.layout, self.b, self.x, history, self.t0, self.ex0, self.mv0, true_residual
        )
        return self.x, self.info


def _solve_ls(h: np.ndarray, g: np.ndarray, j: int) -> np.ndarray:
    """Coefficients of the GMRES update from the rotated (upper triangular) Hessenberg block."""
    return sla.solve_triangular(h[: j + 1, : j + 1], g[: j + 1], lower=False, check_finite=False)


def gmres(
    A: Any,  # noqa: N803
    b: DistArray,
    x0: DistArray | None = None,
    rtol: float = 1e-8,
    restart: int = 30,
    maxiter: int | None = None,
    M: Any = None,  # noqa: N803
    callback: Callback | None = None,
    *,
    atol: float = 0.0,
    true_residual: bool = True,
) -> tuple[DistArray, SolveInfo]:
    """Solve ``A x = b`` by restarted, right-preconditioned GMRES(``restart``) (collective).

    Parameters
    ----------
    A, b, x0, rtol, atol, M
        As for :func:`~hpcml.linalg.cg.cg`; ``A`` need not be symmetric, and the
        preconditioner need not be either.
    restart
        Krylov basis size per cycle (SciPy's and PETSc's ``restart``; default 30).
    maxiter
        Limit on the total number of (inner) iterations; default ``10 * N``.
    callback
        ``callback(k, residual_norm, x)`` after every inner iteration ``k``, with
        the GMRES residual estimate and the current iterate (formed only when a
        callback is given: one ``gemv`` and one preconditioner application).

    Returns
    -------
    x, info
        As for ``cg``; ``info.residuals`` are the residual estimates of every
        inner iteration, the last one of each cycle replaced by the recomputed
        true residual; ``info.restarts`` counts the cycles after the first.
    """
    if int(restart) < 1:
        raise ValueError(f"restart must be >= 1, got {restart}")
    s = _Solve("gmres", A, b, x0, M, rtol, atol, maxiter)
    layout, info = s.layout, s.info
    m = int(min(restart, max(1, math.prod(layout.decomp.shape))))
    n = layout.local_size
    shape = layout.decomp.local_shape
    basis = np.zeros((m + 1, n), dtype=layout.dtype)
    h = np.zeros((m + 1, m))
    g = np.zeros(m + 1)
    cs, sn = np.zeros(m), np.zeros(m)
    r, v, z, w = (layout.zeros() for _ in range(4))
    xc = layout.zeros() if callback is not None else None
    rnorm = s.residual(r)
    bnorm2 = allreduce_sum(s.comm, layout.dot(s.b, s.b))[0]
    history, done = _begin(info, s.x, bnorm2, rnorm * rnorm, rtol, atol)

    def correction(j: int, out: DistArray) -> DistArray:
        """``M^-1 V y`` of the first ``j+1`` basis vectors, in ``out`` (or ``z``)."""
        y = _solve_ls(h, g, j)
        v.interior[...] = (y @ basis[: j + 1]).reshape(shape)
        return s.precondition(v, out)

    k = 0
    done = done or s.maxiter <= 0  # no iteration allowed: x0 stands, reason "maxiter" as _begin left it
    while not done:
        basis[0] = r.interior.reshape(-1) / rnorm
        g[:] = 0.0
        g[0] = rnorm
        h[:] = 0.0
        j = -1
        for j in range(m):
            k += 1
            v.interior[...] = basis[j].reshape(shape)
            A.matvec(s.precondition(v, z), w)
            basis[j + 1] = w.interior.reshape(-1)
            # classical Gram-Schmidt: coefficients and the norm before projection in one reduction
            red = allreduce_sum(s.comm, *(basis[: j + 1] @ basis[j + 1]), basis[j + 1] @ basis[j + 1])
            coef, before = red[:-1], red[-1]
            basis[j + 1] -= coef @ basis[: j + 1]
            after = allreduce_sum(s.comm, basis[j + 1] @ basis[j + 1])[0]
            if after < _DGKS * _DGKS * before:  # cancellation: project once more (DGKS)
                red = allreduce_sum(s.comm, *(basis[: j + 1] @ basis[j + 1]))
                basis[j + 1] -= red @ basis[: j + 1]
                coef = coef + red
                after = allreduce_sum(s.comm, basis[j + 1] @ basis[j + 1])[0]
            hn = math.sqrt(max(after, 0.0))
            h[: j + 1, j] = coef
            h[j + 1, j] = hn
            if hn > 0:
                basis[j + 1] /= hn
            for i in range(j):  # earlier rotations, then a new one zeroing h[j+1, j]
                a, c = h[i, j], h[i + 1, j]
                h[i, j], h[i + 1, j] = cs[i] * a + sn[i] * c, -sn[i] * a + cs[i] * c
            den = math.hypot(h[j, j], h[j + 1, j])
            cs[j], sn[j] = (1.0, 0.0) if den == 0 else (h[j, j] / den, h[j + 1, j] / den)
            h[j, j], h[j + 1, j] = den, 0.0
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            estimate = abs(g[j + 1])
            history.append(estimate)
            info.iterations = k
            if callback is not None:
                xc.interior[...] = s.x.interior + correction(j, z).interior
                if callback(k, estimate, xc):
                    info.reason = "callback"
                    done = True
            if done or s.meets(estimate) or hn == 0 or k >= s.maxiter:
                break
        # form x and check the true residual before declaring convergence
        if j >= 0:
            s.x.interior[...] += correction(j, z).interior
        rnorm = s.residual(r)
        history[-1] = rnorm
        reason = s.meets(rnorm)
        if reason is not None:
            info.converged, info.reason, done = True, reason, True
        elif done or k >= s.maxiter:
            done = True  # reason: "callback", or "maxiter" as _begin left it
        else:
            info.restarts += 1
    return s.finish(history, true_residual)


def bicgstab(
    A: Any,  # noqa: N803
    b: DistArray,
    x0: DistArray | None = None,
    rtol: float = 1e-8,
    maxiter: int | None = None,
    M: Any = None,  # noqa: N803
    callback: Callback | None = None,
    *,
    atol: float = 0.0,
    true_residual: bool = True,
) -> tuple[DistArray, SolveInfo]:
    """Solve ``A x = b`` by right-preconditioned BiCGStab (van der Vorst 1992; SciPy's variant).

    Parameters and returns as for :func:`gmres` (no ``restart``).  An iteration
    is one full BiCGStab step (two products, two preconditioner applications);
    when the half-step residual ``s`` already passes, ``x`` takes the half
    step and that iteration is the last.  A breakdown (``rhat.r`` or
    ``omega`` numerically zero) restarts from the true residual
    (``info.restarts``); two breakdowns in a row stop with
    ``reason="breakdown"``.
    """
    s = _Solve("bicgstab", A, b, x0, M, rtol, atol, maxiter)
    layout, info, comm = s.layout, s.info, s.comm
    dot = layout.dot
    r, rhat, p, v, t, z, zs = (layout.zeros() for _ in range(7))
    rnorm = s.residual(r)
    bnorm2 = allreduce_sum(comm, dot(s.b, s.b))[0]
    history, done = _begin(info, s.x, bnorm2, rnorm * rnorm, rtol, atol)
    ri, xi = r.interior, s.x.interior
    tiny = np.finfo(np.float64).eps ** 2
    k, fresh, breakdowns = 0, True, 0
    rho_prev = alpha = omega = 1.0
    rho = 0.0

    def confirm() -> bool:
        """Recompute ``r = b - A x``; True (and converged) when it passes the test."""
        nonlocal rnorm
        rnorm = s.residual(r)
        history[-1] = rnorm
        reason = s.meets(rnorm)
        if reason is not None:
            info.converged, info.reason = True, reason
        return reason is not None

    while not done and k < s.maxiter:
        if fresh:
            rhat.interior[...] = ri
            rho = allreduce_sum(comm, dot(rhat, r))[0]
        if abs(rho) < tiny * max(rnorm * rnorm, np.finfo(np.float64).tiny) or not math.isfinite(rho):
            breakdowns += 1
            if breakdowns > 1:
                info.reason = "breakdown"
                break
            info.restarts += 1
            fresh = True
            continue
        if fresh:
            p.interior[...] = ri
        else:
            beta = (rho / rho_prev) * (alpha / omega)
            p.interior[...] = ri + beta * (p.interior - omega * v.interior)
        fresh = False
        ph = s.precondition(p, z)
        A.matvec(ph, v)
        rv = allreduce_sum(comm, dot(rhat, v))[0]
        alpha = rho / rv if rv != 0 else math.nan
        k += 1
        info.iterations = k
        ri -= alpha * v.interior  # r now holds s = r - alpha v
        snorm = math.sqrt(max(allreduce_sum(comm, dot(r, r))[0], 0.0))
        if not math.isfinite(alpha):
            breakdowns += 1
            info.restarts += 1
            history.append(rnorm)
            fresh = True
            s.residual(r)
            continue
        if s.meets(snorm):
            xi += alpha * ph.interior
            history.append(snorm)
            if confirm():
                break
            fresh = True
            continue
        sh = s.precondition(r, zs)
        A.matvec(sh, t)
        ts, tt = allreduce_sum(comm, dot(t, r), dot(t, t))
        omega = ts / tt if tt > 0 else 0.0
        xi += alpha * ph.interior + omega * sh.interior
        ri -= omega * t.interior
        rho_prev = rho
        rr, rho = allreduce_sum(comm, dot(r, r), dot(rhat, r))
        rnorm = math.sqrt(max(rr, 0.0))
        history.append(rnorm)
        asked = callback is not None and bool(callback(k, rnorm, s.x))
        if s.meets(rnorm):
            if confirm():
                break
            fresh = True
        elif asked:
            info.reason = "callback"
            break
        if omega == 0.0:
            breakdowns += 1
            info.restarts += 1
            fresh = True
            s.residual(r)
            continue
        breakdowns = 0
    return s.finish(history, true_residual)  # reason stays "maxiter" unless set above
