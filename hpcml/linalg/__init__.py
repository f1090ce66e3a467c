"""Distributed linear algebra: DistCSR, CG, SUMMA.

* :class:`DistCSR` -- row-block distributed CSR matrix (PETSc MPIAIJ layout):
  diagonal / off-diagonal split, ghost-column plan, SpMV overlapped with the
  ghost exchange.  Vectors are 1-D :class:`~hpcml.distarray.DistArray`.
* :class:`PoissonOperator` -- matrix-free ``-Laplacian`` (2-D 5-point, 3-D
  7-point; Dirichlet or periodic) on a ghosted ``DistArray``, halo exchange
  overlapped with the interior update; :func:`poisson_matrix` assembles it;
  :func:`jacobi` iterates on it; :func:`manufactured` gives an exact solution.
* :func:`cg`, :func:`cg_pipelined` -- (Jacobi-preconditioned) conjugate
  gradients with residual history in a :class:`SolveInfo`; the pipelined
  variant hides its single ``Iallreduce`` behind the product.
* :func:`gmres`, :func:`bicgstab` -- right-preconditioned Krylov solvers for
  non-symmetric systems, with the ``SolveInfo`` and callback of ``cg``.
* Preconditioners (``M=``): ``"jacobi"``, ``"block-ilu"`` (:class:`BlockILU`),
  :class:`Multigrid` (geometric, for ``PoissonOperator``), or any object with
  ``apply(r, z)``.
* :class:`DistMatrix`, :func:`summa` -- dense matrices block-distributed on a
  2-D process grid and their SUMMA product.

See ``docs/solvers.md``.
"""

from hpcml.linalg.cg import NotSPDError, SolveInfo, cg, cg_pipelined, check_symmetric
from hpcml.linalg.csr import DistCSR
from hpcml.linalg.krylov import bicgstab, gmres
from hpcml.linalg.multigrid import Multigrid
from hpcml.linalg.poisson import PoissonOperator, jacobi, manufactured, poisson_matrix
from hpcml.linalg.precond import BlockILU, Jacobi
from hpcml.linalg.summa import DistMatrix, summa

__all__ = [
    "BlockILU",
    "DistCSR",
    "DistMatrix",
    "NotSPDError",
    "PoissonOperator",
    "Jacobi",
    "Multigrid",
    "SolveInfo",
    "bicgstab",
    "cg",
    "cg_pipelined",
    "check_symmetric",
    "gmres",
    "jacobi",
    "manufactured",
    "poisson_matrix",
    "summa",
]
