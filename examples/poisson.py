"""Second-order convergence of the matrix-free Poisson solver, on any number of ranks.

    mpiexec -n 4 python examples/poisson.py [--ndim 2|3] [--levels 4] [--n0 16]

Solves -Laplacian(u) = f on the unit square (or cube) with homogeneous Dirichlet
boundaries for the manufactured solution u = prod_d exp(x_d) sin(pi x_d), on grids
n0, 2 n0 + 1, 4 n0 + 3, ... (the spacing h = 1/(n+1) halves each level), by CG with
Jacobi scaling on hpcml.linalg.PoissonOperator (halo exchange overlapped with the
interior update).  Prints, per level, the iterations, time per iteration and the max
error, and the observed order log2(e_coarse / e_fine), which tends to 2.  The same
problem is also solved once with the assembled matrix (DistCSR) to show both give
the same answer.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from mpi4py import MPI

import hpcml
from hpcml import CartDecomp
from hpcml.linalg import PoissonOperator, cg, manufactured


def solve(n: int, ndim: int, comm: MPI.Comm) -> tuple[float, int, float, PoissonOperator, tuple]:
    """Max error, iterations, ms per iteration, the operator and ``(x, f)`` for an n^ndim grid.

    (The first level's time per iteration includes Numba's compilation.)
    """
    op = PoissonOperator(CartDecomp((n,) * ndim, comm))
    exact, f = manufactured(op)
    x, info = cg(op, f, rtol=1e-11, M="jacobi")
    local = float(np.abs(x.interior - exact.interior).max())
    err = comm.allreduce(local, op=MPI.MAX)
    return err, info.iterations, 1e3 * info.seconds / max(info.iterations, 1), op, (x, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ndim", type=int, default=2, choices=[2, 3])
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--n0", type=int, default=16)
    args = p.parse_args()
    hpcml.init()
    comm = MPI.COMM_WORLD
    rank0 = comm.rank == 0
    if rank0:
        print(f"{args.ndim}-D Poisson, Dirichlet, {comm.size} rank(s)")
        print(f"{'n':>6} {'h':>10} {'iterations':>10} {'ms/it':>8} {'max error':>12} {'order':>6}")
    prev = None
    n = args.n0
    for _ in range(args.levels):
        err, its, ms, op, (x, f) = solve(n, args.ndim, comm)
        order = "" if prev is None else f"{math.log2(prev / err):6.2f}"
        if rank0:
            print(f"{n:>6} {1 / (n + 1):>10.5f} {its:>10d} {ms:>8.3f} {err:>12.4e} {order:>6}")
        prev = err
        n = 2 * n + 1
    # the assembled twin (natural ordering, 1-D row blocks) gives the same solution
    mat = op.to_matrix()
    fg = f.allgather().ravel()
    x2, info2 = cg(mat, mat.create_vector(lambda k: fg[k]), rtol=1e-11, M="jacobi")
    diff = np.abs(x2.allgather() - x.allgather().ravel()).max()
    if rank0:
        print(
            f"assembled DistCSR ({mat.nnz} nonzeros): {info2.iterations} iterations, max |x_csr - x_free| = {diff:.2e}"
        )
    mat.free()


if __name__ == "__main__":
    main()
