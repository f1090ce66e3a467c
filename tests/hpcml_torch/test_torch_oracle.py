"""hpcml.torch against hpcml.nn, the dependency-free NumPy reference, and the old bridge's alias."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mpi4py import MPI  # noqa: E402

import hpcml.torch as ht  # noqa: E402
from hpcml.nn import HaloConv2d as NumpyHaloConv2d  # noqa: E402
from hpcml.nn import TrainGrid  # noqa: E402
from hpcml.testing import assert_all  # noqa: E402


def tile_of(grid, a):
    """This rank's tile of a global channels-last array."""
    return np.ascontiguousarray(a[(slice(None), *grid.decomp.slices, slice(None))])


@pytest.mark.mpi
def test_torch_halo_conv_matches_numpy_layer(comm):
    """Forward and autograd gradients equal hpcml.nn's HaloConv2d (channels-last NumPy) on the whole field."""
    dims = MPI.Compute_dims(comm.size, 2)
    shape = (3 * dims[0] + 2, 3 * dims[1] + 1)
    g = TrainGrid(comm, 1, shape, dims=dims, periodic=(True, False))
    ref_grid = TrainGrid(MPI.COMM_SELF, 1, shape, periodic=(True, False))
    try:
        tconv = ht.HaloConv2d(g, 2, 3, kernel_size=3, dilation=2, dtype=torch.float64)
        ref = NumpyHaloConv2d(ref_grid, 2, 3, 3, dilation=2, rng=1)
        with torch.no_grad():  # torch weight (Cout, Cin, kh, kw) <- ours (kh, kw, Cin, Cout)
            tconv.weight.copy_(torch.from_numpy(ref.weight.data.transpose(3, 2, 0, 1).copy()))
            tconv.bias.copy_(torch.from_numpy(np.arange(3.0)))
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
        dw = comm.allreduce(tconv.weight.grad.numpy().transpose(2, 3, 1, 0).copy())
        ok = np.allclose(y_cl, tile_of(g, yr), rtol=1e-12, atol=1e-12)
        ok &= np.allclose(dx_cl, tile_of(g, dxr), rtol=1e-12, atol=1e-12)
        ok &= np.allclose(dw, ref.weight.grad, rtol=1e-11, atol=1e-12)
        assert_all(comm, ok, "hpcml.torch differs from the NumPy layer")
    finally:
        g.free()
        ref_grid.free()


def test_old_bridge_is_an_alias():
    import hpcml.nn.torch as old

    assert old.HaloConv2d is ht.HaloConv2d and old.halo_exchange is ht.halo_exchange
    assert set(old.__all__) == set(ht.__all__)
