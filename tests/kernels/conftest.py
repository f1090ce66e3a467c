"""Kernel tests: the CUDA-simulator tests in ``sim/`` need their own interpreter.

``NUMBA_ENABLE_CUDASIM`` only takes effect if set before numba is imported, so
``sim/`` is collected only when it is on; otherwise test_cuda_simulator.py runs
``sim/`` in a subprocess with it set.
"""

from hpcml.backend import simulator_enabled

collect_ignore = [] if simulator_enabled() else ["sim"]
