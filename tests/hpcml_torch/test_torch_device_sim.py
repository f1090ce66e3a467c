"""The device side of hpcml.torch's exchange on Numba-CUDA device arrays (CUDA simulator, or a real GPU).

A CUDA tensor reaches the exchange as a CuPy view (DLPack); what runs then is the GPU halo
plan (device pack kernels, ``staged`` or ``device``) on the ``(N*C, *field, 1)`` stacked view.
Numba-CUDA device arrays take the same plan, so the simulator runs that path in CI: filling
ghosts and the adjoint must give the NumPy path's bytes.  (The DLPack step of a real CUDA
tensor is checked by tests/gpu/run_device_checks.sh.)
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from mpi4py import MPI

from hpcml.backend import simulator_enabled
from hpcml.nn.grid import TrainGrid
from hpcml.testing import assert_all
from hpcml.torch.exchange import add_ghosts, fill_ghosts


@pytest.mark.mpi
@pytest.mark.numba_cuda
@pytest.mark.parametrize("method", ["staged", "device"])
def test_device_plan_matches_host(comm, method):
    from numba import cuda

    if method == "device" and not simulator_enabled():
        from hpcml.cudaaware import cuda_aware_mpi

        if not cuda_aware_mpi():  # in the simulator device memory is host memory: any MPI takes it
            pytest.skip("the 'device' method on a real GPU needs a CUDA-aware MPI")
    dims = MPI.Compute_dims(comm.size, 2)
    shape = (3 * dims[0] + 1, 2 * dims[1] + 1)
    grid = TrainGrid(comm, 1, shape, dims=dims, periodic=(True, False))
    try:
        halo, periodic = (1, 2), (True, False)
        rng = np.random.default_rng(comm.rank)
        host = rng.standard_normal((2, 3, *(n + 2 * h for n, h in zip(grid.local_shape, halo))))
        dev = cuda.to_device(host)
        fill_ghosts(host, grid, halo, periodic, "contiguous", "pack")
        fill_ghosts(dev, grid, halo, periodic, "contiguous", method)
        ok = np.array_equal(dev.copy_to_host(), host)
        add_ghosts(host, grid, halo, periodic, "contiguous", "pack")
        add_ghosts(dev, grid, halo, periodic, "contiguous", method)
        ok &= np.allclose(dev.copy_to_host(), host, rtol=1e-15, atol=0)
        assert_all(comm, ok, f"{method} exchange on device arrays differs from the host path")
    finally:
        grid.free()
