"""The heat-pair dataset, tile-by-tile reading, and the ``train`` app end to end."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from hpcml.apps import train as train_app
from hpcml.config import ConfigError, default_config, load_config
from hpcml.io import read_scalar
from hpcml.nn import TileDataset, TrainGrid, generate_heat_pairs
from hpcml.testing import assert_all


def euler_heat(u, steps, cy, cx):
    for _ in range(steps):
        u = (
            u
            + cy * (np.roll(u, 1, 0) - 2 * u + np.roll(u, -1, 0))
            + cx * (np.roll(u, 1, 1) - 2 * u + np.roll(u, -1, 1))
        )
    return u


@pytest.mark.mpi
def test_heat_pairs_match_serial_euler_and_read_by_tiles(comm, shared_tmp):
    shape = (12, 10)
    path = shared_tmp / "pairs.h5"
    info = generate_heat_pairs(path, comm, shape, samples=3, steps_ahead=4, cfl=0.2, modes=2, seed=7)
    ok, msg = True, ""
    if comm.rank == 0:
        with h5py.File(path, "r") as f:
            u_in, u_out = f["u_in"][...], f["u_out"][...]
        dt = 0.2 * min(1 / shape[0], 1 / shape[1]) ** 2  # cfl * h_min^2 / alpha
        cy, cx = dt * shape[0] ** 2, dt * shape[1] ** 2
        expect = np.stack([euler_heat(u, 4, cy, cx) for u in u_in])
        ok = u_in.shape == (3, *shape) and np.allclose(u_out, expect, rtol=1e-12, atol=1e-12)
        ok = ok and abs(np.sqrt(np.mean(u_in**2)) - 1) < 0.5 and info["samples"] == 3
        msg = f"max diff {np.abs(u_out - expect).max()}"
        full = (u_in, u_out)
    else:
        full = None
    assert_all(comm, ok, msg)
    u_in, u_out = comm.bcast(full, root=0)
    for d in [x for x in range(1, comm.size + 1) if comm.size % x == 0]:
        g = TrainGrid(comm, d, shape)
        ds = TileDataset.from_hdf5(g, path)
        sl = (slice(None), *g.decomp.slices)
        good = np.array_equal(ds.inputs[..., 0], u_in[sl]) and np.array_equal(ds.targets[..., 0], u_out[sl])
        assert_all(comm, good and len(ds) == 3, f"tiles differ on grid {d}x{comm.size // d}")
        g.free()


def small_config(tmp, **train):
    cfg = default_config("train")
    cfg["grid"]["shape"] = [16, 12]
    cfg["data"].update(path=str(tmp / "pairs.h5"), samples=8, steps_ahead=5)
    cfg["model"].update(channels=[4])
    cfg["train"].update(epochs=2, batch_size=4, lr=0.01, checkpoint_dir=str(tmp / "ckpt"), log_every=1)
    cfg["train"].update(train)
    cfg["output"]["path"] = str(tmp / "train.h5")
    return cfg


@pytest.mark.mpi
def test_train_app_loss_series_and_resume(comm, shared_tmp):
    """Run 2 epochs, then 2 more from the checkpoint on fewer ranks: one continuous loss series."""
    cfg = small_config(shared_tmp, data_parallel=comm.size, zero=comm.size > 1)
    s1 = train_app.run(cfg, comm)
    assert s1["steps"] == 4 and not s1["resumed"]
    sub = comm.Split(0 if comm.rank < max(1, comm.size - 1) else MPI.UNDEFINED, comm.rank)
    s2 = None
    if sub != MPI.COMM_NULL:
        cfg2 = small_config(shared_tmp, data_parallel=1, zero=False)
        cfg2["train"]["epochs"] = 4
        cfg2["run"]["restart"] = True
        s2 = train_app.run(cfg2, sub)
        sub.Free()
    s2 = comm.bcast(s2, root=0)
    ok, msg = True, ""
    if comm.rank == 0:
        steps, _, loss = read_scalar(shared_tmp / "train.h5", "loss")
        ok = s2["resumed"] and s2["steps"] == 8 and list(steps) == list(range(1, 9))
        ok = ok and loss[0] == pytest.approx(s1["loss_first"]) and loss[-1] == pytest.approx(s2["loss_final"])
        ok = ok and loss[-1] < loss[0]
        msg = f"steps {list(steps)}, loss {loss}, summaries {s1} {s2}"
    assert_all(comm, ok, msg)


def test_config_rejects_bad_values(tmp_path):
    cfg = small_config(tmp_path)
    cfg["train"]["data_parallel"] = 2
    with pytest.raises(ConfigError, match="divisor"):
        train_app.run(cfg, MPI.COMM_SELF)
    cfg = small_config(tmp_path)
    cfg["model"]["kernel_size"] = 4
    with pytest.raises(ConfigError, match="odd"):
        train_app.run(cfg, MPI.COMM_SELF)
    bad = tmp_path / "bad.toml"
    bad.write_text('app = "train"\n[train]\nbatchsize = 3\n')
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(bad)


def test_example_config_loads():
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[2] / "examples" / "train_surrogate.toml")
    assert cfg["app"] == "train" and cfg["train"]["data_parallel"] == 2
