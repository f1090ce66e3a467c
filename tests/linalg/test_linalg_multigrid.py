"""Geometric multigrid: convergence, rank-count and grid-size independence, symmetry, agglomeration, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st
from linalg_helpers import poisson_scipy
from mpi4py import MPI

from hpcml import CartDecomp
from hpcml.linalg import Multigrid, PoissonOperator, cg
from hpcml.testing import assert_all


def _rhs(shape):
    def f(*idx):
        v = 1.0
        for i, n in zip(idx, shape):
            v = v * np.sin(2 * np.pi * (i + 0.5) / n + 0.3) + 0.1 * i / n
        return np.asarray(v, dtype=float)

    return f


def _problem(comm, shape, periodic, **mg_args):
    d = CartDecomp(shape, comm, periodic=periodic)
    op = PoissonOperator(d)
    b = op.create_vector(_rhs(shape))
    if all(periodic):  # singular: b must have zero mean
        b.interior[...] -= b.mean()
    return d, op, b, Multigrid(op, **mg_args)


def _serial_counts(shape, periodic, **mg_args):
    """Iteration counts of MG-CG and MG alone on this rank alone (the one-rank reference)."""
    d, op, b, mg = _problem(MPI.COMM_SELF, shape, periodic, **mg_args)
    counts = (cg(op, b, rtol=1e-8, M=mg)[1].iterations, mg.solve(b, rtol=1e-8)[1].iterations)
    d.free()
    return counts


CASES = [
    ((48, 40), (False, False), {}),
    ((37, 50), (False, True), {"smoother": "chebyshev"}),
    ((64, 32), (True, True), {"cycle": "W"}),
    ((20, 17, 12), (False, False, False), {}),
    ((16, 24, 16), (True, False, True), {"smoother": "chebyshev", "sweeps": 3}),
]


@pytest.mark.mpi
@pytest.mark.parametrize(("shape", "periodic", "args"), CASES)
def test_solves_like_scipy_and_counts_do_not_depend_on_ranks(comm, shape, periodic, args):
    d, op, b, mg = _problem(comm, shape, periodic, coarse_size=64, agglomerate_below=4, **args)
    x, info = cg(op, b, rtol=1e-8, M=mg)
    y, alone = mg.solve(b, rtol=1e-8)
    a = poisson_scipy(shape, periodic, spacing=op.spacing)
    bg = b.allgather().ravel()
    ok = info.converged and alone.converged and info.iterations <= 12 and alone.iterations <= 25
    for sol in (x.allgather().ravel(), y.allgather().ravel()):
        ok &= np.linalg.norm(bg - a @ sol) < 1.01e-8 * np.linalg.norm(bg)
    if not all(periodic):
        ref = spla.spsolve(a.tocsc(), bg)
        ok &= np.linalg.norm(x.allgather().ravel() - ref) < 1e-6 * np.linalg.norm(ref)
    serial = _serial_counts(shape, periodic, coarse_size=64, agglomerate_below=4, **args)
    ok &= (info.iterations, alone.iterations) == serial
    assert_all(comm, bool(ok), f"{shape} {periodic} {args}: cg {info.iterations} mg {alone.iterations} serial {serial}")
    d.free()


@pytest.mark.mpi
@pytest.mark.parametrize("ndim", [2, 3])
def test_iteration_counts_do_not_grow_with_the_grid(comm, ndim):
    sizes = [32, 64, 128, 256] if ndim == 2 else [12, 24, 48]
    counts = []
    for n in sizes:
        d, op, b, mg = _problem(comm, (n,) * ndim, (False,) * ndim, coarse_size=64)
        counts.append((cg(op, b, rtol=1e-8, M=mg)[1].iterations, mg.solve(b, rtol=1e-8)[1].iterations))
        d.free()
    cgs, mgs = [c[0] for c in counts], [c[1] for c in counts]
    ok = max(cgs) - min(cgs) <= 2 and max(mgs) - min(mgs) <= 3 and max(cgs) <= 11
    assert_all(comm, ok, f"{ndim}-D counts (cg, mg) per size {sizes}: {counts}")


@pytest.mark.mpi
def test_preconditioner_is_symmetric_and_positive(comm):
    d, op, _b, mg = _problem(comm, (30, 22), (False, True), coarse_size=32, agglomerate_below=4)
    u = op.create_vector(lambda i, j: np.cos(0.7 * i + 0.2 * j * j))
    v = op.create_vector(lambda i, j: np.sin(0.3 * i * j + 1.0))
    bu, bv = op.layout.zeros(), op.layout.zeros()
    mg.apply(u, bu)
    mg.apply(v, bv)
    uv, vu, uu = bu.dot(v), bv.dot(u), bu.dot(u)
    ok = abs(uv - vu) <= 1e-12 * abs(uv) and uu > 0
    assert_all(comm, ok, f"(Bu).v={uv!r} u.(Bv)={vu!r} (Bu).u={uu!r}")
    d.free()


@pytest.mark.mpi
@settings(max_examples=8)
@given(data=st.data())
def test_agglomeration_point_does_not_change_the_iterates(comm, data):
    ndim = data.draw(st.integers(2, 3))
    shape = tuple(data.draw(st.integers(max(8, 2 * comm.size), 40 if ndim == 2 else 14)) for _ in range(ndim))
    periodic = tuple(data.draw(st.booleans()) for _ in range(ndim))
    if any(p and n % 2 for p, n in zip(periodic, shape)):
        shape = tuple(n + (n % 2 if p else 0) for n, p in zip(shape, periodic))
    late = _problem(comm, shape, periodic, coarse_size=16, agglomerate_below=2)
    early = _problem(comm, shape, periodic, coarse_size=16, agglomerate_below=10**6)
    xs = [cg(op, b, rtol=1e-10, M=mg, maxiter=20)[0].allgather() for _, op, b, mg in (late, early)]
    ok = np.allclose(xs[0], xs[1], rtol=1e-9, atol=1e-12 * np.abs(xs[0]).max())
    ok &= [h["shape"] for h in late[3].hierarchy] == [h["shape"] for h in early[3].hierarchy]
    assert_all(comm, bool(ok), f"{shape} {periodic}")
    for d, *_ in (late, early):
        d.free()


@pytest.mark.mpi
def test_bad_arguments_fail_everywhere(comm):
    d = CartDecomp((9, 9), comm, periodic=True)
    op = PoissonOperator(d)
    with pytest.raises(ValueError, match="cannot be coarsened"):
        Multigrid(op, direct_max=50)
    with pytest.raises(ValueError, match="smoother"):
        Multigrid(op, smoother="gauss-seidel")
    with pytest.raises(ValueError, match="cycle"):
        Multigrid(op, cycle="F")
    with pytest.raises(TypeError, match="PoissonOperator"):
        Multigrid(op.to_matrix())
    other = CartDecomp((9, 10), comm)
    with pytest.raises(ValueError, match="built for"):
        cg(PoissonOperator(other), PoissonOperator(other).create_vector(), M=Multigrid(op))
    assert_all(comm, True)
    d.free()
    other.free()
