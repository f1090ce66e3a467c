"""Layers: serial references, finite differences, adjoint tests on 1-4 ranks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mpi4py import MPI
from nn_helpers import gather_tiles, ref_conv, tile_of

from hpcml.nn import Dense, HaloConv2d, HaloConv3d, ReLU, Sequential, Tanh, TrainGrid, mse_loss
from hpcml.nn.grid import HaloOp
from hpcml.nn.optim import SGD, Adam
from hpcml.testing import assert_all


def serial_grid(shape, periodic=False):
    return TrainGrid(MPI.COMM_SELF, 1, shape, periodic=periodic)


def fd_check(model, x, t, rng, n_checks=3, eps=1e-6):
    """Central differences of the MSE against backward for parameters and the input."""
    y = model.forward(x)
    _, dy = mse_loss(y, t)
    for p in model.parameters():
        p.grad[...] = 0
    dx = model.backward(dy, need_dx=True)

    def loss_at():
        return mse_loss(model.forward(x), t)[0]

    worst = 0.0
    for p in model.parameters():
        for _ in range(n_checks):
            idx = tuple(int(rng.integers(0, s)) for s in p.shape)
            old = p.data[idx]
            p.data[idx] = old + eps
            lp = loss_at()
            p.data[idx] = old - eps
            lm = loss_at()
            p.data[idx] = old
            fd = (lp - lm) / (2 * eps)
            worst = max(worst, abs(fd - p.grad[idx]) / max(1e-3, abs(fd)))
    for _ in range(n_checks):
        idx = tuple(int(rng.integers(0, s)) for s in x.shape)
        old = x[idx]
        x[idx] = old + eps
        lp = loss_at()
        x[idx] = old - eps
        lm = loss_at()
        x[idx] = old
        fd = (lp - lm) / (2 * eps)
        worst = max(worst, abs(fd - dx[idx]) / max(1e-3, abs(fd)))
    return worst


# -- serial ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["im2col", "direct"])
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_conv2d_matches_numpy_reference(method, periodic, activation):
    rng = np.random.default_rng(1)
    g = serial_grid((9, 7))
    conv = HaloConv2d(
        g,
        3,
        4,
        kernel_size=(3, 5),
        dilation=(2, 1),
        padding="periodic" if periodic else "zeros",
        activation=activation,
        method=method,
        rng=4,
    )
    conv.bias.data[...] = rng.standard_normal(4)
    x = rng.standard_normal((2, 9, 7, 3))
    y = conv.forward(x)
    ref = ref_conv(x, conv.weight.data, conv.bias.data, (2, 1), (periodic, periodic), activation)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_conv3d_matches_numpy_reference():
    rng = np.random.default_rng(2)
    g = serial_grid((5, 4, 6))
    conv = HaloConv3d(g, 2, 3, 3, padding=(True, False, True), rng=1)
    x = rng.standard_normal((2, 5, 4, 6, 2))
    ref = ref_conv(x, conv.weight.data, conv.bias.data, 1, (True, False, True))
    np.testing.assert_allclose(conv.forward(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["im2col", "direct"])
def test_finite_differences_2d(method):
    rng = np.random.default_rng(3)
    g = serial_grid((8, 6), periodic=(True, False))
    model = Sequential(
        HaloConv2d(g, 2, 3, 3, activation="tanh", method=method, name="c1", rng=1),
        HaloConv2d(g, 3, 3, 3, dilation=2, method=method, name="c2", rng=2),
        ReLU(),
        Dense(3, 2, activation="tanh", name="d1", rng=3),
        Tanh(),
        Dense(2, 1, name="d2", rng=4),
    )
    for p in model.parameters():
        if p.name.endswith("bias"):
            p.data[...] = 0.1 * rng.standard_normal(p.shape)
    x = rng.standard_normal((2, 8, 6, 2))
    t = rng.standard_normal((2, 8, 6, 1))
    assert fd_check(model, x, t, rng) < 1e-6


def test_finite_differences_3d():
    rng = np.random.default_rng(4)
    g = serial_grid((4, 5, 3), periodic=True)
    model = Sequential(HaloConv3d(g, 1, 2, 3, activation="relu", name="c", rng=1), Dense(2, 1, name="d", rng=2))
    model.layers[0].bias.data[...] = 0.2
    x = rng.standard_normal((2, 4, 5, 3, 1))
    t = rng.standard_normal((2, 4, 5, 3, 1))
    assert fd_check(model, x, t, rng) < 1e-6


def test_direct_equals_im2col():
    rng = np.random.default_rng(5)
    g = serial_grid((7, 8), periodic=True)
    a = HaloConv2d(g, 3, 5, 3, dilation=2, activation="relu", method="im2col", rng=9)
    b = HaloConv2d(g, 3, 5, 3, dilation=2, activation="relu", method="direct", rng=9)
    a.bias.data[...] = b.bias.data[...] = 0.1
    x = rng.standard_normal((3, 7, 8, 3))
    np.testing.assert_allclose(a.forward(x), b.forward(x), rtol=1e-12, atol=1e-13)
    dy = rng.standard_normal((3, 7, 8, 5))
    np.testing.assert_allclose(a.backward(dy), b.backward(dy), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(a.weight.grad, b.weight.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.bias.grad, b.bias.grad, rtol=1e-12, atol=1e-12)


def test_layer_argument_errors():
    g = serial_grid((6, 6))
    with pytest.raises(ValueError, match="odd"):
        HaloConv2d(g, 1, 1, 2)
    with pytest.raises(ValueError, match="3-D field"):
        HaloConv3d(g, 1, 1, 3)
    with pytest.raises(ValueError, match="activation"):
        Dense(2, 2, activation="gelu")
    with pytest.raises(ValueError, match="unique"):
        Sequential(Dense(1, 1), Dense(1, 1))
    conv = HaloConv2d(g, 2, 1, 3)
    with pytest.raises(ValueError, match="input channels"):
        conv.forward(np.zeros((1, 6, 6, 3)))
    with pytest.raises(ValueError, match="channels-last tile"):
        conv.forward(np.zeros((1, 5, 6, 2)))


def test_halo_wider_than_tile_is_rejected():
    g = serial_grid((4, 8), periodic=True)
    with pytest.raises(ValueError, match="wider than the smallest tile"):
        HaloConv2d(g, 1, 1, kernel_size=3, dilation=5, name="wide")


def test_optimizers_match_closed_form():
    """One parameter, constant gradient: SGD-momentum and Adam against their formulas."""
    from hpcml.nn.layers import Parameter

    p = Parameter("w", np.array([1.0, -2.0]))
    g = np.array([0.5, -0.25])
    opt = SGD([p], lr=0.1, momentum=0.9)
    buf = np.zeros(2)
    w = p.data.copy()
    for k in range(3):
        p.grad[...] = g
        opt.step()
        buf = g if k == 0 else 0.9 * buf + g
        w = w - 0.1 * buf
    np.testing.assert_allclose(p.data, w, rtol=1e-15)
    p = Parameter("w", np.array([1.0, -2.0]))
    opt = Adam([p], lr=0.01)
    m = v = np.zeros(2)
    w = p.data.copy()
    for t in range(1, 4):
        p.grad[...] = g
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(p.data, w, rtol=1e-14)


# -- MPI ---------------------------------------------------------------------------------------


def _grid_for(comm, shape, periodic, dims=None):
    return TrainGrid(comm, 1, shape, dims=dims, periodic=periodic)


@pytest.mark.mpi
@given(data=st.data())
def test_halo_op_adjoint(comm, data):
    """<E x, y> == <x, E* y> for the out-of-place exchange of channels-last tiles (float64)."""
    nd = data.draw(st.integers(2, 3), label="ndim")
    halo = tuple(data.draw(st.integers(0, 2)) for _ in range(nd))
    dims = MPI.Compute_dims(comm.size, nd)
    shape = tuple(data.draw(st.integers(p * max(1, *halo), p * max(1, *halo) + 4)) for p in dims)
    periodic = tuple(data.draw(st.booleans()) for _ in range(nd))
    g = _grid_for(comm, shape, periodic, dims)  # the dims the shape was drawn for
    op = HaloOp(g, halo, periodic)
    rng = np.random.default_rng(100 + comm.rank)
    x = rng.standard_normal((2, *g.local_shape, 3))
    y = rng.standard_normal(op.ghosted_shape(x.shape))
    ex = op.forward(x)
    ety = op.adjoint(y.copy())
    lhs = comm.allreduce(float(np.vdot(ex, y)))
    rhs = comm.allreduce(float(np.vdot(x, ety)))
    scale = max(
        comm.allreduce(float(np.linalg.norm(ex) * np.linalg.norm(y))),
        comm.allreduce(float(np.linalg.norm(x) * np.linalg.norm(ety))),
    )
    assert_all(comm, abs(lhs - rhs) <= 1e-12 * scale, f"{lhs} vs {rhs} shape={shape} halo={halo}")
    g.free()


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["im2col", "direct"])
@pytest.mark.parametrize("periodic", [False, True])
def test_conv_adjoint_input_weight_bias(comm, method, periodic):
    """DistDL's adjoint test of HaloConv2d in x, W and b (no activation), on any rank count."""
    dims = MPI.Compute_dims(comm.size, 2)
    shape = (4 * dims[0] + 1, 4 * dims[1] + 2)
    g = _grid_for(comm, shape, (periodic, periodic), dims)
    conv = HaloConv2d(g, 2, 3, 3, dilation=(1, 2), method=method, rng=7)
    rng = np.random.default_rng(11 + comm.rank)
    x = rng.standard_normal((2, *g.local_shape, 2))
    y = rng.standard_normal((2, *g.local_shape, 3))

    def gsum(v):
        return comm.allreduce(float(v))

    def check(lhs, rhs, scale, what):
        assert_all(comm, abs(lhs - rhs) <= 1e-12 * scale, f"{what}: {lhs} vs {rhs}")

    # input: F x = conv(x) with b = 0
    conv.bias.data[...] = 0
    fx = conv.forward(x)
    conv.weight.grad[...] = 0
    conv.bias.grad[...] = 0
    fty = conv.backward(y)
    check(
        gsum(np.vdot(fx, y)),
        gsum(np.vdot(x, fty)),
        max(
            gsum(np.linalg.norm(fx) ** 2) ** 0.5 * gsum(np.linalg.norm(y) ** 2) ** 0.5,
            gsum(np.linalg.norm(x) ** 2) ** 0.5 * gsum(np.linalg.norm(fty) ** 2) ** 0.5,
        ),
        "input",
    )
    # weight: F W = conv(x; W) (linear in W); F* y = sum over ranks of dW
    dw = comm.allreduce(conv.weight.grad.copy())
    check(
        gsum(np.vdot(fx, y)),
        float(np.vdot(conv.weight.data, dw)),
        gsum(np.linalg.norm(fx) ** 2) ** 0.5 * gsum(np.linalg.norm(y) ** 2) ** 0.5,
        "weight",
    )
    # bias: F b = conv with W = 0 (a broadcast of b); F* y = sum of y over cells and samples
    conv.weight.data[...] = 0
    conv.bias.data[...] = rng.standard_normal(3) if comm.rank == 0 else 0
    conv.bias.data[...] = comm.bcast(conv.bias.data, root=0)
    fb = conv.forward(x)
    conv.bias.grad[...] = 0
    conv.backward(y, need_dx=False)
    db = comm.allreduce(conv.bias.grad.copy())
    check(
        gsum(np.vdot(fb, y)),
        float(np.vdot(conv.bias.data, db)),
        gsum(np.linalg.norm(fb) ** 2) ** 0.5 * gsum(np.linalg.norm(y) ** 2) ** 0.5,
        "bias",
    )
    g.free()


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["im2col", "direct"])
@pytest.mark.parametrize("periodic", [(False, False), (True, False), (True, True)])
def test_distributed_conv_matches_gathered_serial(comm, method, periodic):
    """Tiled forward/backward equals the serial layer on the gathered field (uneven splits)."""
    dims = MPI.Compute_dims(comm.size, 2)
    shape = (3 * dims[0] + 2, 3 * dims[1] + 1)
    g = _grid_for(comm, shape, periodic, dims)
    conv = HaloConv2d(g, 2, 3, (3, 3), dilation=(1, 2), activation="tanh", method=method, rng=3)
    conv.bias.data[...] = 0.3
    rng = np.random.default_rng(21)  # same global data on every rank
    xg = rng.standard_normal((2, *shape, 2))
    dyg = rng.standard_normal((2, *shape, 3))
    y = conv.forward(tile_of(g, xg))
    dx = conv.backward(tile_of(g, dyg))
    dw = comm.allreduce(conv.weight.grad.copy())
    db = comm.allreduce(conv.bias.grad.copy())
    sg = serial_grid(shape, periodic)
    ref = HaloConv2d(sg, 2, 3, (3, 3), dilation=(1, 2), activation="tanh", method="im2col", rng=3)
    ref.bias.data[...] = 0.3
    yr = ref.forward(xg)
    dxr = ref.backward(dyg)
    ok = np.allclose(gather_tiles(g, y), yr, rtol=1e-12, atol=1e-12)
    ok &= np.allclose(gather_tiles(g, dx), dxr, rtol=1e-12, atol=1e-12)
    ok &= np.allclose(dw, ref.weight.grad, rtol=1e-11, atol=1e-12)
    ok &= np.allclose(db, ref.bias.grad, rtol=1e-11, atol=1e-12)
    assert_all(comm, ok, f"distributed conv differs from serial (dims={g.decomp.dims}, periodic={periodic})")
    g.free()


@pytest.mark.mpi(min_size=2)
def test_halo_wider_than_neighbour_tile_fails_on_every_rank(comm):
    shape = (comm.size * 2, 5)
    g = TrainGrid(comm, 1, shape, dims=(comm.size, 1))
    with pytest.raises(ValueError, match="wider than the smallest tile"):
        HaloConv2d(g, 1, 1, kernel_size=7, name="wide")
    g.free()


@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_fused_and_ufunc_epilogues_agree(activation):
    rng = np.random.default_rng(6)
    g = serial_grid((6, 5), periodic=True)
    x = rng.standard_normal((2, 6, 5, 2))
    outs = []
    for epilogue in ("fused", "ufunc"):
        conv = HaloConv2d(g, 2, 3, 3, activation=activation, epilogue=epilogue, rng=2)
        dense = Dense(3, 2, activation=activation, epilogue=epilogue, rng=3)
        conv.bias.data[...] = dense.bias.data[...] = 0.1
        outs.append(dense.forward(conv.forward(x)))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-13, atol=1e-14)


@pytest.mark.mpi
def test_distributed_conv3d_matches_gathered_serial(comm):
    dims = MPI.Compute_dims(comm.size, 3)
    shape = tuple(2 * p + 2 for p in dims)
    periodic = (True, False, True)
    g = _grid_for(comm, shape, periodic, dims)
    conv = HaloConv3d(g, 2, 2, 3, activation="relu", rng=5)
    conv.bias.data[...] = 0.1
    rng = np.random.default_rng(8)
    xg = rng.standard_normal((2, *shape, 2))
    dyg = rng.standard_normal((2, *shape, 2))
    y = conv.forward(tile_of(g, xg))
    dx = conv.backward(tile_of(g, dyg))
    dw = comm.allreduce(conv.weight.grad.copy())
    ref = HaloConv3d(serial_grid(shape, periodic), 2, 2, 3, activation="relu", rng=5)
    ref.bias.data[...] = 0.1
    ok = np.allclose(gather_tiles(g, y), ref.forward(xg), rtol=1e-12, atol=1e-12)
    ok &= np.allclose(gather_tiles(g, dx), ref.backward(dyg), rtol=1e-12, atol=1e-12)
    ok &= np.allclose(dw, ref.weight.grad, rtol=1e-11, atol=1e-12)
    assert_all(comm, ok, f"3-D distributed conv differs from serial (dims={g.decomp.dims})")
    g.free()
