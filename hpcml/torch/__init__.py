"""PyTorch as hpcml's training front end (the extra ``torch``).

A PyTorch model trains on a field split into tiles over MPI ranks and computes
what it computes on one process:

* :func:`halo_exchange` (autograd, in place through DLPack: NumPy views of CPU
  tensors, CuPy views of CUDA tensors) and :func:`halo_pad`;
* modules :class:`HaloConv1d`/:class:`HaloConv2d`/:class:`HaloConv3d` (drop-in
  ``torch.nn.ConvNd`` subclasses), :class:`HaloMaxPool2d`/``3d``,
  :class:`HaloAvgPool2d`/``3d`` (and 1-D), :class:`HaloPad`;
* :func:`init_process_group` (gloo on CPU, NCCL on GPU, rendezvous over MPI)
  and :func:`distributed_data_parallel`: PyTorch's own
  ``DistributedDataParallel`` on the grid's data communicator, with a
  communication hook that also sums the gradients over the tiles;
* :class:`TileDataset` / :func:`tile_loader`: each rank reads its hyperslab of
  an hpcml HDF5 series, batches split over replicas like ``DistributedSampler``;
* :func:`save_checkpoint` / :func:`load_checkpoint`: models, optimizers and
  schedulers through :mod:`hpcml.io.checkpoint`, resumable on another grid;
* :class:`UNet`: the surrogate of ``examples/train_surrogate_torch.py``.

The process grid is :class:`hpcml.nn.TrainGrid` (``data x spatial``).  See
``docs/training.md``.
"""

from __future__ import annotations

from hpcml.nn.grid import TrainGrid
from hpcml.torch.checkpoint import load_checkpoint, save_checkpoint
from hpcml.torch.data import TileDataset, tile_loader
from hpcml.torch.distributed import (
    ProcessGroups,
    destroy_process_group,
    distributed_data_parallel,
    global_loss,
    grid_allreduce_hook,
    init_process_group,
    mse_loss,
    process_groups,
)
from hpcml.torch.exchange import HaloExchangeFunction, halo_exchange, halo_pad, timer
from hpcml.torch.layers import (
    HaloAvgPool1d,
    HaloAvgPool2d,
    HaloAvgPool3d,
    HaloConv1d,
    HaloConv2d,
    HaloConv3d,
    HaloMaxPool1d,
    HaloMaxPool2d,
    HaloMaxPool3d,
    HaloPad,
)
from hpcml.torch.unet import UNet

__all__ = [
    "HaloAvgPool1d",
    "HaloAvgPool2d",
    "HaloAvgPool3d",
    "HaloConv1d",
    "HaloConv2d",
    "HaloConv3d",
    "HaloExchangeFunction",
    "HaloMaxPool1d",
    "HaloMaxPool2d",
    "HaloMaxPool3d",
    "HaloPad",
    "ProcessGroups",
    "TileDataset",
    "TrainGrid",
    "UNet",
    "destroy_process_group",
    "distributed_data_parallel",
    "global_loss",
    "grid_allreduce_hook",
    "halo_exchange",
    "halo_pad",
    "init_process_group",
    "load_checkpoint",
    "mse_loss",
    "process_groups",
    "save_checkpoint",
    "tile_loader",
    "timer",
]
