"""The optional PyTorch bridge: autograd halo exchange and HaloConv2d on tiles."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_all
from mpi4py import MPI

torch = pytest.importorskip("torch")

from nn_helpers import gather_tiles, tile_of  # noqa: E402

from hpcml.nn import HaloConv2d as NumpyHaloConv2d  # noqa: E402
from hpcml.nn import TrainGrid  # noqa: E402
from hpcml.nn.grid import HaloOp  # noqa: E402
from hpcml.nn.torch import HaloConv2d, halo_exchange  # noqa: E402


@pytest.mark.mpi
@pytest.mark.parametrize("periodic", [False, True])
def test_torch_halo_exchange_adjoint(comm, periodic):
    dims = MPI.Compute_dims(comm.size, 2)
    g = TrainGrid(comm, 1, (3 * dims[0] + 1, 3 * dims[1] + 2), periodic=periodic)
    op = HaloOp(g, (2, 1), (periodic, periodic))
    gen = torch.Generator().manual_seed(comm.rank)
    x = torch.randn((2, 3, *g.local_shape), dtype=torch.float64, generator=gen, requires_grad=True)
    y = halo_exchange(x, op)
    w = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    (y * w).sum().backward()
    lhs = comm.allreduce(float((y.detach() * w).sum()))
    rhs = comm.allreduce(float((x.detach() * x.grad).sum()))
    scale = comm.allreduce(float(y.detach().norm() * w.norm()))
    assert_all(comm, abs(lhs - rhs) <= 1e-12 * scale, f"{lhs} vs {rhs}")
    g.free()


@pytest.mark.mpi
def test_torch_halo_conv_matches_numpy_layer(comm):
    """Forward and autograd gradients equal hpcml's HaloConv2d on the gathered field."""
    dims = MPI.Compute_dims(comm.size, 2)
    shape = (3 * dims[0] + 2, 3 * dims[1] + 1)
    g = TrainGrid(comm, 1, shape, periodic=(True, False))
    tconv = HaloConv2d(g, 2, 3, kernel_size=3, dilation=2)
    ref = NumpyHaloConv2d(TrainGrid(MPI.COMM_SELF, 1, shape, periodic=(True, False)), 2, 3, 3, dilation=2, rng=1)
    with torch.no_grad():  # torch weight (Cout, Cin, kh, kw) <- ours (kh, kw, Cin, Cout)
        tconv.conv.weight.copy_(torch.from_numpy(ref.weight.data.transpose(3, 2, 0, 1).copy()))
        tconv.conv.bias.copy_(torch.from_numpy(np.arange(3.0)))
    ref.bias.data[...] = np.arange(3.0)
    rng = np.random.default_rng(4)
    xg = rng.standard_normal((2, *shape, 2))
    dyg = rng.standard_normal((2, *shape, 3))
    x = torch.from_numpy(np.moveaxis(tile_of(g, xg), -1, 1).copy()).requires_grad_(True)
    y = tconv(x)
    y.backward(torch.from_numpy(np.moveaxis(tile_of(g, dyg), -1, 1).copy()))
    yr = ref.forward(xg)
    dxr = ref.backward(dyg)
    y_cl = np.moveaxis(y.detach().numpy(), 1, -1)
    dx_cl = np.moveaxis(x.grad.numpy(), 1, -1)
    dw = comm.allreduce(tconv.conv.weight.grad.numpy().transpose(2, 3, 1, 0).copy())
    ok = np.allclose(gather_tiles(g, y_cl), yr, rtol=1e-12, atol=1e-12)
    ok &= np.allclose(gather_tiles(g, dx_cl), dxr, rtol=1e-12, atol=1e-12)
    ok &= np.allclose(dw, ref.weight.grad, rtol=1e-11, atol=1e-12)
    assert_all(comm, ok, "torch bridge differs from the NumPy layer")
    g.free()
