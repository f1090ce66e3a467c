"""GMRES and BiCGStab against SciPy on random non-symmetric matrices; preconditioner objects; errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st
from linalg_helpers import poisson_scipy

from hpcml import CartDecomp
from hpcml.linalg import DistCSR, PoissonOperator, bicgstab, cg, gmres
from hpcml.testing import assert_all

SOLVERS = {"gmres": gmres, "bicgstab": bicgstab}


def random_nonsymmetric(n, seed, density=0.15, dominance=1.2):
    """A sparse non-symmetric matrix, row diagonally dominant with a positive diagonal (the same on every rank).

    Its eigenvalues lie in the right half plane (Gershgorin), where GMRES and
    BiCGStab converge steadily; with diagonals of both signs BiCGStab's counts
    depend on rounding after a few iterations, in SciPy as here.
    """
    rng = np.random.default_rng(seed)
    a = sps.random_array((n, n), density=density, rng=rng, format="csr", data_sampler=rng.standard_normal)
    a = sps.csr_array(a - sps.diags_array(a.diagonal()))
    row = np.abs(a).sum(axis=1)
    return sps.csr_array(a + sps.diags_array(dominance * row + 1.0))


def scipy_count(name, a, b, rtol):
    """SciPy's solution and its (inner) iteration count."""
    count = [0]

    def tick(_):
        count[0] += 1

    if name == "gmres":
        x, status = spla.gmres(a, b, rtol=rtol, atol=0.0, restart=30, callback=tick, callback_type="pr_norm")
    else:
        x, status = spla.bicgstab(a, b, rtol=rtol, atol=0.0, callback=tick)
    return x, count[0], status


@pytest.mark.mpi
@settings(max_examples=15)
@given(data=st.data())
def test_matches_scipy_on_random_nonsymmetric(comm, data):
    n = data.draw(st.integers(max(comm.size, 5), 90), label="n")
    seed = data.draw(st.integers(0, 10**6), label="seed")
    name = data.draw(st.sampled_from(sorted(SOLVERS)), label="solver")
    jacobi = data.draw(st.booleans(), label="jacobi")
    dominance = data.draw(st.sampled_from([1.1, 2.0]), label="dominance")
    rtol = 1e-8
    a = random_nonsymmetric(n, seed, dominance=dominance)
    bg = np.random.default_rng(seed + 1).standard_normal(n)
    A = DistCSR.from_scipy(a if comm.rank == 0 else None, comm)
    b = A.create_vector(bg if comm.rank == 0 else None)
    x, info = SOLVERS[name](A, b, rtol=rtol, M="jacobi" if jacobi else None)
    # right preconditioning by D^-1 is SciPy on A D^-1 with no preconditioner
    dinv = sps.diags_array(1.0 / a.diagonal())
    ref_a = sps.csr_array(a @ dinv) if jacobi else a
    _, its, status = scipy_count(name, ref_a, bg, rtol)
    xg = x.allgather()
    true = np.linalg.norm(bg - a @ xg)
    ok = info.converged and status == 0 and info.reason == "rtol"
    ok &= true < rtol * np.linalg.norm(bg) and np.isclose(
        info.true_residual, true, rtol=1e-6, atol=1e-12 * np.linalg.norm(bg)
    )
    ok &= abs(info.iterations - its) <= 2
    ok &= len(info.residuals) == info.iterations + 1 and info.residuals[-1] < info.tol
    assert_all(comm, bool(ok), f"{name} n={n} seed={seed} jacobi={jacobi}: {info.iterations} vs scipy {its}")
    A.free()


@pytest.mark.mpi
@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("pre", [None, "jacobi", "block-ilu"])
def test_preconditioned_poisson_converges_on_the_true_residual(comm, name, pre):
    shape = (23, 17)
    d = CartDecomp(shape, comm, periodic=(False, True))
    op = PoissonOperator(d)
    b = op.create_vector(lambda i, j: np.cos(0.3 * i) + 0.01 * j * j - 0.1)
    seen = []

    def cb(k, rnorm, x):
        seen.append((k, rnorm, x.norm()))

    x, info = SOLVERS[name](op, b, rtol=1e-9, M=pre, callback=cb)
    a = poisson_scipy(shape, (False, True), spacing=(1 / 24, 1 / 17))
    bg, xg = b.allgather().ravel(), x.allgather().ravel()
    ok = info.converged and np.linalg.norm(bg - a @ xg) < 1e-9 * np.linalg.norm(bg)
    ok &= [k for k, _, _ in seen] == list(range(1, len(seen) + 1)) and len(seen) >= info.iterations - 1
    ok &= info.matvecs >= info.iterations
    assert_all(comm, bool(ok), f"{name} M={pre}: {info}")
    d.free()


@pytest.mark.mpi
def test_block_ilu_cuts_iterations_and_cg_takes_any_preconditioner(comm):
    shape = (40, 30)
    d = CartDecomp(shape, comm)
    op = PoissonOperator(d)
    b = op.create_vector(lambda i, j: np.sin(0.2 * i) * np.cos(0.1 * j) + 0.3)
    its = {M: gmres(op, b, rtol=1e-8, M=M)[1].iterations for M in (None, "jacobi", "block-ilu")}
    _, plain = cg(op, b, rtol=1e-8)
    _, ilu = cg(op, b, rtol=1e-8, M="block-ilu")

    class Scaled:  # any object with apply(r, z): here 1/diag, as Jacobi
        def apply(self, r, z):
            z.interior[...] = r.interior / op.diagonal().interior

    _, custom = cg(op, b, rtol=1e-8, M=Scaled())
    _, jac = cg(op, b, rtol=1e-8, M="jacobi")
    ok = its["block-ilu"] < its[None] and ilu.iterations < plain.iterations and ilu.converged
    ok &= custom.iterations == jac.iterations and custom.converged
    assert_all(comm, bool(ok), f"{its} cg {plain.iterations} ilu {ilu.iterations} custom {custom.iterations}")
    d.free()


@pytest.mark.mpi
def test_bad_preconditioners_fail_everywhere(comm):
    d = CartDecomp((8, 6), comm)
    op = PoissonOperator(d)
    b = op.create_vector(lambda i, j: 1.0 + 0 * i * j)
    with pytest.raises(ValueError, match="M must be"):
        gmres(op, b, M="amg")
    with pytest.raises(TypeError, match="apply"):
        bicgstab(op, b, M=3)
    with pytest.raises(ValueError, match="restart"):
        gmres(op, b, restart=0)
    assert_all(comm, True)
    d.free()


def _ilu0_dense(a):
    """Reference ILU(0) of a dense matrix on its nonzero pattern plus the diagonal: (L, U)."""
    n = a.shape[0]
    pattern = (a != 0) | np.eye(n, dtype=bool)
    lu = a.astype(np.float64).copy()
    for i in range(1, n):
        for k in range(i):
            if pattern[i, k]:
                lu[i, k] /= lu[k, k]
                for j in range(k + 1, n):
                    if pattern[i, j]:
                        lu[i, j] -= lu[i, k] * lu[k, j]
    return np.tril(lu, -1) + np.eye(n), np.triu(lu)


def test_block_ilu_with_a_missing_diagonal_entry_matches_ilu0():
    # a diagonal entry not stored must join the pattern as a zero (SciPy drops the
    # zeros of a sum, so adding a zero diagonal did not store it: garbage factors)
    from mpi4py import MPI

    from hpcml.linalg.precond import BlockILU

    n = 8
    s = sps.diags_array([-np.ones(n - 1), 4 * np.ones(n), -np.ones(n - 1)], offsets=[-1, 0, 1]).tolil()
    s[n - 1, n - 1] = 0.0
    s = sps.csr_array(s)
    s.eliminate_zeros()
    A = DistCSR.from_scipy(s, MPI.COMM_SELF)
    pre = BlockILU(A, A.layout)
    r = A.create_vector(np.arange(1.0, n + 1))
    z = A.create_vector(np.zeros(n))
    pre.apply(r, z)
    low, up = _ilu0_dense(s.toarray())
    ref = np.linalg.solve(up, np.linalg.solve(low, np.arange(1.0, n + 1)))
    np.testing.assert_allclose(z.allgather(), ref, rtol=1e-12)
    # an empty row is a zero pivot: refused, not factored
    e = s.tolil()
    e[3, :] = 0.0
    e = sps.csr_array(e)
    e.eliminate_zeros()
    E = DistCSR.from_scipy(e, MPI.COMM_SELF)
    with pytest.raises(ValueError, match="zero pivot"):
        BlockILU(E, E.layout)


@pytest.mark.mpi
def test_float32_operator_passes_the_symmetry_check(comm):
    # the symmetry check's tolerance follows the operator's precision (float32 CG used
    # to be refused as "not symmetric" by a float64 tolerance)
    n = 4 * comm.size + 3
    s = sps.diags_array([-np.ones(n - 1), 4 * np.ones(n), -np.ones(n - 1)], offsets=[-1, 0, 1]).astype(np.float32)
    A = DistCSR.from_scipy(sps.csr_array(s) if comm.rank == 0 else None, comm)
    b = A.create_vector(lambda i: np.ones_like(i, dtype=np.float32))
    x, info = cg(A, b, rtol=1e-5)
    ref = spla.spsolve(sps.csc_array(s.astype(np.float64)), np.ones(n))
    ok = info.converged and x.dtype == np.float32 and np.allclose(x.allgather(), ref, rtol=1e-4)
    # a float32 matrix that is not symmetric is still refused
    ns = sps.csr_array(s + sps.diags_array([0.5 * np.ones(n - 1)], offsets=[1]).astype(np.float32))
    B = DistCSR.from_scipy(ns if comm.rank == 0 else None, comm)
    with pytest.raises(ValueError, match="not symmetric"):
        cg(B, B.create_vector(lambda i: np.ones_like(i, dtype=np.float32)), rtol=1e-5)
    assert_all(comm, bool(ok), info)
    A.free()
    B.free()


@pytest.mark.mpi
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_maxiter_zero_does_no_iteration(comm, name):
    d = CartDecomp((12, 9), comm)
    op = PoissonOperator(d)
    b = op.create_vector(lambda i, j: 1.0 + 0.1 * i - 0.05 * j)
    x, info = SOLVERS[name](op, b, maxiter=0)
    ok = info.iterations == 0 and not info.converged and info.reason == "maxiter" and not x.allgather().any()
    assert_all(comm, bool(ok), info)
    d.free()
