"""hpcml.torch on CUDA tensors (a real GPU; run by tests/gpu/run_device_checks.sh on 2 ranks).

* DLPack: a CUDA tensor's array view is a CuPy array over the same device memory;
* the 2-rank exchange fills the ghosts of a CUDA tensor in place (data_ptr unchanged) with the
  bytes the CPU path gives;
* one DDP training step of the U-Net on CUDA tensors (2 tiles; gloo, since two ranks on one GPU
  cannot share NCCL) gives the CPU run's loss and gradients.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mpi4py import MPI  # noqa: E402

import hpcml.torch as ht  # noqa: E402
from hpcml.testing import assert_all  # noqa: E402
from hpcml.torch.tensors import as_array  # noqa: E402

pytestmark = [pytest.mark.gpu]


def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch.device("cuda", MPI.COMM_WORLD.rank % torch.cuda.device_count())


@pytest.mark.mpi
def test_dlpack_view_shares_device_memory(comm):
    dev = _cuda()
    t = torch.arange(24.0, device=dev).reshape(2, 3, 4)
    a = as_array(t)
    ok = type(a).__module__.startswith("cupy") and a.data.ptr == t.data_ptr()
    a[0, 0, 0] = -1.0
    torch.cuda.synchronize()
    ok &= float(t[0, 0, 0]) == -1.0
    assert_all(comm, ok, "the CuPy view is not the tensor's memory")


@pytest.mark.mpi
def test_cuda_exchange_in_place_equals_cpu(comm):
    dev = _cuda()
    dims = MPI.Compute_dims(comm.size, 2)
    grid = ht.TrainGrid(comm, 1, (5 * dims[0] + 1, 4 * dims[1] + 1), dims=dims, periodic=(True, False))
    try:
        gen = torch.Generator().manual_seed(comm.rank)
        x = torch.randn((2, 3, *grid.local_shape), dtype=torch.float64, generator=gen)
        cpu = torch.nn.functional.pad(x, (2, 2, 1, 1))
        gpu = cpu.to(dev)
        ptr = gpu.data_ptr()
        ht.halo_exchange(cpu, grid)
        ht.halo_exchange(gpu, grid)
        ok = gpu.data_ptr() == ptr and torch.equal(gpu.cpu(), cpu)
        assert_all(comm, ok, "CUDA exchange differs from the CPU exchange or moved the storage")
    finally:
        grid.free()


@pytest.mark.mpi
def test_cuda_training_step_equals_cpu(comm):
    dev = _cuda()
    shape = (8 * comm.size, 8 * comm.size)
    results = {}
    for device in (torch.device("cpu"), dev):
        grid = ht.TrainGrid(comm, 1, shape, periodic=True)
        backend = "nccl" if device.type == "cuda" and torch.cuda.device_count() >= comm.size else "gloo"
        ht.init_process_group(grid, backend=backend, device=device)
        try:
            torch.manual_seed(0)
            model = ht.distributed_data_parallel(ht.UNet(grid, width=4, depth=2, device=device), grid)
            gen = torch.Generator().manual_seed(1)
            xg = torch.randn((4, 1, *shape), dtype=torch.float64, generator=gen)
            box = (slice(None), slice(None), *grid.decomp.slices)
            x = xg[box].contiguous().to(device)
            loss = ht.mse_loss(model(x), 0.5 * x, grid)
            loss.backward()
            grads = [p.grad.detach().cpu() for p in model.parameters()]
            results[device.type] = (ht.global_loss(loss, grid), grads)
        finally:
            ht.destroy_process_group()
            grid.free()
    (lc, gc), (lg, gg) = results["cpu"], results["cuda"]
    ok = abs(lc - lg) <= 1e-10 * abs(lc)
    ok &= all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(gc, gg))
    assert_all(comm, ok, f"CUDA step loss {lg} vs CPU {lc}")
