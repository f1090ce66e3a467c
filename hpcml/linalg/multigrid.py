"""Geometric multigrid for :class:`~hpcml.linalg.poisson.PoissonOperator` (2-D and 3-D, any rank count).

``Multigrid(op)`` builds a hierarchy of grids, each half as fine as the one
above along the dimensions that can be coarsened, and runs V- or W-cycles:
``smooth, restrict the residual, recurse, interpolate the correction,
smooth``.  Use it alone (``mg.solve(b, rtol=...)``) or as the preconditioner
of CG (``cg(op, b, M=mg)``): the cycle is symmetric positive definite
(same smoother before and after, restriction ``R = P^T / 2`` per coarsened
dimension, exact coarsest solve).

Geometry.  Every level keeps the walls of the fine problem where they are.
A dimension of ``n`` cells with spacing ``h`` coarsens *cell-centred* when
``n`` is even (coarse cell ``c`` = fine cells ``2c, 2c+1``; linear
interpolation with weights 3/4, 1/4) and *vertex-centred* when ``n`` is odd
(coarse point ``c`` = fine point ``2c+1``; weights 1, 1/2) -- so any size
coarsens on Dirichlet dimensions; periodic dimensions need an even size.
Near a Dirichlet wall the interpolation and the coarse operator use the true
distance from the first unknown to the wall (a diagonal shift of the coarse
stencil, separable per dimension), so the coarse problems describe the same
domain as the fine one.  Only dimensions whose spacing is within 1.5x of
the smallest coarsen (semi-coarsening of anisotropic grids, where point
smoothers need it).  The coarse operators are rediscretised (``1/H^2``
stencils), not Galerkin products.

Distribution.  A coarse level keeps each coarse cell on the rank that owns
its first fine child (explicit block cuts: :class:`~hpcml.decomp_blocks.BlockDecomp`,
PETSc DMDA's refinement rule), so restriction needs fine ghosts two cells
wide and interpolation coarse ghosts one cell wide, whatever the rank count.
When a coarse block would be narrower than ``agglomerate_below`` cells, the
fine level's residual is moved onto one rank (one ``Alltoallv``,
:class:`~hpcml.redistribute.Redistribution`), and the rest of the hierarchy
runs there without communication; the correction returns the same way.  The
coarsest level (at most ``coarse_size`` cells) is solved directly with a
sparse LU factorised once (SuperLU through SciPy); with every dimension
periodic the operator is singular and the coarse solve returns the zero-mean
solution.

Smoothers: ``"jacobi"`` (weighted, ``omega = 2 / (lambda_lo + 2)`` for the
high-frequency range ``[lambda_lo, 2]`` of ``D^-1 A``: 0.8 in 2-D, 6/7 in 3-D)
and ``"chebyshev"`` (the Chebyshev polynomial of ``D^-1 A`` on the same range,
degree ``sweeps``), ``sweeps`` times before and after the coarse correction.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sps
import scipy.sparse.linalg as spla
from mpi4py import MPI

from hpcml.decomp import CartDecomp
from hpcml.decomp_blocks import BlockDecomp, cuts
from hpcml.distarray import DistArray
from hpcml.linalg import _mg_kernels as mgk
from hpcml.linalg.cg import SolveInfo, _after_iteration, _begin, finalize_info
from hpcml.linalg.poisson import PoissonOperator
from hpcml.linalg.vector import Layout, allreduce_sum, solve_vectors
from hpcml.redistribute import Redistribution

__all__ = ["Multigrid"]

SMOOTHERS = ("jacobi", "chebyshev")
CYCLES = {"V": 1, "W": 2}


@dataclasses.dataclass(frozen=True)
class _Axis:
    """One dimension of one level: ``n`` unknowns ``h`` apart; walls ``lo``/``hi`` away (Dirichlet)."""

    n: int
    h: float
    periodic: bool
    lo: float
    hi: float

    def coarsened(self) -> tuple[str, _Axis] | None:
        """``(kind, coarse axis)`` or ``None`` when this dimension cannot be halved."""
        if self.periodic:
            if self.n % 2 or self.n < 4:
                return None
            return "cell", _Axis(self.n // 2, 2 * self.h, True, 0.0, 0.0)
        if self.n < 3:
            return None
        if self.n % 2:
            return "vertex", _Axis((self.n - 1) // 2, 2 * self.h, False, self.lo + self.h, self.hi + self.h)
        return "cell", _Axis(self.n // 2, 2 * self.h, False, self.lo + self.h / 2, self.hi + self.h / 2)

    def shift(self) -> np.ndarray:
        """Diagonal shift of every cell (zero unless a wall is not ``h`` away)."""
        s = np.zeros(self.n)
        if not self.periodic:
            c = 1.0 / (self.h * self.h)
            s[0] += c * (self.h / self.lo - 1.0)
            s[-1] += c * (self.h / self.hi - 1.0)
        return s

    def matrix(self) -> sps.csr_array:
        """The 1-D operator ``(2 u_i - u_{i-1} - u_{i+1}) / h^2`` plus the wall shifts."""
        n, c = self.n, 1.0 / (self.h * self.h)
        t = sps.lil_array((n, n))
        for i in range(n):
            t[i, i] = 2 * c
            for j in (i - 1, i + 1):
                if 0 <= j < n:
                    t[i, j] += -c
                elif self.periodic and n > 1:
                    t[i, j % n] += -c
        return sps.csr_array(t) + sps.diags_array(self.shift())


def _prolong_1d(fine: _Axis, coarse: _Axis, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """For every fine cell the two (unwrapped) coarse cells it interpolates from and their weights."""
    n, nc = fine.n, coarse.n
    idx = np.zeros((n, 2), dtype=np.int64)
    w = np.zeros((n, 2))
    for i in range(n):
        if kind == "same":
            idx[i], w[i] = (i, i), (1.0, 0.0)
        elif kind == "cell":
            c = i // 2
            nb = c - 1 if i % 2 == 0 else c + 1
            if 0 <= nb < nc or fine.periodic:
                idx[i], w[i] = (c, nb), (0.75, 0.25)
            else:  # between coarse cell c (h/2 away) and the wall
                d = fine.lo if nb < 0 else fine.hi
                idx[i], w[i] = (c, c), (d / (d + fine.h / 2), 0.0)
        elif i % 2:  # vertex: a coarse point
            idx[i], w[i] = ((i - 1) // 2, 0), (1.0, 0.0)
            idx[i, 1] = idx[i, 0]
        else:
            lo, hi = i // 2 - 1, i // 2
            if lo < 0:
                idx[i], w[i] = (hi, hi), (fine.lo / (fine.lo + fine.h), 0.0)
            elif hi >= nc:
                idx[i], w[i] = (lo, lo), (fine.hi / (fine.hi + fine.h), 0.0)
            else:
                idx[i], w[i] = (lo, hi), (0.5, 0.5)
    return idx, w


def _restrict_1d(fine: _Axis, coarse: _Axis, kind: str, pidx: np.ndarray, pw: np.ndarray) -> tuple[np.ndarray, ...]:
    """For every coarse cell the (unwrapped) fine cells it restricts from: ``R = P^T / 2`` (``/1`` if not halved)."""
    scale = 1.0 if kind == "same" else 0.5
    ratio = fine.n // coarse.n if coarse.periodic else 0
    rows: list[list[tuple[int, float]]] = [[] for _ in range(coarse.n)]
    for i in range(fine.n):
        for a in range(2):
            if pw[i, a] == 0.0:
                continue
            cu = int(pidx[i, a])
            c = cu % coarse.n
            rows[c].append((i + (c - cu) * ratio, scale * pw[i, a]))
    width = max(len(r) for r in rows)
    idx = np.zeros((coarse.n, width), dtype=np.int64)
    w = np.zeros((coarse.n, width))
    for c, r in enumerate(rows):
        for k, (i, v) in enumerate(r):
            idx[c, k], w[c, k] = i, v
        idx[c, len(r) :] = r[0][0]
    return idx, w


def _local(table: np.ndarray, lo: int, hi: int, offset: int, limit: int, what: str) -> np.ndarray:
    """Rows ``lo:hi`` of a global index table, shifted to a ghosted local array; range-checked."""
    out = table[lo:hi] - offset
    if out.size and (out.min() < 0 or out.max() >= limit):
        raise RuntimeError(f"multigrid {what} table reaches outside the ghosted block (internal error)")
    return np.ascontiguousarray(out)


class _Level:
    """One grid of the hierarchy on this rank (``decomp is None`` where this rank holds none of it)."""

    def __init__(self, axes: tuple[_Axis, ...], decomp: CartDecomp | None, finest: bool = False) -> None:
        self.axes = axes
        self.decomp = decomp
        self.ndim = len(axes)
        self.shape = tuple(a.n for a in axes)
        self.coef = tuple(1.0 / (a.h * a.h) for a in axes)
        self.transfer: _Transfer | None = None
        self.solver: _Direct | None = None
        if decomp is None:
            return
        halo = decomp.halo
        self.box = (*halo, *decomp.local_shape)
        self.shifts = []
        for d, a in enumerate(axes):
            s = np.zeros(decomp.ghosted_shape[d])
            s[halo[d] : halo[d] + decomp.local_shape[d]] = a.shift()[decomp.slices[d]]
            self.shifts.append(s)
        self.x, self.tmp, self.d = DistArray.zeros(decomp), DistArray.zeros(decomp), DistArray.zeros(decomp)
        self.b = None if finest else DistArray.zeros(decomp)
        self.r: DistArray | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def smooth_step(self, b: DistArray, a: float, w: float, chebyshev: bool) -> None:
        """One sweep from ``x`` into ``tmp``, then swap them (the caller zeroes ``d`` first)."""
        self.x.exchange_halos(corners=False)
        d = self.d.data if chebyshev else None
        if self.ndim == 2:
            mgk.smooth2(self.x.data, b.data, d, self.tmp.data, *self.box, *self.coef, *self.shifts, a, w)
        else:
            mgk.smooth3(self.x.data, b.data, d, self.tmp.data, *self.box, *self.coef, *self.shifts, a, w)
        self.x, self.tmp = self.tmp, self.x

    def residual(self, b: DistArray, r: DistArray, x: DistArray | None = None) -> float:
        """``r = b - A x`` (``x`` defaults to the level's iterate; ``r`` on any halo width); local ``||r||^2``."""
        x = self.x if x is None else x
        x.exchange_halos(corners=False)
        g = r.decomp.halo
        if self.ndim == 2:
            return mgk.residual2(x.data, b.data, r.data, *self.box, *g, *self.coef, *self.shifts)
        return mgk.residual3(x.data, b.data, r.data, *self.box, *g, *self.coef, *self.shifts)


class _Transfer:
    """Restriction / interpolation tables between a fine and a coarse level, on this rank.

    ``plans`` is set when the coarse level lives on one rank: the fine residual is
    moved there first (into ``r``) and the correction comes back from ``serial_e``
    (agglomeration).
    """

    plans: tuple[Redistribution, ...] | None = None
    r: DistArray | None = None
    serial_e: DistArray | None = None

    def __init__(
        self,
        fine_axes: tuple[_Axis, ...],
        coarse_axes: tuple[_Axis, ...],
        kinds: tuple[str, ...],
        fine: CartDecomp,
        coarse: CartDecomp,
        rdecomp: CartDecomp,
    ) -> None:
        self.rtab, self.ptab = [], []
        for d, (fa, ca, kind) in enumerate(zip(fine_axes, coarse_axes, kinds)):
            pidx, pw = _prolong_1d(fa, ca, kind)
            ridx, rw = _restrict_1d(fa, ca, kind, pidx, pw)
            c0, c1 = coarse.start[d], coarse.start[d] + coarse.local_shape[d]
            f0, f1 = fine.start[d], fine.start[d] + fine.local_shape[d]
            g, h = rdecomp.halo[d], coarse.halo[d]
            self.rtab += [_local(ridx, c0, c1, f0 - g, rdecomp.ghosted_shape[d], "restriction"), rw[c0:c1].copy()]
            self.ptab += [_local(pidx, f0, f1, c0 - h, coarse.ghosted_shape[d], "interpolation"), pw[f0:f1].copy()]
        self.coarse_halo = coarse.halo
        self.fine_halo = fine.halo
        self.ndim = len(kinds)
        # 2-D transfers run separably through a scratch of (fine rows x coarse columns), and back
        if self.ndim == 2:
            self._rtmp = np.zeros((rdecomp.ghosted_shape[0], coarse.local_shape[1]))
            self._ptmp = np.zeros((coarse.ghosted_shape[0], fine.local_shape[1]))

    def restrict(self, r: DistArray, out: DistArray) -> None:
        """``out = R r`` on the coarse owned cells (``r``'s ghosts exchanged here)."""
        r.exchange_halos()
        if self.ndim == 2:
            mgk.restrict2(r.data, out.data, *self.rtab, *self.coarse_halo, self._rtmp)
        else:
            mgk.restrict3(r.data, out.data, *self.rtab, *self.coarse_halo)

    def prolong(self, e: DistArray, x: DistArray) -> None:
        """``x += P e`` on the fine owned cells (``e``'s ghosts exchanged here)."""
        e.exchange_halos()
        if self.ndim == 2:
            mgk.prolong2(e.data, x.data, *self.ptab, *self.fine_halo, self._ptmp)
        else:
            mgk.prolong3(e.data, x.data, *self.ptab, *self.fine_halo)


class _Direct:
    """Exact solve of the coarsest level: SuperLU on one rank, gathered there if the level is distributed."""

    def __init__(self, level: _Level, comm: MPI.Comm) -> None:
        self.level = level
        self.comm = comm
        dec = level.decomp
        self.serial = dec.size == 1
        self.root = None
        self.plans: tuple[Redistribution, ...] = ()
        if not self.serial:
            one = comm.Split(0 if comm.Get_rank() == 0 else MPI.UNDEFINED, comm.Get_rank())
            self.root = None if one == MPI.COMM_NULL else _serial_decomp(level.axes, one, halo=0)
            self.plans = (Redistribution(dec, self.root, comm, np.float64),)
            self.bs = None if self.root is None else DistArray.zeros(self.root)
            self.xs = None if self.root is None else DistArray.zeros(self.root)
        if self.serial or self.root is not None:
            a = None
            for d, ax in enumerate(level.axes):
                t = ax.matrix()
                term = None
                for e, other in enumerate(level.axes):
                    f = t if e == d else sps.identity(other.n, format="csr")
                    term = f if term is None else sps.kron(term, f, format="csr")
                a = term if a is None else a + term
            self.singular = all(ax.periodic for ax in level.axes)
            if self.singular:  # pin one value: the zero-mean solution is recovered afterwards
                a = sps.lil_array(a)
                a[0, :] = 0
                a[:, 0] = 0
                a[0, 0] = 1.0
            self.lu = spla.splu(sps.csc_array(a))

    def solve(self, b: DistArray) -> None:
        """``x = A^-1 b`` on the level (collective over the level's ranks)."""
        lv = self.level
        if self.serial:
            lv.x.interior[...] = self._solve(b.interior).reshape(lv.decomp.local_shape)
            return
        self.plans[0].forward(b, self.bs)
        if self.root is not None:
            self.xs.interior[...] = self._solve(self.bs.interior).reshape(self.root.local_shape)
        self.plans[0].backward(self.xs, lv.x)

    def _solve(self, b: np.ndarray) -> np.ndarray:
        rhs = b.reshape(-1).astype(np.float64, copy=True)
        if self.singular:
            rhs -= rhs.mean()
            rhs[0] = 0.0
            x = self.lu.solve(rhs)
            return x - x.mean()
        return self.lu.solve(rhs)


def _serial_decomp(axes: tuple[_Axis, ...], comm: MPI.Comm, halo: int) -> CartDecomp:
    return CartDecomp(
        tuple(a.n for a in axes), comm, dims=(1,) * len(axes), periodic=[a.periodic for a in axes], halo=halo
    )


def _sizes(decomp_cuts: tuple[tuple[int, ...], ...]) -> list[list[int]]:
    return [[c[k + 1] - c[k] for k in range(len(c) - 1)] for c in decomp_cuts]


class Multigrid:
    """Geometric multigrid solver and preconditioner for a :class:`~hpcml.linalg.poisson.PoissonOperator`.

    Parameters
    ----------
    op
        The fine-grid operator (2-D or 3-D, Dirichlet and/or periodic, any process grid).
    levels
        Most levels in the hierarchy (``None``: coarsen until the coarsest grid
        has at most ``coarse_size`` cells or no dimension can be halved).
    smoother
        ``"jacobi"`` or ``"chebyshev"``.
    cycle
        ``"V"`` or ``"W"``.
    sweeps
        Smoothing steps (Jacobi sweeps, or the Chebyshev degree) before and after
        the coarse-grid correction.
    coarse_size
        Largest grid solved directly.
    agglomerate_below
        Move the hierarchy onto one rank once a coarse block would have fewer
        cells than this along a split dimension.
    direct_max
        Refuse (``ValueError``) a coarsest grid larger than this (it could not
        be coarsened further: periodic dimensions of odd size, or ``levels``).

    Attributes
    ----------
    hierarchy : list of dict
        Per level: ``shape``, ``spacing``, process grid ``dims`` and ``ranks``
        (after agglomeration, 1).
    stats : dict
        ``cycles`` applied and their total ``seconds``.
    """

    symmetric = True

    def __init__(
        self,
        op: PoissonOperator,
        levels: int | None = None,
        smoother: str = "jacobi",
        cycle: str = "V",
        sweeps: int = 2,
        coarse_size: int = 2000,
        agglomerate_below: int = 8,
        direct_max: int = 250_000,
    ) -> None:
        if not isinstance(op, PoissonOperator):
            raise TypeError(f"Multigrid is built on a PoissonOperator, got {type(op).__name__}")
        if smoother not in SMOOTHERS:
            raise ValueError(f"smoother must be one of {SMOOTHERS}, got {smoother!r}")
        if cycle not in CYCLES:
            raise ValueError(f"cycle must be one of {tuple(CYCLES)}, got {cycle!r}")
        if int(sweeps) < 1 or int(coarse_size) < 1 or int(agglomerate_below) < 2:
            raise ValueError("sweeps and coarse_size must be >= 1 and agglomerate_below >= 2")
        if levels is not None and int(levels) < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        if op.dtype != np.float64:
            raise TypeError("Multigrid runs in float64")
        self.op = op
        self.layout: Layout = op.layout
        self.smoother, self.cycle, self.sweeps = smoother, cycle, int(sweeps)
        self.gamma = CYCLES[cycle]
        self.stats: dict[str, float] = {"cycles": 0, "seconds": 0.0}
        ndim = op.ndim
        lam_lo = 0.5 if ndim == 2 else 1.0 / 3.0
        self._range = (lam_lo, 2.0)  # high-frequency part of the spectrum of D^-1 A (Gershgorin: <= 2)
        self._omega = 2.0 / (lam_lo + 2.0)
        axes = tuple(
            _Axis(n, h, p, h, h) for n, h, p in zip(op.shape, op.spacing, op.periodic)
        )  # the PoissonOperator's walls are one spacing away (ghost = 0)
        finest = _Level(axes, op.decomp, finest=True)
        self.levels: list[_Level] = [finest]
        self._build(int(levels) if levels is not None else 10**6, int(coarse_size), int(agglomerate_below))
        coarsest = self.levels[-1]
        if coarsest.size > direct_max:  # a global fact: every rank raises
            raise ValueError(
                f"multigrid: the coarsest grid {coarsest.shape} ({coarsest.size} cells) cannot be coarsened "
                f"further (periodic dimensions of odd size, or levels={levels}) and is too large for a direct "
                f"solve (direct_max={direct_max}); use sizes with more factors of two"
            )
        if coarsest.decomp is not None:
            coarsest.solver = _Direct(coarsest, coarsest.decomp.cart)
        self.hierarchy = [
            {"shape": lv.shape, "spacing": tuple(a.h for a in lv.axes), "dims": lv.dims, "ranks": lv.ranks}
            for lv in self.levels
        ]

    # -- setup -------------------------------------------------------------------------------
    def _build(self, max_levels: int, coarse_size: int, agglomerate_below: int) -> None:
        """Coarsen until small enough; every rank builds the same geometry (ranks off a level hold ``None``)."""
        fine = self.levels[0]
        fine.dims, fine.ranks = fine.decomp.dims, fine.decomp.size
        while len(self.levels) < max_levels and fine.size > coarse_size:
            hmin = min(a.h for a in fine.axes)
            plan = [a.coarsened() if a.h < 1.5 * hmin else None for a in fine.axes]
            if all(p is None for p in plan):
                break
            kinds = tuple("same" if p is None else p[0] for p in plan)
            caxes = tuple(a if p is None else p[1] for a, p in zip(fine.axes, plan))
            dec = fine.decomp
            if dec is None:  # this rank left the hierarchy at an agglomeration: geometry only
                coarse = _Level(caxes, None)
                coarse.dims, coarse.ranks = (1,) * len(caxes), 1
            else:
                coarse = self._coarse_level(fine, caxes, kinds, agglomerate_below)
            self.levels.append(coarse)
            fine = coarse

    def _coarse_level(
        self, fine: _Level, caxes: tuple[_Axis, ...], kinds: tuple[str, ...], agglomerate_below: int
    ) -> _Level:
        dec = fine.decomp
        fcuts = cuts(dec)
        ccuts = []
        for d, kind in enumerate(kinds):
            if kind == "same":
                ccuts.append(fcuts[d])
            else:  # the coarse cell goes with its first fine child (cell: 2c, vertex: 2c + 1)
                off = 0 if kind == "cell" else 1
                ccuts.append((*((f - off + 1) // 2 for f in fcuts[d][:-1]), caxes[d].n))
        sizes = _sizes(tuple(ccuts))
        split = [d for d in range(fine.ndim) if dec.dims[d] > 1]
        small = any(min(sizes[d]) < agglomerate_below or min(_sizes(fcuts)[d]) < 2 for d in split)
        if small:
            fine.r = DistArray.zeros(BlockDecomp(_sizes(fcuts), dec.cart, periodic=dec.periodic, halo=0))
            return self._agglomerate(fine, caxes, kinds)
        rdecomp = BlockDecomp(_sizes(fcuts), dec.cart, periodic=dec.periodic, halo=2)
        fine.r = DistArray.zeros(rdecomp)
        cdec = BlockDecomp(sizes, dec.cart, periodic=[a.periodic for a in caxes], halo=1)
        coarse = _Level(caxes, cdec)
        fine.transfer = _Transfer(fine.axes, caxes, kinds, dec, cdec, rdecomp)
        coarse.dims, coarse.ranks = cdec.dims, cdec.size
        return coarse

    def _agglomerate(self, fine: _Level, caxes: tuple[_Axis, ...], kinds: tuple[str, ...]) -> _Level:
        """The coarse level on one rank; the transfer moves the fine residual there and the correction back."""
        comm = fine.decomp.cart
        one = comm.Split(0 if comm.Get_rank() == 0 else MPI.UNDEFINED, comm.Get_rank())
        here = one != MPI.COMM_NULL
        fr = _serial_decomp(fine.axes, one, halo=2) if here else None
        fx = _serial_decomp(fine.axes, one, halo=1) if here else None
        cdec = _serial_decomp(caxes, one, halo=1) if here else None
        coarse = _Level(caxes, cdec)
        coarse.dims, coarse.ranks = (1,) * len(caxes), 1
        transfer = _Transfer(fine.axes, caxes, kinds, fx, cdec, fr) if here else _Transfer.__new__(_Transfer)
        transfer.plans = (
            Redistribution(fine.r.decomp, fr, comm, np.float64),
            Redistribution(fine.decomp, fx, comm, np.float64),
        )
        transfer.r = DistArray.zeros(fr) if here else None
        transfer.serial_e = DistArray.zeros(fx) if here else None
        fine.transfer = transfer
        return coarse

    # -- cycles ------------------------------------------------------------------------------
    def _smooth(self, lv: _Level, b: DistArray) -> None:
        if self.smoother == "jacobi":
            for _ in range(self.sweeps):
                lv.smooth_step(b, 0.0, self._omega, False)
            return
        lo, hi = self._range
        theta, delta = (hi + lo) / 2, (hi - lo) / 2
        sigma = theta / delta
        rho = 1.0 / sigma
        lv.d.interior[...] = 0.0
        lv.smooth_step(b, 0.0, 1.0 / theta, True)
        for _ in range(1, self.sweeps):
            rho_new = 1.0 / (2 * sigma - rho)
            lv.smooth_step(b, rho_new * rho, 2 * rho_new / delta, True)
            rho = rho_new

    def _cycle(self, k: int, b: DistArray) -> None:
        """Improve ``levels[k].x`` for right-hand side ``b`` (collective over the level's ranks)."""
        lv = self.levels[k]
        if lv.solver is not None:
            lv.solver.solve(b)
            return
        self._smooth(lv, b)
        lv.residual(b, lv.r)
        t = lv.transfer
        coarse = self.levels[k + 1]
        if t.plans is None:
            t.restrict(lv.r, coarse.b)
            coarse.x.interior[...] = 0.0
            for _ in range(self.gamma):
                self._cycle(k + 1, coarse.b)
            t.prolong(coarse.x, lv.x)
        else:
            t.plans[0].forward(lv.r, t.r)
            if coarse.decomp is not None:
                t.restrict(t.r, coarse.b)
                coarse.x.interior[...] = 0.0
                for _ in range(self.gamma):
                    self._cycle(k + 1, coarse.b)
                t.serial_e.interior[...] = 0.0
                t.prolong(coarse.x, t.serial_e)
            t.plans[1].backward(t.serial_e, lv.tmp)
            lv.x.interior[...] += lv.tmp.interior
        self._smooth(lv, b)

    def check_layout(self, layout: Layout) -> None:
        """Raise ``ValueError`` unless the solver's vectors are this operator's (same grid and blocks)."""
        if layout.decomp.shape != self.layout.decomp.shape or layout.decomp.dims != self.layout.decomp.dims:
            raise ValueError(
                f"the multigrid preconditioner was built for {self.layout.decomp.shape} on process grid "
                f"{self.layout.decomp.dims}, the solver's vectors are {layout.decomp.shape} on {layout.decomp.dims}"
            )

    def apply(self, r: DistArray, z: DistArray) -> None:
        """``z = B r``: one cycle from a zero guess (the preconditioner; collective)."""
        t0 = time.perf_counter()
        b = self.layout.adopt(r, "r")
        finest = self.levels[0]
        finest.x.interior[...] = 0.0
        self._cycle(0, b)
        z.interior[...] = finest.x.interior
        self.stats["cycles"] += 1
        self.stats["seconds"] += time.perf_counter() - t0

    # -- standalone solver ---------------------------------------------------------------------
    def solve(
        self,
        b: DistArray,
        x0: DistArray | None = None,
        rtol: float = 1e-8,
        maxiter: int = 100,
        callback: Callable[[int, float, DistArray], Any] | None = None,
        *,
        atol: float = 0.0,
    ) -> tuple[DistArray, SolveInfo]:
        """Multigrid iteration ``x += B (b - A x)`` until ``||b - A x|| < max(rtol ||b||, atol)`` (collective).

        Every residual recorded is the true one, so convergence is declared on
        it.  Returns ``(x, info)`` as :func:`~hpcml.linalg.cg.cg`.
        """
        layout, op = self.layout, self.op
        b, x = solve_vectors(layout, b, x0)
        info = SolveInfo("multigrid")
        t0, ex0, mv0 = time.perf_counter(), op.stats["start_s"] + op.stats["wait_s"], op.stats["matvecs"]
        r, z = layout.zeros(), layout.zeros()
        finest = self.levels[0]

        def residual() -> float:
            return float(allreduce_sum(layout.comm, finest.residual(b, r, x))[0])

        bnorm2 = allreduce_sum(layout.comm, layout.dot(b, b))[0]
        history, done = _begin(info, x, bnorm2, residual(), rtol, atol)
        k = 0
        while not done and k < maxiter:
            k += 1
            self.apply(r, z)
            x.interior[...] += z.interior
            done = _after_iteration(info, history, k, math.sqrt(max(residual(), 0.0)), rtol, atol, callback, x)
        finalize_info(op, info, layout, b, x, history, t0, ex0, mv0, true_residual=True)
        return x, info
