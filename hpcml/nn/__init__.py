"""Neural-network layers and training over decomposed fields.

The field a simulation already block-decomposes is trained on with the same
decomposition: each rank holds a tile, convolutions exchange halos forward and
send halo gradients back (adjoint), and replicas of the model on different
samples sum their gradients with bucketed, overlapped ``Iallreduce`` (or
ZeRO-1 reduce-scatter).  Everything runs on NumPy (CuPy where the kernels
allow) with hpcml's own halo plans and GEMM.

* :class:`TrainGrid` — ``data x spatial`` process grid over a communicator.
* :class:`HaloConv2d`, :class:`HaloConv3d`, :class:`Dense`, :class:`ReLU`,
  :class:`Tanh`, :class:`Sequential` — explicit forward/backward layers on
  channels-last tiles ``(N, *local_shape, C)``.
* :func:`mse_loss` — loss normalised by a global element count.
* :class:`SGD`, :class:`Adam` — elementwise optimizers.
* :class:`DataParallel`, :class:`DistributedOptimizer`,
  :class:`ZeroShardedOptimizer` — gradient sync and ZeRO-1.
* :class:`TileDataset`, :func:`generate_heat_pairs` — data from hpcml's solver.
* :class:`Trainer` — epochs, shuffling, accumulation, loss series, checkpoints.

See ``docs/training.md``.
"""

from __future__ import annotations

from hpcml.nn.data import TileDataset, generate_heat_pairs
from hpcml.nn.ddp import DataParallel, DistributedOptimizer, ZeroShardedOptimizer, build_optimizer
from hpcml.nn.grid import HaloOp, TrainGrid
from hpcml.nn.layers import Dense, HaloConv, HaloConv2d, HaloConv3d, Layer, Parameter, ReLU, Sequential, Tanh
from hpcml.nn.losses import global_mse, mse_loss
from hpcml.nn.optim import SGD, Adam, Optimizer, make_optimizer
from hpcml.nn.trainer import Trainer

__all__ = [
    "SGD",
    "Adam",
    "DataParallel",
    "Dense",
    "DistributedOptimizer",
    "HaloConv",
    "HaloConv2d",
    "HaloConv3d",
    "HaloOp",
    "Layer",
    "Optimizer",
    "Parameter",
    "ReLU",
    "Sequential",
    "Tanh",
    "TileDataset",
    "TrainGrid",
    "Trainer",
    "ZeroShardedOptimizer",
    "build_optimizer",
    "generate_heat_pairs",
    "global_mse",
    "make_optimizer",
    "mse_loss",
]
