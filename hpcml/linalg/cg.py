"""Conjugate gradients on distributed operators: classic and pipelined (Ghysels-Vanroose).

Both solvers take any *operator* with

* ``layout`` -- a :class:`~hpcml.linalg.vector.Layout` of the vectors it acts on,
* ``matvec(x, y)`` -- ``y = A x`` (collective),
* optionally ``matvec_dot(x, y)`` -- the same product returning the local part
  of ``x . y`` (saves a pass over both vectors),
* ``diagonal()`` -- for the Jacobi preconditioner,
* optionally ``symmetric = True`` -- symmetric by construction (skips the check),

which :class:`~hpcml.linalg.csr.DistCSR` (square) and
:class:`~hpcml.linalg.poisson.PoissonOperator` both provide.

Stopping test (SciPy's, so iteration counts can be compared):
``||r_k||_2 < max(rtol * ||b||_2, atol)`` on the recursively updated residual.

Classic CG costs one product, two ``Allreduce`` calls of at most two doubles
and two fused vector sweeps per iteration (13 vector passes with Jacobi).
Pipelined CG (Ghysels & Vanroose, Parallel Computing 40, 2014; PETSc's
KSPPIPECG) has a single reduction per iteration, started with
``Iallreduce`` before the product and completed after it, so the latency of
the global reduction hides behind the product -- at the price of more vector
traffic (about 20 passes) and slightly larger rounding drift.  It pays off
where reductions are slow (many nodes), not on one node.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.distarray import DistArray
from hpcml.linalg import _kernels
from hpcml.linalg.csr import DistCSR
from hpcml.linalg.vector import Layout, allreduce_sum, solve_vectors

__all__ = ["NotSPDError", "SolveInfo", "cg", "cg_pipelined", "check_symmetric"]

Callback = Callable[[int, float, DistArray], Any]


class NotSPDError(ValueError):
    """The operator (or the preconditioner) is not symmetric positive definite."""


@dataclasses.dataclass
class SolveInfo:
    """What an iterative solve did (identical on every rank).

    Attributes
    ----------
    method
        ``"cg"``, ``"cg_pipelined"``, ``"jacobi"``, ``"gmres"``, ``"bicgstab"`` or ``"multigrid"``.
    iterations
        Iterations performed.
    converged
        Whether the stopping test was met.
    reason
        ``"rtol"``/``"atol"`` (which threshold stopped it), ``"zero_rhs"``,
        ``"maxiter"``, ``"callback"`` (the callback returned True) or, for
        BiCGStab, ``"breakdown"``.
    residuals
        2-norms of the residual at the iterations in ``residual_iterations``
        (entry 0 is the initial residual); for CG the recursively updated one.
    residual_iterations
        Iteration numbers of ``residuals`` (every iteration for CG).
    bnorm, tol
        ``||b||_2`` and the absolute threshold ``max(rtol*||b||, atol)``.
    true_residual
        ``||b - A x||_2`` recomputed at the end (``nan`` when not computed).
    seconds
        Wall time of the iteration loop (slowest rank).
    exchange_seconds
        Time this rank spent starting and waiting for halo / ghost exchanges
        during the solve (the part of communication the overlap did not hide).
    matvecs
        Operator applications, the setup and checks included.
    restarts
        Pipelined CG: times rounding had made the recurrences' curvature
        non-positive and the pipeline was rebuilt from the true residual.
        GMRES: cycles after the first; BiCGStab: restarts from the true residual.
    replacements
        Pipelined CG only: residual replacements (the recurrence vectors
        recomputed from ``x`` and the search direction), periodic ones and the
        checks of a recursive residual that met the tolerance.
    """

    method: str
    iterations: int = 0
    converged: bool = False
    reason: str = ""
    residuals: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    residual_iterations: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    bnorm: float = 0.0
    tol: float = 0.0
    true_residual: float = math.nan
    seconds: float = 0.0
    exchange_seconds: float = 0.0
    matvecs: int = 0
    restarts: int = 0
    replacements: int = 0

    @property
    def relative_residual(self) -> float:
        """Last recorded residual over ``||b||`` (``nan`` for ``b = 0``)."""
        if not len(self.residuals) or self.bnorm == 0:
            return math.nan
        return float(self.residuals[-1] / self.bnorm)


# -- shared pieces ---------------------------------------------------------------------------


def _layout(A: Any) -> Layout:  # noqa: N803 - A is the operator, as in every CG text
    layout = getattr(A, "layout", None)
    if not isinstance(layout, Layout) or not callable(getattr(A, "matvec", None)):
        raise TypeError(
            f"cg needs a DistCSR, a PoissonOperator or an operator with .layout and .matvec(x, y); "
            f"got {type(A).__name__}"
        )
    if isinstance(A, DistCSR) and A.shape[0] != A.shape[1]:
        raise ValueError(f"cg needs a square matrix, got shape {A.shape}")
    return layout


def _matvec_dot(A: Any, layout: Layout) -> Callable[[DistArray, DistArray], float]:  # noqa: N803
    fused = getattr(A, "matvec_dot", None)
    if fused is not None:
        return fused

    def product(x: DistArray, y: DistArray) -> float:
        A.matvec(x, y)
        return layout.dot(x, y)

    return product


def _exchange_seconds(A: Any) -> float:  # noqa: N803
    stats = getattr(A, "stats", None) or {}
    return float(stats.get("start_s", 0.0) + stats.get("wait_s", 0.0))


def _matvecs(A: Any) -> int:  # noqa: N803
    stats = getattr(A, "stats", None) or {}
    return int(stats.get("matvecs", 0))


def _prepare(
    A: Any,  # noqa: N803
    b: DistArray,
    x0: DistArray | None,
    M: Any,  # noqa: N803
    check_symmetry: bool,
) -> tuple[Layout, DistArray, DistArray, Any]:
    """Validate everything before the first iteration; all ranks reach the same verdict."""
    from hpcml.linalg.precond import make_preconditioner

    layout = _layout(A)
    b, x = solve_vectors(layout, b, x0)
    pre = make_preconditioner(M, A, layout, spd=True)
    if check_symmetry and getattr(A, "symmetric", False) is not True:
        check_symmetric(A)
    return layout, b, x, pre


def _jacobi_inverse(pre: Any, solver: str | None = None) -> np.ndarray | None:
    """The flat inverse diagonal of a Jacobi preconditioner (fused into the sweeps), else ``None``.

    With ``solver`` set, any other preconditioner is refused (pipelined CG fuses Jacobi only).
    """
    from hpcml.linalg.precond import Jacobi

    if isinstance(pre, Jacobi):
        return pre.dinv
    if pre is not None and solver is not None:
        raise ValueError(f"{solver} takes M=None or 'jacobi'; use cg() for other preconditioners")
    return None


def check_symmetric(A: Any, rtol: float | None = None) -> None:  # noqa: N803
    """Raise :class:`NotSPDError` on every rank unless ``(A u).v == u.(A v)`` for two fixed vectors.

    ``u`` and ``v`` are smooth-free functions of the global index (the same on
    any rank count), so a non-symmetric matrix is caught with probability one
    at the cost of two products.  ``rtol`` (relative to the Cauchy-Schwarz bound
    of the products) defaults to ``1e-10``, or ``1000 * eps`` of a less precise
    operator dtype (``1.2e-4`` for float32), above the rounding of its products.
    """
    layout = _layout(A)
    if rtol is None:
        rtol = max(1e-10, 1000 * float(np.finfo(layout.dtype).eps))
    decomp = layout.decomp
    strides = np.cumprod((1, *decomp.shape[:0:-1]))[::-1]

    def vec(a: float, c: float) -> DistArray:
        def f(*idx: np.ndarray) -> np.ndarray:
            lin = sum(i * int(s) for i, s in zip(idx, strides))
            return np.sin(a * np.asarray(lin, dtype=np.float64) + c)

        return layout.adopt(DistArray.from_global(decomp, f, dtype=layout.dtype), "u")

    u, v = vec(0.7071, 0.3), vec(1.3137, 1.1)
    au, av = layout.zeros(), layout.zeros()
    A.matvec(u, au)
    A.matvec(v, av)
    s = allreduce_sum(
        layout.comm,
        layout.dot(au, v),
        layout.dot(u, av),
        layout.dot(au, au),
        layout.dot(v, v),
        layout.dot(av, av),
        layout.dot(u, u),
    )
    # Cauchy-Schwarz bound of either side: the scale the rounding error is relative to
    scale = math.sqrt(abs(s[2] * s[3])) + math.sqrt(abs(s[4] * s[5]))
    if not math.isfinite(s[0]) or not math.isfinite(s[1]):
        raise NotSPDError("the operator produced NaN/inf on a finite vector")
    if abs(s[0] - s[1]) > rtol * max(scale, np.finfo(np.float64).tiny):
        raise NotSPDError(
            f"the operator is not symmetric: (Au).v = {s[0]:.17g} but u.(Av) = {s[1]:.17g}; "
            "CG needs a symmetric positive definite operator"
        )


def finalize_info(
    A: Any,  # noqa: N803
    info: SolveInfo,
    layout: Layout,
    b: DistArray,
    x: DistArray,
    history: list[float],
    t0: float,
    ex0: float,
    mv0: int,
    true_residual: bool,
) -> None:
    """Fill the timing, history and final-residual fields of ``info`` (collective)."""
    comm = layout.comm
    info.seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    info.residuals = np.asarray(history, dtype=np.float64)
    if not len(info.residual_iterations):
        info.residual_iterations = np.arange(len(history), dtype=np.int64)
    info.exchange_seconds = _exchange_seconds(A) - ex0
    if true_residual:
        ax = layout.zeros()
        A.matvec(x, ax)
        r = layout.zeros()
        _, rr = _kernels.residual_runs(layout.runs, layout.flat(b), layout.flat(ax), layout.flat(r), None)
        info.true_residual = math.sqrt(max(allreduce_sum(comm, rr)[0], 0.0))
    info.matvecs = _matvecs(A) - mv0


def _begin(
    info: SolveInfo, x: DistArray, bnorm2: float, rr: float, rtol: float, atol: float
) -> tuple[list[float], bool]:
    """Record ``||b||`` and the threshold; ``(history, done)`` where done means no iteration is needed."""
    info.bnorm = math.sqrt(bnorm2)
    info.tol = max(rtol * info.bnorm, atol)
    history = [math.sqrt(max(rr, 0.0))]
    info.reason = "maxiter"
    if info.bnorm == 0.0:
        x.interior[...] = 0
        info.converged, info.reason = True, "zero_rhs"
        return [0.0], True
    reason = _stop_reason(history[0], rtol * info.bnorm, atol)
    if reason is not None:
        info.converged, info.reason = True, reason
        return history, True
    return history, False


def _after_iteration(
    info: SolveInfo,
    history: list[float],
    k: int,
    rnorm: float,
    rtol: float,
    atol: float,
    callback: Callback | None,
    x: DistArray,
) -> bool:
    """Record iteration ``k``; True when the solve stops (converged, or the callback asked)."""
    history.append(rnorm)
    info.iterations = k
    reason = _stop_reason(rnorm, rtol * info.bnorm, atol)
    asked = callback is not None and bool(callback(k, rnorm, x))  # called after every iteration, the last too
    if reason is not None:
        info.converged, info.reason = True, reason
        return True
    if asked:
        info.reason = "callback"
        return True
    return False


def _stop_reason(rnorm: float, rtol_abs: float, atol: float) -> str | None:
    if rnorm < max(rtol_abs, atol):
        return "rtol" if rtol_abs >= atol else "atol"
    return None


def _not_spd(what: str, value: float, k: int) -> NotSPDError:
    return NotSPDError(
        f"{what} = {value:.6g} at iteration {k}: the operator or the preconditioner is not symmetric positive "
        "definite (or the system is singular and b is not in its range)"
    )


# -- classic CG -----------------------------------------------------------------------------


def cg(
    A: Any,  # noqa: N803
    b: DistArray,
    x0: DistArray | None = None,
    rtol: float = 1e-8,
    maxiter: int | None = None,
    M: Any = None,  # noqa: N803
    callback: Callback | None = None,
    *,
    atol: float = 0.0,
    check_symmetry: bool = True,
    true_residual: bool = True,
) -> tuple[DistArray, SolveInfo]:
    """Solve ``A x = b`` by (Jacobi-preconditioned) conjugate gradients (collective).

    Parameters
    ----------
    A
        Symmetric positive definite operator: a square
        :class:`~hpcml.linalg.csr.DistCSR`, a
        :class:`~hpcml.linalg.poisson.PoissonOperator`, or any object with the
        interface of the module docstring.
    b
        Right-hand side, a ``DistArray`` on the operator's global shape and
        process grid (copied once if its halo width or order differs).
    x0
        Initial guess (not modified); zeros by default.
    rtol, atol
        Stop when ``||r|| < max(rtol*||b||, atol)`` (SciPy's test).
    maxiter
        Iteration limit; default ``10 * N`` (SciPy's).
    M
        ``None``, ``"jacobi"`` (diagonal scaling; needs a positive diagonal,
        fused into the sweeps), ``"block-ilu"``, a
        :class:`~hpcml.linalg.multigrid.Multigrid`, or any symmetric positive
        definite preconditioner object with ``apply(r, z)``
        (:mod:`hpcml.linalg.precond`).
    callback
        ``callback(k, residual_norm, x)`` after iteration ``k`` on every rank;
        returning True stops the solve (``reason="callback"``).
    check_symmetry
        Test ``(Au).v == u.(Av)`` first (two products) unless the operator is
        symmetric by construction.
    true_residual
        Recompute ``||b - A x||`` at the end (one product) into ``info``.

    Returns
    -------
    x : DistArray
        The solution, in the operator's layout.
    info : SolveInfo
        Iterations, residual history, convergence flag and reason.

    Raises
    ------
    NotSPDError
        On every rank, for a non-symmetric operator, a non-positive diagonal
        with Jacobi, or non-positive curvature ``p.Ap`` during the iteration.
    ValueError, TypeError
        On every rank, for NaN/inf in ``b`` or ``x0`` and for vectors on another
        global shape or process grid, before any iteration.
    """
    layout, b, x, pre = _prepare(A, b, x0, M, check_symmetry)
    dinv = _jacobi_inverse(pre)
    general = pre if dinv is None else None  # any other M: z = M^-1 r stored, one more vector
    comm, runs, flat = layout.comm, layout.runs, layout.flat
    n_global = math.prod(layout.decomp.shape)
    maxiter = 10 * n_global if maxiter is None else int(maxiter)
    info = SolveInfo("cg")
    matvec_dot = _matvec_dot(A, layout)
    t0, ex0, mv0 = time.perf_counter(), _exchange_seconds(A), _matvecs(A)

    r, p, q = layout.zeros(), layout.zeros(), layout.zeros()
    z = layout.zeros() if general is not None else r  # with Jacobi, z = D^-1 r is never stored

    def precondition(rz: float) -> float:
        """Local ``r.z`` after ``z = M^-1 r`` (a general M); the fused value otherwise."""
        if general is None:
            return rz
        general.apply(r, z)
        return layout.dot(r, z)

    if x0 is not None:
        A.matvec(x, q)
    rz, rr = _kernels.residual_runs(runs, flat(b), flat(q), flat(r), dinv)  # r = b - A x0 (q = 0 for x0 = 0)
    bb = layout.dot(b, b)
    bnorm2, rz, rr = allreduce_sum(comm, bb, precondition(rz), rr)
    history, done = _begin(info, x, bnorm2, rr, rtol, atol)
    if not done:
        _kernels.cg_direction_runs(runs, flat(p), flat(z), dinv, 0.0)  # p = z
        for k in range(1, maxiter + 1):
            pq = allreduce_sum(comm, matvec_dot(p, q))[0]
            if not pq > 0:
                raise _not_spd("p.Ap", pq, k)
            alpha = rz / pq
            rz_new, rr = _kernels.cg_update_runs(runs, flat(x), flat(p), flat(r), flat(q), dinv, alpha)
            rz_new, rr = allreduce_sum(comm, precondition(rz_new), rr)
            if _after_iteration(info, history, k, math.sqrt(rr), rtol, atol, callback, x):
                break
            if not rz_new > 0:
                raise _not_spd("r.M^-1 r", rz_new, k)
            _kernels.cg_direction_runs(runs, flat(p), flat(z), dinv, rz_new / rz)
            rz = rz_new
    finalize_info(A, info, layout, b, x, history, t0, ex0, mv0, true_residual)
    return x, info


# -- pipelined CG ---------------------------------------------------------------------------


def cg_pipelined(
    A: Any,  # noqa: N803
    b: DistArray,
    x0: DistArray | None = None,
    rtol: float = 1e-8,
    maxiter: int | None = None,
    M: Any = None,  # noqa: N803
    callback: Callback | None = None,
    *,
    atol: float = 0.0,
    check_symmetry: bool = True,
    true_residual: bool = True,
    replace_every: int = 100,
) -> tuple[DistArray, SolveInfo]:
    """Pipelined CG (Ghysels & Vanroose): one non-blocking reduction per iteration, hidden behind the product.

    Same parameters, returns and errors as :func:`cg`, plus ``replace_every``.
    Each iteration runs one fused sweep (the eight vector recurrences, the
    preconditioner and the three partial dot products), starts ``Iallreduce`` on
    the three partials, applies the operator, and only then waits for the
    reduction.

    The recurrences of pipelined CG drift from the quantities they stand for
    faster than classic CG's (Cools et al. 2018): left alone, the recursive
    residual met the tolerance while ``||b - Ax||`` was 8-180x above it (2-D
    Poisson, Jacobi, 256^2 at rtol 1e-10 and 384^2 at 1e-8), and at 1024^2,
    rtol 1e-8 the curvature went non-positive and a restart doubled the
    iterations.  Two measures keep it honest:

    * residual replacement every ``replace_every`` iterations (default 100; 0
      turns it off): ``r = b - Ax`` and every other recurrence vector are
      recomputed from ``x`` and the search direction ``p`` (5 products, one
      blocking reduction; ~5% more products), which keeps the Krylov history.
      With it the iteration counts above equal classic CG's, without restarts;
    * convergence is only declared on a replaced (true) residual: when the
      recursive residual meets the tolerance a replacement confirms it, or the
      iteration goes on from the true residual (``info.replacements`` counts
      both kinds).

    If rounding still makes the recurrences' curvature non-positive (tolerances
    near the attainable accuracy), the true curvature ``p.Ap`` of the next
    direction is measured (one product): not positive raises
    :class:`NotSPDError`; positive restarts the pipeline from the true residual
    (``info.restarts``).
    """
    layout, b, x, pre = _prepare(A, b, x0, M, check_symmetry)
    dinv = _jacobi_inverse(pre, "cg_pipelined")
    comm, runs, flat = layout.comm, layout.runs, layout.flat
    maxiter = 10 * math.prod(layout.decomp.shape) if maxiter is None else int(maxiter)
    info = SolveInfo("cg_pipelined")
    matvec_dot = _matvec_dot(A, layout)
    t0, ex0, mv0 = time.perf_counter(), _exchange_seconds(A), _matvecs(A)

    r, u, w, m, n = (layout.zeros() for _ in range(5))
    z, q, s, p = (layout.zeros() for _ in range(4))

    def restart(start: bool) -> tuple[float, float, float, float]:
        """``r = b - A x``, ``u = M^-1 r``, ``w = A u``; the reduced ``(r.u, w.u, r.r, b.b)``."""
        if start and x0 is None:
            n.interior[...] = 0
        else:
            A.matvec(x, n)  # n is scratch here
        _kernels.residual_runs(runs, flat(b), flat(n), flat(r), None)
        _kernels.precondition_runs(runs, flat(r), flat(u), dinv)
        delta = matvec_dot(u, w)
        bb = layout.dot(b, b) if start else 0.0
        g, d, rr, bb = allreduce_sum(comm, layout.dot(r, u), delta, layout.dot(r, r), bb)
        return float(g), float(d), float(rr), float(bb)

    def replace() -> tuple[float, float, float]:
        """Residual replacement: every recurrence vector recomputed from ``x`` and ``p`` (5 products).

        ``r``, ``u``, ``w`` and the dots as in a restart; then ``s = A p``, ``q = M^-1 s``,
        ``z = A q``, ``m = M^-1 w``, ``n = A m``, so the search direction is kept.
        """
        g, d, rr, _ = restart(start=False)
        A.matvec(p, s)
        _kernels.precondition_runs(runs, flat(s), flat(q), dinv)
        A.matvec(q, z)
        _kernels.precondition_runs(runs, flat(w), flat(m), dinv)
        A.matvec(m, n)
        info.replacements += 1
        return g, d, rr

    def meets(rr: float) -> bool:
        """Whether a squared residual norm passes the stopping test."""
        return _stop_reason(math.sqrt(max(rr, 0.0)), rtol * info.bnorm, atol) is not None

    gamma, delta, rr, bnorm2 = restart(start=True)
    history, done = _begin(info, x, bnorm2, rr, rtol, atol)
    buf = np.zeros(3, dtype=np.float64)
    vecs = tuple(flat(v) for v in (x, r, u, w, m, n, z, q, s, p))
    k = 0
    while not done:
        if not delta > 0 or not gamma > 0:
            raise _not_spd("u.Au" if not delta > 0 else "r.M^-1 r", delta if not delta > 0 else gamma, k)
        _kernels.precondition_runs(runs, flat(w), flat(m), dinv)  # m = M^-1 w
        A.matvec(m, n)  # n = A m
        alpha, beta = gamma / delta, 0.0
        while k < maxiter:
            k += 1
            buf[:] = _kernels.pipecg_update_runs(runs, *vecs, dinv, alpha, beta)
            req = comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            A.matvec(m, n)  # overlaps the reduction
            req.Wait()
            g, d, rr = (float(v) for v in buf)
            if (replace_every and k % replace_every == 0) or meets(rr):
                g, d, rr = replace()  # periodic, or to confirm convergence on the true residual
            if _after_iteration(info, history, k, math.sqrt(max(rr, 0.0)), rtol, atol, callback, x):
                done = True
                break
            beta = g / gamma
            denom = d - beta * g / alpha
            if not (denom > 0 and g > 0):
                # denom is p.Ap of the next direction p = u + beta p as the recurrences see it.
                # Measure it directly: not positive means the operator is not SPD; positive means
                # rounding has spoiled the recurrences (pipelined CG's limited attainable
                # accuracy, seen near tight tolerances on ill-conditioned systems), and the
                # pipeline restarts from the true residual.
                _kernels.cg_direction_runs(runs, flat(p), flat(u), None, beta)
                curvature = allreduce_sum(comm, matvec_dot(p, z))[0]  # p, z are rebuilt after a restart
                if not curvature > 0:
                    raise _not_spd("p.Ap", curvature, k)
                info.restarts += 1
                gamma, delta, _, _ = restart(start=False)
                break
            alpha, gamma = g / denom, g
        else:
            done = True  # maxiter
    finalize_info(A, info, layout, b, x, history, t0, ex0, mv0, true_residual)
    return x, info
