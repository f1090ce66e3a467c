"""``torch.distributed`` over hpcml's ``data x spatial`` grid, and DDP that sums over tiles.

:func:`init_process_group` creates the default process group on the ranks of
``grid.comm`` (torch rank = grid rank) — gloo for CPU tensors, NCCL for CUDA —
with a rendezvous that needs no environment variables: rank 0 starts a
``TCPStore`` on a free port and broadcasts its address over MPI (loopback when
every rank shares one node, this host's address otherwise, or
``HPCML_TORCH_ADDR``).  It then makes the data groups (ranks holding the same
tile in every replica) and the spatial groups (the tiles of one replica).

:func:`distributed_data_parallel` wraps a model in PyTorch's own
``DistributedDataParallel`` on the data group and registers
:func:`grid_allreduce_hook`: each gradient bucket is summed over every rank of
the grid and divided by the number of replicas — the sum over the tiles (each
holds a partial gradient of the shared weights, since its loss covers only its
tile) and DDP's usual mean over replicas, in one collective.  With the loss of
each tile normalised by the element count of the whole field
(:func:`mse_loss`), the model trains exactly as on one process.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from mpi4py import MPI

from hpcml.nn.grid import TrainGrid

__all__ = [
    "ProcessGroups",
    "destroy_process_group",
    "distributed_data_parallel",
    "global_loss",
    "grid_allreduce_hook",
    "init_process_group",
    "mse_loss",
    "process_groups",
]

_GROUPS: dict[int, ProcessGroups] = {}


@dataclass
class ProcessGroups:
    """The torch process groups of a :class:`~hpcml.nn.grid.TrainGrid`.

    Attributes
    ----------
    grid
        The grid.
    backend
        ``"gloo"`` or ``"nccl"``.
    device
        The device this rank's model and tensors live on.
    world
        All ranks of the grid (the default group).
    data
        This rank's data group: the same tile in every replica.
    spatial
        This rank's spatial group: the tiles of its replica.
    address
        The rendezvous ``host:port``.
    """

    grid: TrainGrid
    backend: str
    device: torch.device
    world: Any
    data: Any
    spatial: Any
    address: str


def _default_device(grid: TrainGrid) -> torch.device:
    """GPU ``local_rank % device_count`` if this rank sees CUDA, else the CPU (collective either way)."""
    node = grid.comm.Split_type(MPI.COMM_TYPE_SHARED)  # on every rank: whether CUDA is seen may differ
    local = node.Get_rank()
    node.Free()
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local % torch.cuda.device_count())


def _rendezvous_host(comm: MPI.Comm) -> str:
    """Loopback when every rank is on one node, else this host's address; decided on rank 0 (collective)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    one_node = comm.allreduce(node.Get_size(), op=MPI.MIN) == comm.Get_size()
    node.Free()
    host = None
    if comm.Get_rank() == 0:
        host = os.environ.get("HPCML_TORCH_ADDR") or (
            "127.0.0.1" if one_node else socket.gethostbyname(socket.gethostname())
        )
    return comm.bcast(host, root=0)


def init_process_group(
    grid: TrainGrid,
    backend: str | None = None,
    device: torch.device | str | None = None,
    timeout: timedelta = timedelta(minutes=10),
) -> ProcessGroups:
    """Start ``torch.distributed`` on ``grid.comm`` and make its data and spatial groups (collective).

    Parameters
    ----------
    grid
        The process grid; torch ranks are ``grid.comm`` ranks.
    backend
        ``None``: NCCL when every rank's device is a GPU, gloo otherwise.
    device
        ``None``: GPU ``local_rank % device_count`` when CUDA is available, else the CPU.
    timeout
        For the rendezvous and every collective.

    Returns
    -------
    ProcessGroups
        Also remembered for :func:`process_groups` and :func:`distributed_data_parallel`.

    Raises
    ------
    RuntimeError
        On every rank, when rank 0 cannot start the rendezvous store, or when a
        default process group of another size already exists.
    """
    comm = grid.comm
    dev = torch.device(device) if device is not None else _default_device(grid)
    if backend is None:  # agreed on by every rank: NCCL only if every rank has a GPU
        backend = "nccl" if comm.allreduce(dev.type == "cuda", op=MPI.LAND) else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.is_initialized():
        raise RuntimeError(
            "a torch.distributed process group already exists; call hpcml.torch.destroy_process_group() first"
        )
    host = _rendezvous_host(comm)
    store, port, error = None, None, None
    if comm.Get_rank() == 0:
        try:
            store = dist.TCPStore(host, 0, comm.Get_size(), True, timeout=timeout, wait_for_workers=False)
            port = int(store.port)
        except Exception as exc:  # shared with every rank below
            error = f"{type(exc).__name__}: {exc}"
    port, error = comm.bcast((port, error), root=0)
    if error is not None:
        raise RuntimeError(f"init_process_group: rank 0 could not start the rendezvous on {host}: {error}")
    if store is None:
        store = dist.TCPStore(host, port, comm.Get_size(), False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=grid.rank, world_size=grid.size, timeout=timeout)
    # new_group is collective over the default group: every rank creates every group, in one order.
    data = spatial = None
    for s in range(grid.spatial):
        g = dist.new_group([s + d * grid.spatial for d in range(grid.data)])
        if s == grid.spatial_rank:
            data = g
    for d in range(grid.data):
        g = dist.new_group([d * grid.spatial + s for s in range(grid.spatial)])
        if d == grid.data_rank:
            spatial = g
    groups = ProcessGroups(grid, backend, dev, dist.group.WORLD, data, spatial, f"{host}:{port}")
    _GROUPS[id(grid)] = groups
    return groups


def process_groups(grid: TrainGrid) -> ProcessGroups:
    """The groups :func:`init_process_group` made for ``grid``."""
    try:
        return _GROUPS[id(grid)]
    except KeyError:
        raise RuntimeError("call hpcml.torch.init_process_group(grid) first") from None


def destroy_process_group() -> None:
    """Tear ``torch.distributed`` down (collective); a new :func:`init_process_group` may follow."""
    _GROUPS.clear()
    if dist.is_initialized():
        dist.destroy_process_group()


def grid_allreduce_hook(state: ProcessGroups, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: sum a bucket over every rank of the grid, divide by the replicas.

    Register it with ``ddp.register_comm_hook(process_groups(grid), grid_allreduce_hook)``
    (:func:`distributed_data_parallel` does).
    """
    buf = bucket.buffer()
    if state.grid.data > 1:
        buf.div_(state.grid.data)
    fut = dist.all_reduce(buf, group=state.world, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


# DDP checks a hook's annotations as objects; this module's are strings (postponed evaluation).
grid_allreduce_hook.__annotations__ = {
    "state": ProcessGroups,
    "bucket": dist.GradBucket,
    "return": torch.futures.Future[torch.Tensor],
}


def distributed_data_parallel(model: torch.nn.Module, grid: TrainGrid, **kwargs: Any) -> Any:
    """``torch.nn.parallel.DistributedDataParallel`` over ``grid``'s replicas, summing over its tiles.

    Broadcasts the parameters and buffers of grid rank 0 to every rank (the
    tiles of a replica must start equal too), wraps ``model`` in DDP on the
    data group and registers :func:`grid_allreduce_hook`.  ``kwargs`` go to
    DDP (``device_ids`` defaults to the grid's GPU).
    """
    groups = process_groups(grid)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0, group=groups.world)
    if groups.device.type == "cuda":
        kwargs.setdefault("device_ids", [groups.device])
    ddp = torch.nn.parallel.DistributedDataParallel(model, process_group=groups.data, **kwargs)
    ddp.register_comm_hook(groups, grid_allreduce_hook)
    return ddp


def mse_loss(pred: torch.Tensor, target: torch.Tensor, grid: TrainGrid) -> torch.Tensor:
    """The share of this tile in the replica's mean squared error over its batch and the whole field.

    ``sum((pred - target)^2) / (N * C * cells of the field)``: summed over the
    tiles of a replica it is ``F.mse_loss`` on the gathered field, so the
    tiles' weight gradients add up to the single-process gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    count = pred.shape[0] * pred.shape[1] * math.prod(grid.shape)
    return ((pred - target) ** 2).sum() / count


def global_loss(loss: torch.Tensor | float, grid: TrainGrid) -> float:
    """Sum a per-tile loss over the tiles and average it over the replicas (MPI, collective)."""
    value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return grid.comm.allreduce(value, op=MPI.SUM) / grid.data
