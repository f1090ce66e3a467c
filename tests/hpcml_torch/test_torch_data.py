"""TileDataset reads each rank's hyperslab of hpcml HDF5 series; tile_loader splits batches over replicas."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mpi4py import MPI  # noqa: E402
from torch_helpers import grids  # noqa: E402

import hpcml.torch as ht  # noqa: E402
from hpcml.nn.data import generate_heat_pairs  # noqa: E402
from hpcml.testing import assert_all  # noqa: E402

SAMPLES = 12


@pytest.fixture
def pairs(comm, shared_tmp):
    path = shared_tmp / "pairs.h5"
    dims = MPI.Compute_dims(comm.size, 2)
    shape = (3 * dims[0] + 1, 2 * dims[1] + 1)  # uneven tiles
    generate_heat_pairs(path, comm, shape, samples=SAMPLES, steps_ahead=2)
    return path, shape


@pytest.mark.mpi
@pytest.mark.parametrize("preload", [False, True])
def test_tiles_are_the_hyperslabs(comm, pairs, preload):
    path, shape = pairs
    with h5py.File(path, "r") as f:  # the reference: whole series, read serially
        u_in, u_out = f["u_in"][:SAMPLES], f["u_out"][:SAMPLES]
    for data in grids(comm.size):
        grid = ht.TrainGrid(comm, data, shape, periodic=True)
        try:
            ds = ht.TileDataset(grid, path, dtype=torch.float32, preload=preload)
            ok = len(ds) == SAMPLES
            for i in (0, 5, SAMPLES - 1, -1):
                x, y = ds[i]
                box = (i % SAMPLES, *grid.decomp.slices)
                ok &= x.shape == (1, *grid.local_shape) and x.dtype == torch.float32
                ok &= np.array_equal(x[0].numpy(), u_in[box].astype("f4"))
                ok &= np.array_equal(y[0].numpy(), u_out[box].astype("f4"))
            assert_all(comm, ok, f"tiles of {path} on {grid}")
        finally:
            grid.free()


@pytest.mark.mpi
def test_loader_batches_union_to_the_single_process_batch(comm, pairs):
    path, shape = pairs
    batch = 4 if comm.size < 3 else 12  # a multiple of every replica count
    for data in grids(comm.size):
        grid = ht.TrainGrid(comm, data, shape, periodic=True)
        try:
            ds = ht.TileDataset(grid, path, preload=True)
            loader = ht.tile_loader(ds, grid, batch, seed=3)
            loader.sampler.set_epoch(1)
            mine = list(loader.sampler)
            ok = len(mine) == SAMPLES // grid.data
            everyone = grid.data_comm.allgather(mine)
            ref = torch.utils.data.DistributedSampler(range(SAMPLES), 1, 0, seed=3)
            ref.set_epoch(1)
            ok &= sorted(i for part in everyone for i in part) == sorted(ref)
            order = list(ref)
            for step in range(SAMPLES // batch):  # step s of every replica takes from batch s of one process
                b = batch // grid.data
                want = set(order[step * batch : (step + 1) * batch])
                ok &= all(set(part[step * b : (step + 1) * b]) <= want for part in everyone)
            xb, _ = next(iter(loader))
            ok &= tuple(xb.shape) == (batch // grid.data, 1, *grid.local_shape)
            spatial = grid.spatial_comm.allgather(mine)
            ok &= all(s == mine for s in spatial)  # the tiles of a replica take the same samples
            assert_all(comm, ok, f"batches on {grid}")
        finally:
            grid.free()


@pytest.mark.mpi
def test_bad_datasets_fail_everywhere(comm, pairs):
    path, shape = pairs
    grid = ht.TrainGrid(comm, 1, shape, periodic=True)
    try:
        with pytest.raises(ValueError, match="no series 'nope'"):
            ht.TileDataset(grid, path, inputs=("nope",))
        with pytest.raises(ValueError, match="no such file"):
            ht.TileDataset(grid, str(path) + ".missing")
        other = ht.TrainGrid(comm, 1, (shape[0] + 1, shape[1]), periodic=True)
        with pytest.raises(ValueError, match="the grid's field"):
            ht.TileDataset(other, path)
        other.free()
        replicas = ht.TrainGrid(comm, comm.size, shape)
        for bad in (0, 2 * comm.size + 1) if comm.size > 1 else (0,):
            with pytest.raises(ValueError, match="positive multiple of the"):
                ht.tile_loader(ht.TileDataset(replicas, path), replicas, bad)
        replicas.free()
    finally:
        grid.free()
