"""Matrix-free Poisson operator on a DistArray, its assembled twin, Jacobi, and a manufactured solution.

The operator is ``A = -Laplacian_h`` with the 5-point (2-D) or 7-point (3-D)
stencil, per dimension either

* **Dirichlet** (homogeneous, boundary nodes eliminated): ``n`` unknowns at
  ``x_i = (i + 1) h``, default ``h = 1 / (n + 1)``; the ghost cells beyond the
  domain are held at zero, so ``A`` is SPD; or
* **periodic** (the decomposition's ``periodic`` flag): ``x_i = i h``, default
  ``h = 1 / n``.  With every dimension periodic ``A`` is singular (constants
  are its null space): ``b`` must have zero sum, and the solution is the one
  CG reaches from ``x0`` (zero-mean for ``x0 = 0``).

Applying it overlaps communication with computation: start the halo
exchange, update the cells whose stencil needs no ghost, wait, update the
one-cell frame next to the ghosts.  The update is a fused Numba kernel that
also returns ``x . Ax`` (the curvature CG needs) in the same sweep.
:func:`poisson_matrix` assembles the same operator as a
:class:`~hpcml.linalg.csr.DistCSR` (natural row ordering, rows built where
they are owned) to check one against the other and to compare with PETSc.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sps
from mpi4py import MPI

from hpcml.decomp import CartDecomp, block_range
from hpcml.distarray import DistArray
from hpcml.kernels import jacobi_step, region_boxes
from hpcml.linalg import _kernels
from hpcml.linalg.cg import SolveInfo, finalize_info
from hpcml.linalg.csr import DistCSR
from hpcml.linalg.vector import Layout, allreduce_sum, distribute, solve_vectors
from hpcml.runtime import comm_or_world

__all__ = ["PoissonOperator", "jacobi", "manufactured", "poisson_matrix"]


def _spacing(shape: Sequence[int], periodic: Sequence[bool], spacing: Any) -> tuple[float, ...]:
    if spacing is None:
        return tuple(1.0 / n if p else 1.0 / (n + 1) for n, p in zip(shape, periodic))
    hs = (float(spacing),) * len(shape) if np.ndim(spacing) == 0 else tuple(float(h) for h in spacing)
    if len(hs) != len(shape) or not all(h > 0 and math.isfinite(h) for h in hs):
        raise ValueError(f"spacing must be one positive number or one per dimension, got {spacing!r}")
    return hs


class PoissonOperator:
    """``A u = -Laplacian_h u`` on a block-decomposed 2-D or 3-D grid, matrix-free.

    Parameters
    ----------
    decomp
        The grid decomposition: 2-D or 3-D, one halo width >= 1 on every axis;
        its ``periodic`` flags choose periodic (True) or homogeneous Dirichlet
        (False) boundaries per dimension.
    spacing
        Grid spacing, one number or one per dimension; ``None`` for the unit
        domain (see the module docstring).  ``spacing=1`` gives the integer
        matrix ``2d`` on the diagonal and ``-1`` off it.
    dtype
        float64 (default) or float32.
    halo_method
        Halo exchange method (``"auto"``, ``"pack"``, ``"datatype"``).

    Attributes
    ----------
    layout : Layout
        The vectors it acts on: ``DistArray`` on ``decomp`` (``create_vector``).
    spacing : tuple of float
    stats : dict
        Accumulated ``matvecs`` and the seconds this rank spent starting
        (``start_s``) and waiting for (``wait_s``) halo exchanges.
    """

    symmetric = True  # by construction: cg() skips its symmetry probe

    def __init__(
        self,
        decomp: CartDecomp,
        spacing: float | Sequence[float] | None = None,
        dtype: Any = np.float64,
        halo_method: str = "auto",
    ) -> None:
        if decomp.ndim not in (2, 3):
            raise ValueError(f"the Poisson operator is 2-D or 3-D, the decomposition is {decomp.ndim}-D")
        if len(set(decomp.halo)) != 1 or decomp.halo[0] < 1:
            raise ValueError(f"the decomposition needs one halo width >= 1 on every axis, got {decomp.halo}")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        self.decomp = decomp
        self.shape = decomp.shape
        self.ndim = decomp.ndim
        self.halo = decomp.halo[0]
        self.periodic = decomp.periodic
        self.spacing = _spacing(decomp.shape, decomp.periodic, spacing)
        self.coef = tuple(dt.type(1.0 / (h * h)) for h in self.spacing)
        self.layout = Layout(decomp, dt)
        self.dtype = dt
        self.comm = decomp.cart
        self.halo_method = halo_method
        self.stats: dict[str, float] = {"matvecs": 0, "start_s": 0.0, "wait_s": 0.0}
        gshape = decomp.ghosted_shape
        self._inner = [_flat_box(b) for b in region_boxes(gshape, self.halo, "interior")]
        self._frame = [_flat_box(b) for b in region_boxes(gshape, self.halo, "boundary")]
        self._kernel = _kernels.neg_lap2_dot if self.ndim == 2 else _kernels.neg_lap3_dot
        # Ghost slabs on the physical (non-periodic) boundary: forced to zero before
        # every product, so a vector whose ghosts hold stale values is still right.
        self._dirichlet: list[tuple[slice, ...]] = []
        for d, (lo, hi) in enumerate(decomp.neighbors):
            for peer, sl in ((lo, slice(0, self.halo)), (hi, slice(gshape[d] - self.halo, gshape[d]))):
                if peer == MPI.PROC_NULL:
                    self._dirichlet.append(tuple(sl if e == d else slice(None) for e in range(self.ndim)))

    def __repr__(self) -> str:
        bc = ["periodic" if p else "dirichlet" for p in self.periodic]
        return f"PoissonOperator(shape={self.shape}, dims={self.decomp.dims}, bc={bc}, spacing={self.spacing})"

    # -- vectors -------------------------------------------------------------------------
    def create_vector(self, source: Any = None, root: int = 0) -> DistArray:
        """A vector (ghosted ``DistArray``) for this operator (collective).

        ``source``: ``None`` for zeros, a callable of the global index arrays, or
        on ``root`` the global array (other ranks pass ``None``).
        """
        return self.layout.adopt(distribute(self.decomp, source, root, self.dtype), "source")

    def diagonal(self) -> DistArray:
        """The (constant) diagonal ``sum_d 2 / h_d^2`` as a vector."""
        d = self.layout.zeros()
        d.interior[...] = sum(2.0 * c for c in self.coef)
        return d

    def coordinates(self) -> tuple[np.ndarray, ...]:
        """Coordinates of the owned cells, broadcastable (``np.ogrid`` style)."""
        idx = self.decomp.global_indices(sparse=True)
        return tuple((i + (0 if p else 1)) * h for i, p, h in zip(idx, self.periodic, self.spacing))

    # -- products ------------------------------------------------------------------------
    def _product(self, x: DistArray, y: DistArray) -> float:
        """``y = A x`` on two vectors of this layout; the local ``x . y``."""
        xd, yd = x.data, y.data
        for sl in self._dirichlet:
            xd[sl] = 0
        t0 = time.perf_counter()
        req = x.start_exchange(method=self.halo_method, corners=False)
        t1 = time.perf_counter()
        s = 0.0
        for box in self._inner:
            s += self._kernel(xd, yd, *box, *self.coef)
        t2 = time.perf_counter()
        req.wait()
        t3 = time.perf_counter()
        for box in self._frame:
            s += self._kernel(xd, yd, *box, *self.coef)
        self.stats["matvecs"] += 1
        self.stats["start_s"] += t1 - t0
        self.stats["wait_s"] += t3 - t2
        return float(s)

    def matvec(self, x: DistArray, y: DistArray | None = None) -> DistArray:
        """``y = A x`` with the halo exchange overlapped (collective); returns ``y``.

        ``x`` may be any ``DistArray`` on the same grid and process grid (copied
        into a ghosted one if it has no halo); its ghost layers are overwritten.
        """
        xin = self.layout.adopt(x, "x")
        if y is None:
            y = self.layout.zeros()
        self.layout.check(y, "y")
        yout = y if self.layout.matches(y) else self.layout.zeros()
        if yout.data is xin.data:
            raise ValueError("y must not be x")
        self._product(xin, yout)
        if yout is not y:
            y.interior[...] = yout.interior
        return y

    apply = matvec

    def matvec_dot(self, x: DistArray, y: DistArray) -> float:
        """``y = A x`` and the local part of ``x . y`` (fused; both in this layout)."""
        return self._product(x, y)

    def to_matrix(self) -> DistCSR:
        """The same operator assembled as a :class:`DistCSR` (natural ordering, 1-D row blocks)."""
        return poisson_matrix(self.shape, self.comm, periodic=self.periodic, spacing=self.spacing, dtype=self.dtype)


def _flat_box(box: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[int, ...]:
    lo, hi = box
    return tuple(v for pair in zip(lo, hi) for v in pair)


# -- assembled twin ----------------------------------------------------------------------------


def poisson_matrix(
    shape: Sequence[int],
    comm: MPI.Comm | None = None,
    periodic: bool | Sequence[bool] = False,
    spacing: float | Sequence[float] | None = None,
    dtype: Any = np.float64,
) -> DistCSR:
    """Assemble ``-Laplacian_h`` (5/7-point) as a :class:`DistCSR` in natural (C) row ordering.

    Each rank builds only its own rows (``block_range`` of the flattened grid),
    so memory scales with the rank count.  ``spacing=1`` gives the classic
    ``2d, -1`` integer stencil (the matrix of ``peers.md``).
    """
    comm = comm_or_world(comm)
    shape = tuple(int(n) for n in shape)
    nd = len(shape)
    per = (bool(periodic),) * nd if np.ndim(periodic) == 0 else tuple(bool(p) for p in periodic)
    hs = _spacing(shape, per, spacing)
    coef = [1.0 / (h * h) for h in hs]
    total = math.prod(shape)
    r0, count = block_range(total, comm.Get_size(), comm.Get_rank())
    lin = np.arange(r0, r0 + count, dtype=np.int64)
    idx = np.unravel_index(lin, shape)
    strides = np.cumprod((1, *shape[:0:-1]))[::-1].astype(np.int64)
    rows, cols, vals = [lin - r0], [lin], [np.full(count, 2.0 * sum(coef))]
    for d in range(nd):
        for step in (-1, 1):
            j = idx[d] + step
            if per[d]:
                j = j % shape[d]
                keep = np.ones(count, dtype=bool)
            else:
                keep = (j >= 0) & (j < shape[d])
            rows.append((lin - r0)[keep])
            cols.append(lin[keep] + (j[keep] - idx[d][keep]) * strides[d])
            vals.append(np.full(int(keep.sum()), -coef[d]))
    local = sps.coo_array(
        (np.concatenate(vals).astype(dtype), (np.concatenate(rows), np.concatenate(cols))), shape=(count, total)
    ).tocsr()
    matrix = DistCSR.from_local_rows(local, comm)
    matrix.symmetric = True
    return matrix


# -- Jacobi --------------------------------------------------------------------------------------


def jacobi(
    op: PoissonOperator,
    b: DistArray,
    x0: DistArray | None = None,
    rtol: float = 1e-8,
    maxiter: int = 10_000,
    callback: Callable[[int, float, DistArray], Any] | None = None,
    *,
    atol: float = 0.0,
    check_every: int = 10,
) -> tuple[DistArray, SolveInfo]:
    """Jacobi iteration for ``A x = b`` on a :class:`PoissonOperator` (collective).

    Each sweep starts the halo exchange, updates the cells that need no ghost
    (``hpcml.kernels.jacobi_step`` on the ``"interior"`` region), waits, and
    updates the frame.  Every ``check_every`` sweeps the true residual
    ``||b - A x||`` is computed (one product and one reduction) and the
    solve stops when it is below ``max(rtol*||b||, atol)``.  Jacobi needs
    ``O(n^2)`` sweeps on an ``n``-point grid: a smoother and a reference,
    not a solver for fine grids (use :func:`~hpcml.linalg.cg.cg`).

    Returns ``(x, info)`` like :func:`~hpcml.linalg.cg.cg`; ``info.residuals``
    are recorded at ``info.residual_iterations``.
    """
    if not isinstance(op, PoissonOperator):
        raise TypeError(f"jacobi runs on a PoissonOperator, got {type(op).__name__}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    layout = op.layout
    b, x = solve_vectors(layout, b, x0)
    comm, runs, flat = layout.comm, layout.runs, layout.flat
    info = SolveInfo("jacobi")
    t0, ex0, mv0 = time.perf_counter(), op.stats["start_s"] + op.stats["wait_s"], op.stats["matvecs"]
    xn, ax, r = layout.zeros(), layout.zeros(), layout.zeros()

    def residual() -> float:
        op.matvec_dot(x, ax)
        _, rr = _kernels.residual_runs(runs, flat(b), flat(ax), flat(r), None)
        return math.sqrt(max(allreduce_sum(comm, rr)[0], 0.0))

    info.bnorm = math.sqrt(allreduce_sum(comm, layout.dot(b, b))[0])
    tol = max(rtol * info.bnorm, atol)
    info.tol = tol
    history, steps = [residual()], [0]
    info.reason = "maxiter"
    if info.bnorm == 0.0:
        x.interior[...] = 0
        info.converged, info.reason, history = True, "zero_rhs", [0.0]
    elif history[0] < tol:
        info.converged, info.reason = True, "rtol" if rtol * info.bnorm >= atol else "atol"
    else:
        for k in range(1, maxiter + 1):
            _jacobi_sweep(op, x, b, xn)
            x, xn = xn, x
            info.iterations = k
            if k % check_every and k != maxiter:
                continue
            rnorm = residual()
            history.append(rnorm)
            steps.append(k)
            if rnorm < tol:
                info.converged, info.reason = True, "rtol" if rtol * info.bnorm >= atol else "atol"
                break
            if callback is not None and callback(k, rnorm, x):
                info.reason = "callback"
                break
    info.residual_iterations = np.asarray(steps, dtype=np.int64)
    finalize_info(op, info, layout, b, x, history, t0, ex0, mv0, true_residual=True)
    return x, info


def _jacobi_sweep(op: PoissonOperator, x: DistArray, b: DistArray, out: DistArray) -> None:
    for sl in op._dirichlet:
        x.data[sl] = 0
    t0 = time.perf_counter()
    req = x.start_exchange(method=op.halo_method, corners=False)
    t1 = time.perf_counter()
    jacobi_step(x.data, b.data, out.data, op.spacing, halo=op.halo, region="interior")
    t2 = time.perf_counter()
    req.wait()
    t3 = time.perf_counter()
    jacobi_step(x.data, b.data, out.data, op.spacing, halo=op.halo, region="boundary")
    op.stats["start_s"] += t1 - t0
    op.stats["wait_s"] += t3 - t2


# -- manufactured solution ------------------------------------------------------------------------


def manufactured(op: PoissonOperator, modes: Sequence[int] | None = None) -> tuple[DistArray, DistArray]:
    """``(u, f)`` with ``-Laplacian u = f`` exactly, for checking second-order convergence.

    ``u = prod_d phi_d(x_d)`` with ``phi(x) = exp(x) sin(k pi x)`` on Dirichlet
    dimensions (zero on the boundary) and ``phi(x) = exp(sin(2 pi k x))`` on
    periodic ones; ``f = -sum_d phi_d'' prod_{e != d} phi_e``.  Neither factor
    is an eigenfunction of the discrete operator, so CG needs a realistic
    number of iterations (a pure sine would converge in one).  With the
    default unit-domain spacing the discrete solution of ``A x = f`` differs
    from ``u`` by ``O(h^2)``; with every dimension periodic, only up to a
    constant (compare after removing the means).
    """
    ks = (1,) * op.ndim if modes is None else tuple(int(k) for k in modes)
    if len(ks) != op.ndim or any(k < 1 for k in ks):
        raise ValueError(f"modes must be {op.ndim} positive integers, got {modes!r}")
    phis, second = [], []
    for periodic, k, xc in zip(op.periodic, ks, op.coordinates()):
        if periodic:
            w = 2 * math.pi * k
            phi = np.exp(np.sin(w * xc))
            d2 = w * w * (np.cos(w * xc) ** 2 - np.sin(w * xc)) * phi
        else:
            w = math.pi * k
            ex, sn, cs = np.exp(xc), np.sin(w * xc), np.cos(w * xc)
            phi = ex * sn
            d2 = ex * ((1 - w * w) * sn + 2 * w * cs)
        phis.append(phi)
        second.append(d2)
    local_u = np.ones(op.decomp.local_shape)
    for phi in phis:
        local_u = local_u * phi
    local_f = np.zeros(op.decomp.local_shape)
    for d in range(op.ndim):
        term = -second[d]
        for e in range(op.ndim):
            if e != d:
                term = term * phis[e]
        local_f = local_f + term
    u, f = op.layout.zeros(), op.layout.zeros()
    u.interior[...] = local_u
    f.interior[...] = local_f
    return u, f
