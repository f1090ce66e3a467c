"""DistributedDataParallel over the data x spatial grid trains exactly like one process.

On every grid of the rank count, a U-Net of HaloConv2d/HaloMaxPool2d wrapped by
``distributed_data_parallel`` takes AdamW steps with a cosine schedule on its replica's
share of each global batch and its tile of each sample; the loss series and the final
parameters must equal single-process torch (the same U-Net of nn.Conv2d/nn.MaxPool2d,
F.mse_loss on the whole field and batch) to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_helpers import grids, share, tile  # noqa: E402

import hpcml.torch as ht  # noqa: E402
from hpcml.testing import assert_all  # noqa: E402

BATCH, STEPS = 12, 3


def _data(shape):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((STEPS * BATCH, 1, *shape), dtype=torch.float64, generator=gen)
    return x, 0.5 * x + 0.1 * torch.roll(x, 1, dims=-1)


def _optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)


def _train(model, loss_fn, batches, opt=None, sched=None):
    if opt is None:
        opt, sched = _optimizer(model)
    losses = []
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
    return losses


@pytest.mark.mpi
@pytest.mark.parametrize("depth", [1, 2])
def test_ddp_unet_equals_single_process(comm, depth):
    shape = (2**depth * 2 * comm.size, 2**depth * 3 * comm.size)  # tiles divisible by 2**depth for any dims
    x_all, y_all = _data(shape)
    batches = [(x_all[s * BATCH : (s + 1) * BATCH], y_all[s * BATCH : (s + 1) * BATCH]) for s in range(STEPS)]
    torch.manual_seed(0)
    ref = ht.UNet(None, width=3, depth=depth)
    ref_losses = [float(v) for v in _train(ref, torch.nn.functional.mse_loss, batches)]
    for data in grids(comm.size):
        grid = ht.TrainGrid(comm, data, shape, periodic=True)
        ht.init_process_group(grid)
        try:
            torch.manual_seed(7 * comm.rank)  # rank 0 has the reference seed; the others must get its weights
            model = ht.distributed_data_parallel(ht.UNet(grid, width=3, depth=depth), grid)
            mine = [(tile(grid, x[share(grid, BATCH)]), tile(grid, y[share(grid, BATCH)])) for x, y in batches]
            losses = _train(model, lambda p, t, g=grid: ht.mse_loss(p, t, g), mine)
            losses = [ht.global_loss(v, grid) for v in losses]
            torch.manual_seed(0)
            init = ht.UNet(None, width=3, depth=depth).state_dict()
            ok = all(abs(a - b) <= 1e-10 * abs(b) for a, b in zip(losses, ref_losses))
            got = model.module.state_dict()
            for name, want in ref.state_dict().items():
                ok &= bool(torch.allclose(got[name], want, rtol=1e-10, atol=1e-12))
                ok &= not torch.equal(want, init[name]) or name.endswith("bias")
            assert_all(comm, ok, f"grid {grid}: losses {losses} vs single process {ref_losses}")
        finally:
            ht.destroy_process_group()
            grid.free()


@pytest.mark.mpi
def test_process_groups_match_the_grid(comm):
    data = 2 if comm.size % 2 == 0 else 1
    grid = ht.TrainGrid(comm, data, (4 * comm.size,), periodic=False)
    groups = ht.init_process_group(grid)
    try:
        dist = torch.distributed
        ok = groups.backend == "gloo" and dist.get_world_size() == comm.size and dist.get_rank() == comm.rank
        ok &= groups.address.startswith("127.0.0.1:")  # one node: loopback
        t = torch.tensor([float(comm.rank)])
        dist.all_reduce(t, group=groups.spatial)
        ok &= float(t) == sum(grid.data_rank * grid.spatial + s for s in range(grid.spatial))
        t = torch.tensor([float(comm.rank)])
        dist.all_reduce(t, group=groups.data)
        ok &= float(t) == sum(d * grid.spatial + grid.spatial_rank for d in range(grid.data))
        ok &= ht.process_groups(grid) is groups
        with pytest.raises(RuntimeError, match="already exists"):
            ht.init_process_group(grid)
        assert_all(comm, ok, f"process groups of {grid}")
    finally:
        ht.destroy_process_group()
        grid.free()


@pytest.mark.mpi
def test_checkpoint_resumes_on_another_grid(comm, shared_tmp):
    """Steps 1-2 on the grid with the most replicas, checkpoint, steps 3 on the all-spatial grid: the
    loss series and parameters equal three uninterrupted single-process steps."""
    shape = (4 * comm.size, 4 * comm.size)
    x_all, y_all = _data(shape)
    batches = [(x_all[s * BATCH : (s + 1) * BATCH], y_all[s * BATCH : (s + 1) * BATCH]) for s in range(STEPS)]
    torch.manual_seed(0)
    ref = ht.UNet(None, width=2, depth=1)
    ref_losses = [float(v) for v in _train(ref, torch.nn.functional.mse_loss, batches)]
    ckpt = shared_tmp / "ckpt"
    losses = []
    for data, steps in ((grids(comm.size)[-1], range(0, 2)), (1, range(2, STEPS))):
        grid = ht.TrainGrid(comm, data, shape, periodic=True)
        ht.init_process_group(grid)
        try:
            torch.manual_seed(0)
            model = ht.distributed_data_parallel(ht.UNet(grid, width=2, depth=1), grid)
            opt, sched = _optimizer(model)
            if steps.start:
                state = ht.load_checkpoint(ckpt, grid, model=model, optimizer=opt, scheduler=sched)
                losses = [float(v) for v in state["extra"]["loss"]]
                assert state.step == steps.start
            mine = [(tile(grid, x[share(grid, BATCH)]), tile(grid, y[share(grid, BATCH)])) for x, y in batches]
            part = _train(model, lambda p, t, g=grid: ht.mse_loss(p, t, g), [mine[s] for s in steps], opt, sched)
            losses += [ht.global_loss(v, grid) for v in part]
            ht.save_checkpoint(
                ckpt, steps.stop, grid, model=model, optimizer=opt, scheduler=sched, extra={"loss": np.asarray(losses)}
            )
        finally:
            ht.destroy_process_group()
            grid.free()
    ok = all(abs(a - b) <= 1e-10 * abs(b) for a, b in zip(losses, ref_losses)) and len(losses) == STEPS
    got = model.module.state_dict()
    ok &= all(torch.allclose(got[k], v, rtol=1e-10, atol=1e-12) for k, v in ref.state_dict().items())
    assert_all(comm, ok, f"resumed losses {losses} vs uninterrupted {ref_losses}")


def test_encode_decode_round_trip():
    """Optimizer, scheduler and odd trees survive encode/decode exactly (nothing pickled)."""
    from hpcml.torch.checkpoint import decode, encode

    model = torch.nn.Linear(3, 2)
    opt, sched = _optimizer(model)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    tree = {
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "odd": {1: (torch.ones(2, dtype=torch.bfloat16), None, "s", 2.5, [True, float("inf")]), "__x": 1},
    }
    enc = encode(tree)
    assert all(isinstance(v, (str, np.ndarray)) for v in enc.values())
    back = decode(enc)
    assert back["odd"][1][0].dtype == torch.bfloat16 and back["odd"][1][1:] == (None, "s", 2.5, [True, float("inf")])
    assert back["odd"]["__x"] == 1
    assert back["sched"] == sched.state_dict()
    o2, _ = _optimizer(torch.nn.Linear(3, 2))
    o2.load_state_dict(back["opt"])
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(o2.state_dict()["state"][0][k], v)
