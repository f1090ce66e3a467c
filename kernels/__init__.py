"""Node-local compute kernels (installed as :mod:`hpcml.kernels`).

Nothing in this package imports mpi4py: every function works on the arrays it is
given, on one process.  Each operation lives in its own module and dispatches on
the array type (NumPy -> Numba CPU, CuPy -> CuPy / Numba-CUDA); ``backend=`` forces
a path and ``backend="sim"`` runs the Numba-CUDA kernel in the CUDA simulator.
"""

from .blas1 import axpy, copy, dot, nrm2, scal
from .gemm import gemm
from .gemv import gemv
from .spmv import SellMatrix, sell_from_csr, spmv
from .stencil import diffusion_step, jacobi_step, laplacian, region_boxes

__all__ = [
    "SellMatrix",
    "axpy",
    "copy",
    "diffusion_step",
    "dot",
    "gemm",
    "gemv",
    "jacobi_step",
    "laplacian",
    "nrm2",
    "region_boxes",
    "scal",
    "sell_from_csr",
    "spmv",
]
