"""Data-parallel gradient synchronisation (DDP/Horovod style) and ZeRO-1 sharding.

:class:`DataParallel` wraps a :class:`~hpcml.nn.layers.Sequential` on a
:class:`~hpcml.nn.grid.TrainGrid`:

* At construction every rank's parameter list (names, shapes, dtypes) and
  settings are compared with one ``allgather``; a mismatch raises
  ``ValueError`` on every rank instead of hanging in a later collective.  Then
  all parameters are copied into one flat buffer (gradients into another;
  ``param.data``/``param.grad`` become views of them) and broadcast from rank 0.
* Parameters are grouped into *buckets* of about ``bucket_mb`` MiB, in reverse
  order (the order backward produces them).  During ``backward`` the model
  reports each layer's finished gradients; when a bucket is complete, and all
  buckets before it have been launched, it is launched as one ``Iallreduce``
  (in place, ``SUM``) over all ranks of the grid.  Launch order is therefore
  the same on every rank, and the reductions travel while backward continues
  (each report also calls ``Testall`` to progress them).  ``finish`` waits.
* Losses are normalised by the global element count (:mod:`hpcml.nn.losses`),
  so the summed gradient is the gradient of the global mean: summed over tiles,
  averaged (weighted by their share of the batch) over replicas.
* With ``zero=True`` each bucket is padded to a multiple of the rank count and
  launched as ``Ireduce_scatter_block`` instead: rank ``r`` receives the summed
  gradient of slice ``r`` of every bucket — its *shard*.
  :class:`ZeroShardedOptimizer` keeps optimizer state for the shard only,
  updates it and ``Iallgather``-s the parameters back (ZeRO stage 1).

Reductions run on fixed communicators in a fixed order, so results are
deterministic run to run and equal a single process to rounding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.backend import array_module
from hpcml.nn.grid import TrainGrid
from hpcml.nn.layers import Parameter, Sequential
from hpcml.nn.optim import Optimizer, make_optimizer

__all__ = ["DataParallel", "DistributedOptimizer", "ZeroShardedOptimizer", "build_optimizer"]

_MPI_TYPES = {"d": MPI.DOUBLE, "f": MPI.FLOAT}


@dataclass
class _Bucket:
    index: int
    params: list[Parameter]
    offset: int  # start in the flat buffers
    size: int  # elements of real parameters
    padded: int  # size rounded up to a multiple of the rank count (ZeRO), else size
    shard_offset: int = 0  # start of this rank's slice within the shard vector (ZeRO)
    pending: int = 0
    launched: bool = False
    request: Any = None
    ids: set[int] = field(default_factory=set)


class DataParallel:
    """Bucketed, overlapped gradient sync for a model on a :class:`TrainGrid`.

    Parameters
    ----------
    model
        The :class:`~hpcml.nn.layers.Sequential` (same architecture on every rank).
    grid
        The process grid; gradients are summed over ``grid.comm``.
    bucket_mb
        Target bucket size in MiB (a parameter larger than that gets a bucket of
        its own; ``0`` puts every parameter in its own bucket).
    zero
        Reduce-scatter into shards for :class:`ZeroShardedOptimizer`.

    Attributes
    ----------
    buckets
        The buckets, in launch order.
    flat
        A :class:`Parameter` whose ``data``/``grad`` are the flat buffers.
    comm_seconds
        Time spent waiting for gradient reductions (exposed communication).
    """

    def __init__(self, model: Sequential, grid: TrainGrid, bucket_mb: float = 25.0, zero: bool = False) -> None:
        self.model = model
        self.grid = grid
        self.comm = grid.comm
        self.zero = bool(zero)
        self.bucket_mb = float(bucket_mb)
        params = model.parameters()
        sig = [(p.name, tuple(p.shape), np.dtype(p.data.dtype).str) for p in params]
        _agree(self.comm, (sig, self.bucket_mb, self.zero), "model parameters and settings (names, shapes, dtypes)")
        if not params:
            raise ValueError("DataParallel: the model has no parameters")
        dtypes = {s[2] for s in sig}
        if len(dtypes) != 1:
            raise ValueError(f"DataParallel: all parameters must share one dtype, got {sorted(dtypes)}")
        self.params = params
        self.dtype = np.dtype(params[0].data.dtype)
        if self.dtype.char not in _MPI_TYPES:
            raise ValueError(f"DataParallel: parameters must be float32 or float64, got {self.dtype}")
        # Predefined types: reductions (MPI_SUM) are not defined on user (dup) datatypes.
        self.mpi_type = _MPI_TYPES[self.dtype.char]
        self.xp = array_module(params[0].data)
        if self.xp is not np:
            from hpcml.cudaaware import cuda_aware_mpi

            # Reductions hand device buffers straight to MPI; staging through host
            # memory is not implemented for them (the halo exchanges do stage).
            if not cuda_aware_mpi():
                raise NotImplementedError(
                    "DataParallel with device (CuPy) parameters needs a CUDA-aware MPI; this one is not"
                )
        size = self.comm.Get_size()
        limit = max(0, int(self.bucket_mb * 2**20)) // self.dtype.itemsize
        groups: list[list[Parameter]] = [[]]
        count = 0
        for p in reversed(params):
            n = int(np.prod(p.shape))
            if groups[-1] and count + n > limit:
                groups.append([])
                count = 0
            groups[-1].append(p)
            count += n
        self.buckets: list[_Bucket] = []
        offset = shard_offset = 0
        for i, g in enumerate(groups):
            n = sum(int(np.prod(p.shape)) for p in g)
            padded = -(-n // size) * size if self.zero else n
            b = _Bucket(i, g, offset, n, padded, shard_offset)
            b.ids = {id(p) for p in g}
            self.buckets.append(b)
            offset += padded
            shard_offset += padded // size
        self.total = offset
        self.shard_size = shard_offset
        flat_data = self.xp.zeros(self.total, dtype=self.dtype)
        flat_grad = self.xp.zeros(self.total, dtype=self.dtype)
        self._where: dict[int, tuple[int, int]] = {}
        for b in self.buckets:
            pos = b.offset
            for p in b.params:
                n = int(np.prod(p.shape))
                flat_data[pos : pos + n] = p.data.reshape(-1)
                self._where[id(p)] = (pos, n)
                pos += n
        # Replicas start from rank 0's parameters whatever their seeds were.
        if self.xp is np:
            self.comm.Bcast([flat_data, self.mpi_type], root=0)
        else:
            self._bcast_device(flat_data)
        for p in params:
            pos, n = self._where[id(p)]
            p.data = flat_data[pos : pos + n].reshape(p.shape)
            p.grad = flat_grad[pos : pos + n].reshape(p.shape)
        self.flat = Parameter("flat", flat_data)
        self.flat.grad = flat_grad
        self.shard_grad = self.xp.zeros(self.shard_size, dtype=self.dtype) if self.zero else None
        self._owner = {pid: b for b in self.buckets for pid in b.ids}
        self._next = 0
        self.comm_seconds = 0.0
        self.launches = 0

    def _bcast_device(self, a: Any) -> None:
        host = self.xp.asnumpy(a)
        self.comm.Bcast([host, self.mpi_type], root=0)
        a[...] = self.xp.asarray(host)

    # -- the training step ---------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        """The model's parameters (views of the flat buffers)."""
        return self.params

    def forward(self, x: Any) -> Any:
        """The model's forward pass."""
        return self.model.forward(x)

    __call__ = forward

    def zero_grad(self) -> None:
        """Zero all gradients."""
        self.flat.grad[...] = 0

    def backward(self, dy: Any, sync: bool = True) -> None:
        """Backward pass; with ``sync`` launch bucket reductions as gradients finish, then wait.

        ``sync=False`` only accumulates local gradients (all micro-batches of an
        accumulation but the last).
        """
        if not sync:
            self.model.backward(dy)
            return
        for b in self.buckets:
            b.pending, b.launched, b.request = len(b.params), False, None
        self._next = 0
        self.model.backward(dy, ready=self._ready)
        self.finish()

    def sync(self) -> None:
        """Reduce the current gradients without a backward pass (a rank with no samples this step)."""
        self._next = 0
        self.finish()

    def _ready(self, params: Sequence[Parameter]) -> None:
        for p in params:
            b = self._owner.get(id(p))
            if b is not None:
                b.pending -= 1
        while self._next < len(self.buckets) and self.buckets[self._next].pending <= 0:
            self._launch(self.buckets[self._next])
            self._next += 1
        inflight = [b.request for b in self.buckets if b.request is not None]
        if inflight:
            MPI.Request.Testall(inflight)  # drive progress of the reductions already launched

    def _launch(self, b: _Bucket) -> None:
        grad = self.flat.grad[b.offset : b.offset + b.padded]
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()  # gradients must land before MPI reads
        if self.zero:
            size = self.comm.Get_size()
            part = b.padded // size
            recv = self.shard_grad[b.shard_offset : b.shard_offset + part]
            b.request = self.comm.Ireduce_scatter_block([grad, self.mpi_type], [recv, self.mpi_type], op=MPI.SUM)
        else:
            b.request = self.comm.Iallreduce(MPI.IN_PLACE, [grad, self.mpi_type], op=MPI.SUM)
        b.launched = True
        self.launches += 1

    def finish(self) -> None:
        """Launch any bucket not launched yet (in order) and wait for all of them."""
        t0 = time.perf_counter()
        while self._next < len(self.buckets):
            self._launch(self.buckets[self._next])
            self._next += 1
        MPI.Request.Waitall([b.request for b in self.buckets])
        for b in self.buckets:
            b.request = None
        self.comm_seconds += time.perf_counter() - t0

    # -- flat <-> named ------------------------------------------------------------------
    def to_named(self, flat: Any) -> dict[str, np.ndarray]:
        """Split a flat-layout array into ``{parameter name: host array}`` (copies)."""
        out = {}
        for p in self.params:
            pos, n = self._where[id(p)]
            out[p.name] = _to_host(flat[pos : pos + n]).reshape(p.shape).copy()
        return out

    def from_named(self, named: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_named` (padding zero); every name must be present with its shape."""
        flat = self.xp.zeros(self.total, dtype=self.dtype)
        for p in self.params:
            if p.name not in named:
                raise KeyError(f"no entry for parameter {p.name!r} (have {sorted(named)})")
            a = np.asarray(_to_host(named[p.name]))
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"parameter {p.name!r}: shape {tuple(a.shape)} != model's {tuple(p.shape)}")
            pos, n = self._where[id(p)]
            flat[pos : pos + n] = self.xp.asarray(a.reshape(-1))
        return flat

    def state_dict(self) -> dict[str, np.ndarray]:
        """Model parameters by name (host copies; identical on every rank)."""
        return self.to_named(self.flat.data)

    def load_state_dict(self, named: dict[str, Any]) -> None:
        """Set all parameters from ``{name: array}``."""
        self.flat.data[...] = self.from_named(named)

    # -- ZeRO helpers --------------------------------------------------------------------
    def shard_slices(self) -> list[tuple[slice, slice]]:
        """``(slice of the flat buffer, slice of the shard vector)`` per bucket for this rank."""
        size, rank = self.comm.Get_size(), self.comm.Get_rank()
        out = []
        for b in self.buckets:
            part = b.padded // size
            out.append(
                (
                    slice(b.offset + rank * part, b.offset + (rank + 1) * part),
                    slice(b.shard_offset, b.shard_offset + part),
                )
            )
        return out

    def allgather_shards(self, shard: Any, flat: Any) -> None:
        """Every rank's shard vector -> the full flat buffer ``flat`` (per bucket, blocking)."""
        size = self.comm.Get_size()
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()
        reqs = []
        for b in self.buckets:
            part = b.padded // size
            src = shard[b.shard_offset : b.shard_offset + part]
            dst = flat[b.offset : b.offset + b.padded]
            reqs.append(self.comm.Iallgather([src, self.mpi_type], [dst, self.mpi_type]))
        MPI.Request.Waitall(reqs)


class _FlatOptimizer:
    """An elementwise optimizer on one flat vector of a :class:`DataParallel`, with portable state."""

    sharded = False

    def __init__(self, ddp: DataParallel, kind: str, param: Parameter, hyper: dict[str, Any]) -> None:
        self.ddp = ddp
        self.kind = kind
        self.inner: Optimizer = make_optimizer(kind, [param], **hyper)

    @property
    def t(self) -> int:
        """Number of steps taken."""
        return self.inner.t

    def zero_grad(self) -> None:
        """Zero the (local, full-size) gradients."""
        self.ddp.zero_grad()

    def step(self) -> None:
        """Update the parameters."""
        self.inner.step()

    def _gather(self, local: Any) -> Any:
        """Full flat-layout array from this rank's slot array."""
        return local

    def _scatter(self, full: Any, local: Any) -> None:
        """Copy this rank's part of a full flat-layout array into its slot array."""
        local[...] = full

    def state_dict(self) -> dict[str, Any]:
        """``{"kind", "t", "slots": {slot: {parameter name: array}}}``: independent of rank count and sharding."""
        slots = {s: self.ddp.to_named(self._gather(arrs[0])) for s, arrs in self.inner.state.items()}
        return {"kind": self.kind, "t": self.inner.t, "slots": slots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` written on any rank count, sharded or not."""
        _check_kind(self.kind, state)
        self.inner.t = int(state["t"])
        for s, arrs in self.inner.state.items():
            self._scatter(self.ddp.from_named(state["slots"][s]), arrs[0])


class DistributedOptimizer(_FlatOptimizer):
    """An elementwise optimizer applied to the flat buffers of a :class:`DataParallel`.

    Every rank holds the full optimizer state; the gradients are already summed.
    """

    def __init__(self, ddp: DataParallel, kind: str = "adam", **hyper: Any) -> None:
        if ddp.zero:
            raise ValueError("this DataParallel reduce-scatters (zero=True): use ZeroShardedOptimizer")
        super().__init__(ddp, kind, ddp.flat, hyper)


class ZeroShardedOptimizer(_FlatOptimizer):
    """ZeRO stage 1: optimizer state sharded over the ranks.

    Rank ``r`` owns slice ``r`` of every (padded) bucket of the flat parameter
    vector.  After :class:`DataParallel` has reduce-scattered the gradients into
    this rank's shard, :meth:`step` updates the shard with the inner optimizer
    (whose state covers the shard only: 1/P of the memory) and allgathers the
    parameters.  Elementwise optimizers make the result identical to the
    unsharded one.  :meth:`state_dict` gathers the state (collective).
    """

    sharded = True

    def __init__(self, ddp: DataParallel, kind: str = "adam", **hyper: Any) -> None:
        if not ddp.zero:
            raise ValueError("ZeroShardedOptimizer needs DataParallel(..., zero=True)")
        self.slices = ddp.shard_slices()
        self.shard = Parameter("shard", ddp.xp.zeros(ddp.shard_size, dtype=ddp.dtype))
        self.shard.grad = ddp.shard_grad
        super().__init__(ddp, kind, self.shard, hyper)

    def step(self) -> None:
        """Update this rank's shard, then allgather the parameters."""
        flat = self.ddp.flat.data
        for fs, ss in self.slices:
            self.shard.data[ss] = flat[fs]
        self.inner.step()
        self.ddp.allgather_shards(self.shard.data, flat)

    def _gather(self, local: Any) -> Any:
        full = self.ddp.xp.zeros(self.ddp.total, dtype=self.ddp.dtype)
        self.ddp.allgather_shards(local, full)
        return full

    def _scatter(self, full: Any, local: Any) -> None:
        for fs, ss in self.slices:
            local[ss] = full[fs]

    @property
    def state_nbytes(self) -> int:
        """Bytes of optimizer state held by this rank."""
        return sum(a.nbytes for arrs in self.inner.state.values() for a in arrs)


def build_optimizer(ddp: DataParallel, kind: str = "adam", **hyper: Any) -> DistributedOptimizer | ZeroShardedOptimizer:
    """The optimizer matching ``ddp`` (sharded when ``ddp.zero``)."""
    cls = ZeroShardedOptimizer if ddp.zero else DistributedOptimizer
    return cls(ddp, kind, **hyper)


def _check_kind(kind: str, state: dict[str, Any]) -> None:
    have = state.get("kind", kind)
    if isinstance(have, bytes):
        have = have.decode()
    if str(have) != kind:
        raise ValueError(f"optimizer state is for {have!r}, this optimizer is {kind!r}")


def _agree(comm: MPI.Comm, value: Any, what: str) -> None:
    """Raise ``ValueError`` on every rank unless ``value`` is the same on all ranks."""
    every = comm.allgather(value)
    bad = [r for r, v in enumerate(every) if v != every[0]]
    if bad:
        r = bad[0]
        mine, theirs = every[0], every[r]
        detail = _first_difference(mine, theirs)
        raise ValueError(
            f"DataParallel: {what} differ between rank 0 and rank {r} ({detail}); "
            "every rank must build the same model, or the gradient collectives would not match"
        )


def _first_difference(a: Any, b: Any) -> str:
    sig_a, sig_b = a[0], b[0]
    if len(sig_a) != len(sig_b):
        return f"{len(sig_a)} vs {len(sig_b)} parameters"
    for x, y in zip(sig_a, sig_b):
        if x != y:
            return f"rank 0 has {x}, the other has {y}"
    return f"settings (bucket_mb, zero) {a[1:]} vs {b[1:]}"


def _to_host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.get()
