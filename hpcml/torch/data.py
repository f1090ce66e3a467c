"""Tiles of hpcml HDF5 field series as a torch ``Dataset``, batches split over replicas.

:class:`TileDataset` serves sample ``i`` as this rank's tile of snapshot ``i``
of one or more field series (e.g. ``u_in``/``u_out`` written by
:func:`hpcml.nn.data.generate_heat_pairs` through :class:`hpcml.io.Output`):
``(inputs (C_in, *tile), targets (C_out, *tile))``.  Each rank reads its own
hyperslab, with h5py and no MPI, so ``DataLoader`` worker processes may read
too; plain and virtual (per-rank file) datasets read alike.

:func:`tile_loader` is the ``DistributedSampler`` recipe on the grid: replica
``r`` of ``D`` takes every ``D``-th sample of the epoch's permutation, and every
tile of a replica takes the same samples in the same order.  A global batch of
``B`` samples is ``B / D`` per replica; over all replicas a step sees exactly
the samples one process would see in its batch of ``B`` with the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hpcml.nn.grid import TrainGrid

__all__ = ["TileDataset", "tile_loader"]


class TileDataset(Dataset):
    """Tiles of HDF5 field series held by this rank (collective construction, independent reads).

    Parameters
    ----------
    grid
        The :class:`~hpcml.nn.grid.TrainGrid`; its field shape must be the series' snapshot shape.
    path
        An hpcml output file (or any HDF5 file with ``(samples, *field)`` datasets).
    inputs, targets
        Series stacked as input and target channels.
    dtype
        Tensor dtype.
    preload
        Read every sample's tile once at construction (``len x channels x tile``
        values held per rank) instead of on each access.

    Raises
    ------
    ValueError
        On every rank (rank 0 checks the file), for a missing series, series of
        different lengths or a snapshot shape other than the grid's field.
    """

    def __init__(
        self,
        grid: TrainGrid,
        path: str | os.PathLike[str],
        inputs: Sequence[str] = ("u_in",),
        targets: Sequence[str] = ("u_out",),
        dtype: torch.dtype = torch.float64,
        preload: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.inputs, self.targets = tuple(inputs), tuple(targets)
        self.dtype = dtype
        self.slices = grid.decomp.slices
        self.tile = grid.local_shape
        n, error = None, None
        if grid.comm.Get_rank() == 0:
            try:
                n = _check_series(self.path, self.inputs + self.targets, grid.shape)
            except Exception as exc:  # shared with every rank below
                error = f"{type(exc).__name__}: {exc}"
        n, error = grid.comm.bcast((n, error), root=0)
        if error is not None:
            raise ValueError(f"TileDataset {self.path}: {error}")
        self.n = int(n)
        self._file: h5py.File | None = None
        self._pid = -1
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        if preload:
            self._cache = self._read(slice(0, self.n))
            self._close()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of sample ``i``: this rank's tiles, ``(C, *tile)`` each."""
        if not -self.n <= i < self.n:
            raise IndexError(f"sample {i} out of range ({self.n} samples)")
        i = int(i) % self.n
        if self._cache is not None:
            return self._cache[0][i], self._cache[1][i]
        x, y = self._read(slice(i, i + 1))
        return x[0], y[0]

    def _read(self, samples: slice) -> tuple[torch.Tensor, torch.Tensor]:
        f = self._open()
        box = (samples, *self.slices)

        def stack(names: Sequence[str]) -> torch.Tensor:
            a = np.stack([f[name][box] for name in names], axis=1)  # (samples, C, *tile)
            return torch.from_numpy(a).to(self.dtype)

        return stack(self.inputs), stack(self.targets)

    def _open(self) -> h5py.File:
        # One handle per process: a DataLoader worker is a fork and opens its own.
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def _close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1
        return state


def _check_series(path: str, names: Sequence[str], shape: Sequence[int]) -> int:
    """Rank 0: every series exists with snapshots of ``shape``; their common length."""
    from hpcml.io import series

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file {path}")
    lengths = {}
    for name in names:
        info = series(path, name)
        if tuple(info["shape"]) != tuple(shape):
            raise ValueError(
                f"series {name!r} has snapshots of shape {tuple(info['shape'])}, the grid's field is {tuple(shape)}"
            )
        lengths[name] = int(info["n"])
    if len(set(lengths.values())) != 1:
        raise ValueError(f"series lengths differ: {lengths}")
    return next(iter(lengths.values()))


def tile_loader(
    dataset: TileDataset,
    grid: TrainGrid,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    **kwargs: Any,
) -> DataLoader:
    """A ``DataLoader`` over this replica's share of each global batch of ``batch_size`` samples.

    Uses ``torch.utils.data.DistributedSampler`` with the grid's replicas
    (``num_replicas = grid.data``, ``rank = grid.data_rank``); call
    ``loader.sampler.set_epoch(epoch)`` each epoch, as with DDP.  ``kwargs`` go
    to ``DataLoader`` (``num_workers``, ``pin_memory``, ...).
    """
    if batch_size < 1 or batch_size % grid.data:
        raise ValueError(f"the global batch {batch_size} must be a positive multiple of the {grid.data} replicas")
    sampler = DistributedSampler(
        dataset, num_replicas=grid.data, rank=grid.data_rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(dataset, batch_size=batch_size // grid.data, sampler=sampler, **kwargs)
