"""Node-local compute kernels (installed as :mod:`hpcml.kernels`).

Nothing in this package imports mpi4py: every function works on the arrays it is
given, on one process.  Each operation lives in its own module and dispatches on
the array type (NumPy -> Numba CPU, CuPy -> CuPy / Numba-CUDA); ``backend=`` forces
a path and ``backend="sim"`` runs the Numba-CUDA kernel in the CUDA simulator.
"""
