"""Training on data x spatial grids equals one process on the full batch (float64, 1e-10).

Run under ``mpiexec -n N`` for N = 1..4: every divisor D of N is tried as
``data_parallel`` (grids 1x1, 2x1, 1x2, 3x1, 1x3, 2x2, 4x1, 1x4).
"""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from hpcml.nn import SGD, Adam, DataParallel, Dense, HaloConv2d, Sequential, TileDataset, Trainer, TrainGrid, mse_loss
from hpcml.testing import assert_all

SHAPE = (12, 10)
STEPS = 5
LR = 1e-2


def build(grid):
    return Sequential(
        HaloConv2d(grid, 1, 4, 3, activation="tanh", padding="periodic", name="c1", rng=1),
        HaloConv2d(grid, 4, 3, 3, dilation=2, activation="relu", name="c2", rng=2),
        Dense(3, 1, name="out", rng=3),
    )


def data(n=12):
    rng = np.random.default_rng(5)
    return rng.standard_normal((n, *SHAPE, 1)), rng.standard_normal((n, *SHAPE, 1))


def hyper(opt):
    return {"momentum": 0.9} if opt == "sgd" else {}


_SERIAL: dict = {}


def serial_reference(opt, batch_size, steps=STEPS, seed=3):
    """One process, full field, full batch, plain optimizer on the layer parameters."""
    key = (opt, batch_size, steps, seed)
    if key not in _SERIAL:
        x, y = data()
        g = TrainGrid(MPI.COMM_SELF, 1, SHAPE)
        model = build(g)
        o = Adam(model.parameters(), lr=LR) if opt == "adam" else SGD(model.parameters(), lr=LR, momentum=0.9)
        order = Trainer(model, g, TileDataset(x, y), batch_size=batch_size, seed=seed)  # for its schedule only
        hist = []
        epoch = 0
        while len(hist) < steps:
            for b in order.batches(epoch):
                if len(hist) == steps:
                    break
                out = model.forward(x[b])
                loss, dy = mse_loss(out, y[b])
                model.backward(dy)
                o.step()
                o.zero_grad()
                hist.append(loss)
            epoch += 1
        _SERIAL[key] = ({p.name: p.data.copy() for p in model.parameters()}, np.array(hist))
        g.free()
    return _SERIAL[key]


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def train(comm, data_parallel, opt, zero, bucket_mb, batch_size=6, accumulation=1, steps=STEPS, **kw):
    x, y = data()
    g = TrainGrid(comm, data_parallel, SHAPE)
    tr = Trainer(
        build(g),
        g,
        TileDataset.from_global(g, x, y),
        batch_size=batch_size,
        optimizer=opt,
        lr=LR,
        hyper=hyper(opt),
        zero=zero,
        bucket_mb=bucket_mb,
        accumulation=accumulation,
        seed=3,
        **kw,
    )
    tr.fit(epochs=100, max_steps=steps)
    return tr, g


def rel_err(params, ref):
    return max(float(np.abs(p.data - ref[p.name]).max() / np.abs(ref[p.name]).max()) for p in params)


@pytest.mark.mpi
@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("zero", [False, True])
@pytest.mark.parametrize("bucket_mb", [0.0, 1000.0])
def test_parity_all_grids(comm, opt, zero, bucket_mb):
    ref, ref_loss = serial_reference(opt, 6)
    for d in divisors(comm.size):
        tr, g = train(comm, d, opt, zero, bucket_mb)
        err = rel_err(tr.model.parameters(), ref)
        lerr = float(np.abs(np.array(tr.history) - ref_loss).max() / ref_loss.max())
        nb = len(tr.ddp.buckets)
        assert_all(
            comm,
            err <= 1e-10 and lerr <= 1e-10,
            f"grid {d}x{comm.size // d} {opt} zero={zero} buckets={nb}: params {err:.2e}, loss {lerr:.2e}",
        )
        if bucket_mb == 0.0:
            assert nb == len(tr.model.parameters())  # one bucket per parameter
        else:
            assert nb == 1
        g.free()


@pytest.mark.mpi
@pytest.mark.parametrize("zero", [False, True])
def test_gradient_accumulation_equals_large_batch(comm, zero):
    """Accumulating micro-batches (some empty on some replicas) equals one large batch."""
    ref, ref_loss = serial_reference("adam", 5)
    for d in divisors(comm.size):
        tr, g = train(comm, d, "adam", zero, 0.001, batch_size=5, accumulation=3)
        err = rel_err(tr.model.parameters(), ref)
        lerr = float(np.abs(np.array(tr.history) - ref_loss).max() / ref_loss.max())
        assert_all(comm, err <= 1e-10 and lerr <= 1e-10, f"grid {d}x{comm.size // d}: {err:.2e}, {lerr:.2e}")
        g.free()


@pytest.mark.mpi
def test_replicas_hold_identical_parameters(comm):
    tr, g = train(comm, comm.size, "adam", False, 0.0)
    flat = tr.ddp.flat.data
    first = comm.bcast(flat, root=0)
    assert_all(comm, np.array_equal(flat, first), "replicas drifted apart")
    g.free()


@pytest.mark.mpi
def test_zero_shards_optimizer_state(comm):
    tr, g = train(comm, comm.size, "adam", True, 1000.0, steps=1)
    full = 2 * tr.ddp.total * 8  # m and v over the padded flat vector
    assert tr.optimizer.state_nbytes * comm.size == full
    g.free()


@pytest.mark.mpi(min_size=2)
def test_parameter_mismatch_is_an_error_not_a_hang(comm):
    g = TrainGrid(comm, comm.size, SHAPE)
    channels = 4 if comm.rank != 1 else 5
    model = Sequential(HaloConv2d(g, 1, channels, 3, name="c1"), Dense(channels, 1, name="out"))
    with pytest.raises(ValueError, match=r"differ between rank 0 and rank 1.*c1\.weight"):
        DataParallel(model, g)
    g.free()


@pytest.mark.mpi(min_size=2)
def test_bucket_setting_mismatch_is_an_error(comm):
    g = TrainGrid(comm, comm.size, SHAPE)
    with pytest.raises(ValueError, match="differ between rank 0"):
        DataParallel(build(g), g, bucket_mb=1.0 if comm.rank == 0 else 2.0)
    g.free()


def test_bad_data_parallel_is_rejected():
    with pytest.raises(ValueError, match="positive divisor"):
        TrainGrid(MPI.COMM_SELF, 2, SHAPE)


@pytest.mark.mpi
def test_resume_on_fewer_ranks_continues_the_loss_curve(comm, shared_tmp):
    """Checkpoint at step 3 on N ranks (ZeRO, data parallel), resume on N-1 ranks (spatial, unsharded)."""
    full, g = train(comm, comm.size, "adam", True, 0.0, steps=6)
    expect = np.array(full.history)
    g.free()
    ckpt = shared_tmp / "ckpt"
    _, g = train(comm, comm.size, "adam", True, 0.0, steps=3, checkpoint_dir=str(ckpt), checkpoint_every=3)
    g.free()
    sub_size = max(1, comm.size - 1)
    color = 0 if comm.rank < sub_size else MPI.UNDEFINED
    sub = comm.Split(color, comm.rank)
    ok = True
    msg = ""
    if sub != MPI.COMM_NULL:
        x, y = data()
        g2 = TrainGrid(sub, 1, SHAPE)
        tr = Trainer(
            build(g2),
            g2,
            TileDataset.from_global(g2, x, y),
            batch_size=6,
            lr=LR,
            seed=3,
            checkpoint_dir=str(ckpt),
            bucket_mb=1000.0,
        )
        resumed = tr.resume()
        tr.fit(epochs=100, max_steps=6)
        got = np.array(tr.history)
        ok = resumed and tr.step == 6 and got.shape == expect.shape
        ok = ok and float(np.abs(got - expect).max() / expect.max()) <= 1e-10
        msg = f"resumed={resumed} step={tr.step} got={got} expect={expect}"
        g2.free()
        sub.Free()
    assert_all(comm, ok, msg)


@pytest.mark.mpi
def test_buckets_launch_during_backward(comm):
    """With one bucket per parameter, the later layers' buckets are in flight before layer 0's backward."""
    x, y = data()
    g = TrainGrid(comm, comm.size, SHAPE)
    model = build(g)
    ddp = DataParallel(model, g, bucket_mb=0.0)
    seen = []
    first = model.layers[0]
    original = first.backward

    def spy(dy, need_dx=True):
        seen.append(ddp.launches)
        return original(dy, need_dx)

    first.backward = spy
    xs, ys = TileDataset.from_global(g, x, y).batch([0, 1])
    out = ddp.forward(xs)
    _, dy = mse_loss(out, ys, count=out.size * comm.size)
    ddp.backward(dy)
    assert seen == [4]  # out.weight, out.bias, c2.weight, c2.bias already launched
    assert ddp.launches == 6
    g.free()


@pytest.mark.mpi
def test_stop_signal_checkpoints_and_stops(comm, shared_tmp):
    """A stop signal on one rank stops every rank at the same step, with a checkpoint there."""
    from hpcml import runtime
    from hpcml.io.checkpoint import list_checkpoints

    if comm.rank == 0:
        runtime._STOP["signal"] = 15
    try:
        tr, g = train(comm, 1, "adam", False, 1.0, steps=5, checkpoint_dir=str(shared_tmp / "stop"), log_every=2)
    finally:
        runtime._STOP["signal"] = 0
    names = [p.name for p in list_checkpoints(shared_tmp / "stop")] if comm.rank == 0 else None
    names = comm.bcast(names, root=0)
    # StopPoll agrees within about a second, at a step that depends on the step time: any early
    # step, the same on every rank, with the one checkpoint written there.
    steps = comm.allgather(tr.step)
    ok = tr.stopped_early and 1 <= tr.step < 5 and len(set(steps)) == 1
    assert_all(comm, ok and names == [f"ckpt-{tr.step:010d}.h5"], f"steps {steps}, checkpoints {names}")
    g.free()
