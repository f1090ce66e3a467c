"""Matrix-free Poisson: equals the assembled matrix and the serial stencil, 2nd-order convergence, Jacobi."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hpcml.kernels import laplacian
from hypothesis import given, settings
from hypothesis import strategies as st
from linalg_helpers import poisson_scipy, raises_everywhere, rel_err
from mpi4py import MPI

from hpcml import CartDecomp, DistArray
from hpcml.linalg import PoissonOperator, cg, jacobi, manufactured, poisson_matrix
from hpcml.testing import assert_all


def _serial_neg_lap(g, periodic, spacing):
    """``-Laplacian`` of a global array through hpcml.kernels.laplacian on a padded copy."""
    pad = np.zeros(tuple(n + 2 for n in g.shape))
    pad[tuple(slice(1, -1) for _ in g.shape)] = g
    wrapped = np.pad(g, 1, mode="wrap")
    for d, p in enumerate(periodic):
        if p:  # copy the wrapped faces of this axis (edges/corners are not read)
            for dst in (0, -1):
                sl = [slice(1, -1)] * g.ndim
                sl[d] = dst
                pad[tuple(sl)] = wrapped[tuple(sl)]
    out = np.zeros_like(pad)
    laplacian(pad, out, spacing)
    return -out[tuple(slice(1, -1) for _ in g.shape)]


@pytest.mark.mpi
@settings(max_examples=20)
@given(data=st.data())
def test_matvec_equals_assembled_and_serial_stencil(comm, data):
    ndim = data.draw(st.sampled_from([2, 3]), label="ndim")
    dims = MPI.Compute_dims(comm.size, ndim)
    halo = data.draw(st.sampled_from([1, 2]), label="halo")
    shape = tuple(data.draw(st.integers(max(2, p * halo), p * halo + 6)) for p in dims)
    periodic = tuple(data.draw(st.booleans()) for _ in range(ndim))
    spacing = tuple(data.draw(st.sampled_from([1.0, 0.5, 0.3])) for _ in range(ndim))
    d = CartDecomp(shape, comm, periodic=periodic, halo=halo)
    op = PoissonOperator(d, spacing=spacing)
    rng = np.random.default_rng(sum(shape))
    g = rng.standard_normal(shape)
    x = op.create_vector(g if comm.rank == 0 else None)
    x.data[...] = np.where(x.data == x.data, x.data, 0)
    ghosts = np.ones(x.data.shape, bool)
    ghosts[d.interior] = False
    x.data[ghosts] = np.nan  # stale ghosts must not leak into the product
    y = op.matvec(x)
    A = op.to_matrix()
    ya = A.matvec(A.create_vector(g.ravel() if comm.rank == 0 else None))
    ref = _serial_neg_lap(g, periodic, spacing)
    ok = rel_err(y.allgather(), ref) <= 1e-13
    ok &= rel_err(ya.allgather().reshape(shape), ref) <= 1e-13
    if shape == tuple(max(n, 3) for n in shape):  # scipy reference without duplicate wrap entries
        ok &= rel_err(poisson_scipy(shape, periodic, spacing) @ g.ravel(), ref.ravel()) <= 1e-13
    assert_all(comm, ok, f"shape={shape} periodic={periodic} halo={halo} spacing={spacing}")
    A.free()
    d.free()


@pytest.mark.mpi
def test_other_layouts_and_fused_dot(comm):
    shape = (14, 11)
    d1 = CartDecomp(shape, comm, halo=1)
    d0 = CartDecomp(shape, comm, halo=0)
    op = PoissonOperator(d1)
    f = lambda i, j: np.sin(0.4 * i) + np.cos(0.3 * j)  # noqa: E731
    x0 = DistArray.from_global(d0, f)  # no ghosts: copied into the operator's layout
    y0 = DistArray.zeros(d0)
    op.matvec(x0, y0)
    x1 = op.create_vector(f)
    y1 = op.matvec(x1)
    y2 = op.create_vector()
    s = comm.allreduce(op.matvec_dot(x1, y2))
    ok = np.array_equal(y0.interior, y1.interior) and np.array_equal(y1.interior, y2.interior)
    ok &= abs(s - x1.dot(y1)) <= 1e-12 * abs(s)
    ok &= raises_everywhere(comm, ValueError, lambda: op.matvec(x1, x1), "must not be x")
    assert_all(comm, ok)


def _solve_error(comm, n, ndim, periodic):
    d = CartDecomp((n,) * ndim, comm, periodic=periodic)
    op = PoissonOperator(d)
    u, f = manufactured(op)
    x, info = cg(op, f, rtol=1e-12, M="jacobi")
    diff = x.copy()
    diff.interior[...] -= u.interior
    return float(comm.allreduce(np.abs(diff.interior).max(), op=MPI.MAX)), info


@pytest.mark.mpi
@pytest.mark.parametrize(("ndim", "periodic", "sizes"), [(2, False, (15, 31, 63)), (3, (True, False, True), (8, 16))])
def test_manufactured_second_order(comm, ndim, periodic, sizes):
    errs = []
    for n in sizes:
        e, info = _solve_error(comm, n, ndim, periodic)
        errs.append(e)
        assert_all(comm, info.converged, str(info))
    # h halves each time (Dirichlet: h = 1/(n+1), periodic: 1/n), so the error falls ~4x
    orders = [np.log2(a / b) for a, b in itertools.pairwise(errs)]
    assert_all(comm, all(1.85 <= o <= 2.15 for o in orders), f"errors {errs}, orders {orders}")


def _serial_jacobi(g_b, periodic, spacing, sweeps):
    inv = [1.0 / h**2 for h in spacing]
    diag = 2 * sum(inv)
    x = np.zeros_like(g_b)
    for _ in range(sweeps):
        x = x + (g_b - _serial_neg_lap(x, periodic, spacing)) / diag
    return x


@pytest.mark.mpi
def test_jacobi_matches_serial_and_converges(comm):
    shape, periodic = (12, 9), (False, True)
    d = CartDecomp(shape, comm, periodic=periodic)
    op = PoissonOperator(d, spacing=1.0)
    bfun = lambda i, j: np.cos(0.7 * i) * np.sin(2 * np.pi * j / 9) + 0.5  # noqa: E731
    b = op.create_vector(bfun)
    x, info = jacobi(op, b, rtol=0.0, maxiter=7, check_every=3)
    ref = _serial_jacobi(b.allgather(), periodic, (1.0, 1.0), 7)
    ok = rel_err(x.allgather(), ref) <= 1e-13
    ok &= info.iterations == 7 and list(info.residual_iterations) == [0, 3, 6, 7] and info.reason == "maxiter"
    xj, infoj = jacobi(op, b, rtol=1e-8, maxiter=20000, check_every=25)
    xc, _ = cg(op, b, rtol=1e-12)
    ok &= infoj.converged and infoj.residuals[-1] < infoj.tol and rel_err(xj.allgather(), xc.allgather()) <= 1e-6
    ok &= np.isclose(infoj.true_residual, infoj.residuals[-1], rtol=1e-6)
    assert_all(comm, ok, f"{info} {infoj.iterations} {infoj.reason}")


@pytest.mark.mpi
def test_operator_errors(comm):
    ok = raises_everywhere(comm, ValueError, lambda: PoissonOperator(CartDecomp((4 * comm.size,), comm)), "2-D or 3-D")
    ok &= raises_everywhere(comm, ValueError, lambda: PoissonOperator(CartDecomp((8, 8), comm, halo=0)), "halo")
    ok &= raises_everywhere(comm, ValueError, lambda: PoissonOperator(CartDecomp((8, 8), comm, halo=(1, 2))), "halo")
    ok &= raises_everywhere(comm, ValueError, lambda: PoissonOperator(CartDecomp((8, 8), comm), spacing=-1), "spacing")
    op = PoissonOperator(CartDecomp((8, 8), comm))
    A = poisson_matrix((8, 8), comm)
    ok &= raises_everywhere(comm, TypeError, lambda: jacobi(A, op.create_vector()), "PoissonOperator")
    ok &= raises_everywhere(comm, ValueError, lambda: jacobi(op, op.create_vector(), check_every=0), "check_every")
    ok &= raises_everywhere(comm, ValueError, lambda: op.matvec(DistArray.zeros(CartDecomp((8, 9), comm))), "shape")
    ok &= raises_everywhere(comm, ValueError, lambda: manufactured(op, modes=(1,)), "modes")
    assert_all(comm, ok)
    A.free()
