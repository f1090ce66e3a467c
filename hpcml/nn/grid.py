"""Process grid for training: ``data`` replicas x ``spatial`` tiles of the field.

The ranks of ``comm`` form a ``data x spatial`` grid.  Ranks ``r`` with the same
``r // spatial`` are one *replica*: together they hold one copy of the model and
split the field as a :class:`~hpcml.decomp.CartDecomp` (``spatial_comm``).  Ranks
with the same ``r % spatial`` hold the same tile in different replicas
(``data_comm``).  Weight gradients are summed over every rank of ``comm`` (tiles
and replicas), because losses are normalised by the *global* element count.

Activations are channels-last tiles ``(N, *local_shape, C)``.  Halo exchanges on
them reuse :class:`~hpcml.halo.HaloExchange` plans through a *stacked*
decomposition of ``(N, *shape, C)`` with one rank along ``N`` and ``C`` and the
field's process grid in between, built once per ``(N, C, halo, periodic)`` and
cached here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.backend import array_module
from hpcml.decomp import CartDecomp
from hpcml.halo import HaloExchange, get_plan
from hpcml.runtime import comm_or_world

__all__ = ["HaloOp", "TrainGrid"]


class TrainGrid:
    """A ``data x spatial`` process grid over ``comm``.

    Parameters
    ----------
    comm
        All training ranks (``MPI.COMM_WORLD`` by default).
    data
        Number of data-parallel replicas; must divide ``comm.size``.  The other
        ``comm.size // data`` ranks of each replica split the field.
    shape
        Global field shape (spatial dimensions only, e.g. ``(ny, nx)``).
    dims
        Spatial ranks per dimension (``None``/zeros: chosen from ``shape`` by
        :func:`hpcml.decomp.choose_dims`).
    periodic
        Periodicity of the field per dimension (default padding of conv layers).

    Attributes
    ----------
    comm, size, rank
        The whole grid.
    data, spatial
        Number of replicas and of tiles per replica.
    data_rank, spatial_rank
        This rank's replica index and tile index.
    spatial_comm, data_comm
        Communicators within a replica and across replicas (same tile).
    decomp
        The field's :class:`~hpcml.decomp.CartDecomp` over ``spatial_comm`` (halo 0).
    """

    def __init__(
        self,
        comm: MPI.Comm | None = None,
        data: int = 1,
        shape: Sequence[int] = (1,),
        dims: Sequence[int] | None = None,
        periodic: bool | Sequence[bool] = False,
    ) -> None:
        comm = comm_or_world(comm)
        size = comm.Get_size()
        data = int(data)
        # Checked before any collective so that every rank fails with the same message.
        if data < 1 or size % data:
            raise ValueError(f"data_parallel={data} must be a positive divisor of the {size} ranks")
        self.comm = comm
        self.size = size
        self.rank = comm.Get_rank()
        self.data = data
        self.spatial = size // data
        self.data_rank, self.spatial_rank = divmod(self.rank, self.spatial)
        self.spatial_comm = comm.Split(self.data_rank, self.spatial_rank)
        self.data_comm = comm.Split(self.spatial_rank, self.data_rank)
        self.decomp = CartDecomp(tuple(shape), self.spatial_comm, dims=dims, periodic=periodic, halo=0)
        self.ndim = self.decomp.ndim
        self._stacked: dict[Any, CartDecomp] = {}
        self._owns_comms = True
        self._coarse: dict[tuple[int, ...], TrainGrid] = {}

    def coarsened(self, factor: int | Sequence[int]) -> TrainGrid:
        """The same process grid over the field subsampled by ``factor`` (after a pool or a strided conv).

        Every tile's extent must be a multiple of ``factor`` along its axis, so
        the coarse tiles are the fine tiles divided by it.  Shares this grid's
        communicators (collective: builds one decomposition).
        """
        nd = self.ndim
        f = (int(factor),) * nd if isinstance(factor, (int, np.integer)) else tuple(int(v) for v in factor)
        if len(f) != nd or min(f) < 1:
            raise ValueError(f"factor must be one positive int or {nd} of them, got {factor!r}")
        for d, s in enumerate(f):
            n, p = self.decomp.shape[d], self.decomp.dims[d]
            if s > 1 and n % (p * s):  # tile sizes differ by at most one, so all are multiples of s only if equal
                raise ValueError(
                    f"cannot coarsen axis {d} by {s}: {n} cells over {p} ranks are not tiles of a multiple of {s}"
                )
        if f in self._coarse:
            return self._coarse[f]
        out = object.__new__(TrainGrid)
        out.__dict__.update(self.__dict__)
        out.decomp = CartDecomp(
            tuple(n // s for n, s in zip(self.decomp.shape, f)),
            self.spatial_comm,
            dims=self.decomp.dims,
            periodic=self.decomp.periodic,
            halo=0,
        )
        out._stacked = {}
        out._coarse = {}
        out._owns_comms = False
        self._coarse[f] = out  # cached, and freed with this grid
        return out

    @property
    def local_shape(self) -> tuple[int, ...]:
        """Spatial shape of this rank's tile."""
        return self.decomp.local_shape

    @property
    def shape(self) -> tuple[int, ...]:
        """Global spatial shape of the field."""
        return self.decomp.shape

    def check_halo(self, halo: Sequence[int], periodic: Sequence[bool], what: str) -> None:
        """Raise ``ValueError`` if a halo is wider than the narrowest neighbouring tile.

        A ghost layer is filled from one neighbour only, so it cannot be wider than
        that neighbour's tile.  Checked from the arguments alone (no communication).
        """
        for d, h in enumerate(halo):
            exchanged = self.decomp.dims[d] > 1 or periodic[d]
            smallest = self.decomp.shape[d] // self.decomp.dims[d]
            if exchanged and h > smallest:
                raise ValueError(
                    f"{what}: halo width {h} in dimension {d} is wider than the smallest tile "
                    f"({smallest} cells; field {self.decomp.shape} over dims {self.decomp.dims}); "
                    f"use fewer spatial ranks along dimension {d}, a smaller kernel or dilation"
                )

    def stacked(self, lead: int, trail: int, halo: Sequence[int], periodic: Sequence[bool]) -> CartDecomp:
        """Decomposition of ``(lead, *shape, trail)`` matching the field's tiles (cached, collective once)."""
        key = (int(lead), int(trail), tuple(halo), tuple(bool(p) for p in periodic))
        d = self._stacked.get(key)
        if d is None:
            d = CartDecomp(
                (int(lead), *self.decomp.shape, int(trail)),
                self.spatial_comm,
                dims=(1, *self.decomp.dims, 1),
                periodic=(False, *key[3], False),
                halo=(0, *key[2], 0),
            )
            self._stacked[key] = d
        return d

    def free(self) -> None:
        """Release the communicators (collective), and those of the grids :meth:`coarsened` made."""
        for g in self._coarse.values():
            g.free()
        self._coarse.clear()
        for d in self._stacked.values():
            d.free()
        self._stacked.clear()
        self.decomp.free()
        if not self._owns_comms:  # a coarsened view: the comms belong to the grid it came from
            return
        for c in (self.spatial_comm, self.data_comm):
            if c != MPI.COMM_NULL:
                c.Free()

    def __repr__(self) -> str:
        return (
            f"TrainGrid(size={self.size}, data={self.data}, spatial={self.spatial}, "
            f"field={self.decomp.shape}, dims={self.decomp.dims}, rank={self.rank})"
        )


class HaloOp:
    """Out-of-place halo exchange of channels-last tiles and its adjoint.

    ``forward(x)`` copies the tile ``x`` of shape ``(N, *local_shape, C)`` into a
    ghosted buffer ``(N, *(n + 2h), C)`` and fills the ghosts from the neighbours
    (zeros on a non-periodic global boundary, so the layer sees zero padding there
    and real data everywhere else).  ``adjoint(g)`` takes a ghosted gradient, sends
    every ghost value back to the cell it came from, *adds* it there and returns
    the interior: ``<forward(x), y> == <x, adjoint(y)>`` summed over all ranks.

    Parameters
    ----------
    grid
        The :class:`TrainGrid`.
    halo
        Ghost width per spatial dimension.
    periodic
        Periodic padding per spatial dimension.
    method
        Halo method passed to :func:`hpcml.halo.get_plan`.
    """

    def __init__(
        self, grid: TrainGrid, halo: Sequence[int], periodic: Sequence[bool], method: str = "auto", what: str = ""
    ) -> None:
        self.grid = grid
        self.halo = tuple(int(h) for h in halo)
        self.periodic = tuple(bool(p) for p in periodic)
        self.method = method
        grid.check_halo(self.halo, self.periodic, what or "halo exchange")
        self.active = any(h > 0 for h in self.halo)
        self._buf: Any = None
        #: seconds spent in exchanges and adjoints (for the benchmark's breakdown)
        self.seconds = 0.0

    def _plan(self, x: Any) -> tuple[HaloExchange, tuple[slice, ...]]:
        n, c = x.shape[0], x.shape[-1]
        d = self.grid.stacked(n, c, self.halo, self.periodic)
        plan = get_plan(d, x.dtype, array_module(x), self.method, corners=True, order="C")
        return plan, d.interior

    def ghosted_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the ghosted buffer for a tile of shape ``x_shape``."""
        return (x_shape[0], *(n + 2 * h for n, h in zip(x_shape[1:-1], self.halo)), x_shape[-1])

    def forward(self, x: Any, out: Any = None) -> Any:
        """Ghosted copy of ``x`` with the ghosts filled (``out`` reused if given)."""
        out, req = self.start(x, out)
        self.finish(req)
        return out

    def start(self, x: Any, out: Any = None) -> tuple[Any, Any]:
        """Copy ``x`` into the ghosted buffer and start filling the ghosts.

        Returns ``(buffer, request)``.  Until :meth:`finish` the owned cells of the
        buffer may be read (the outgoing faces were captured) but not written, and
        the ghosts are not valid yet.
        """
        t0 = time.perf_counter()
        self._check(x)
        xp = array_module(x)
        gshape = self.ghosted_shape(x.shape)
        if out is None or tuple(out.shape) != gshape or out.dtype != x.dtype:
            out = xp.zeros(gshape, dtype=x.dtype)  # zero ghosts = zero padding at the global edge
        if not self.active:
            out[...] = x
            return out, None
        plan, interior = self._plan(x)
        out[interior] = x
        req = plan.start(out)
        self.seconds += time.perf_counter() - t0
        return out, req

    def finish(self, req: Any) -> None:
        """Wait for the exchange started by :meth:`start`."""
        if req is None:
            return
        t0 = time.perf_counter()
        req.wait()
        self.seconds += time.perf_counter() - t0

    def adjoint(self, g: Any) -> Any:
        """Interior of ``g`` after adding every ghost value into its owner (``g`` is modified)."""
        if not self.active:
            return g
        t0 = time.perf_counter()
        n, c = g.shape[0], g.shape[-1]
        d = self.grid.stacked(n, c, self.halo, self.periodic)
        if tuple(g.shape) != d.ghosted_shape:
            raise ValueError(f"adjoint: gradient shape {tuple(g.shape)} != ghosted shape {d.ghosted_shape}")
        plan = get_plan(d, g.dtype, array_module(g), self.method, corners=True, order="C")
        plan.adjoint(g)
        out = g[d.interior].copy()
        self.seconds += time.perf_counter() - t0
        return out

    def _check(self, x: Any) -> None:
        want = self.grid.local_shape
        if x.ndim != len(want) + 2 or tuple(x.shape[1:-1]) != tuple(want):
            raise ValueError(
                f"expected a channels-last tile of shape (N, {', '.join(map(str, want))}, C), got {tuple(x.shape)}"
            )


def as_periodic(value: Any, ndim: int, default: Sequence[bool]) -> tuple[bool, ...]:
    """Normalise a padding argument (``None``, ``"zeros"``, ``"periodic"`` or bools per dim)."""
    if value is None:
        return tuple(bool(p) for p in default)
    if isinstance(value, str):
        if value not in ("zeros", "periodic"):
            raise ValueError(f"padding must be 'zeros' or 'periodic', got {value!r}")
        return (value == "periodic",) * ndim
    if isinstance(value, (bool, np.bool_)):
        return (bool(value),) * ndim
    items = tuple(bool(v) for v in value)
    if len(items) != ndim:
        raise ValueError(f"padding has {len(items)} entries for a {ndim}-D field")
    return items
