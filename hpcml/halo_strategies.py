"""Halo-exchange strategies: one small class per method, behind a registry.

:class:`~hpcml.halo.HaloExchange` is a front: it computes the
:class:`~hpcml.halo_layout.HaloLayout` (what moves) and hands the how to one
strategy class looked up by name in :data:`REGISTRY` (Devito keeps its halo
builders the same way).  A strategy holds only its own plan -- buffers, compiled
region tables, MPI datatypes, persistent requests -- and implements four calls:

``new_state()``
    Buffers and requests for one exchange in flight (pooled by the front).
``start(stage, data, state)``
    Post the stage's receives, assemble and post its sends, do its local copies;
    return the requests to complete.
``finish(stage, data, state)``
    After the requests completed: scatter received buffers into the ghosts.
``adjoint(data)``
    The transpose of the whole exchange (ghost values summed back into their owners).

The front calls ``start``/``finish`` for rounds ``0..nrounds-1``: one per layout
stage, except that the host strategies fold stages without messages into the
copies of a neighbouring round (:func:`~hpcml.halo_layout.host_rounds`).

Registered here: ``pack`` and ``datatype`` for host arrays, ``staged`` and
``device`` for GPU arrays (CuPy or Numba-CUDA); :mod:`hpcml.halo_shm` adds ``shm``
(host arrays, ranks on one node).  A new method is one subclass of
:class:`HaloStrategy` and one :func:`register_strategy` call; ``method="auto"``
then considers it too (see :func:`hpcml.halo.choose_method`).
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from hpcml.devices import device_ops
from hpcml.halo_layout import HaloLayout, Message, forward_tables, host_rounds, packed_rows, region_table
from hpcml.kernels.pack import ADD_COPY, ADD_UNPACK, COPY, PACK, ZERO, run_table

__all__ = [
    "REGISTRY",
    "DatatypeStrategy",
    "DeviceStrategy",
    "HaloStrategy",
    "PackStrategy",
    "StagedStrategy",
    "register_strategy",
    "unregister_strategy",
]

_WORDS = {8: np.uint64, 4: np.uint32, 2: np.uint16, 1: np.uint8}

#: name -> strategy class; ``method=NAME`` picks one, ``"auto"`` chooses among them
REGISTRY: dict[str, type[HaloStrategy]] = {}


def register_strategy(cls: type[HaloStrategy]) -> type[HaloStrategy]:
    """Add a strategy class under ``cls.name`` (usable as a class decorator)."""
    name = getattr(cls, "name", "")
    if not name or name == "auto":
        raise ValueError(f"a halo strategy needs a name other than 'auto', got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, HaloStrategy)):
        raise TypeError(f"{cls!r} is not a HaloStrategy subclass")
    REGISTRY[name] = cls
    return cls


def unregister_strategy(name: str) -> None:
    """Remove a registered strategy (plans already built keep working)."""
    REGISTRY.pop(name, None)


class HaloStrategy(ABC):
    """How one halo-exchange method moves the messages of a :class:`HaloLayout`.

    Parameters
    ----------
    layout
        Stages, messages and local copies (shared by all methods).
    xp
        Array module of the arrays served: ``numpy``, ``cupy`` or ``numba.cuda``.

    Class attributes
    ----------------
    name
        The ``method=`` string.
    device
        Serves GPU arrays (``True``) or host arrays (``False``).
    priority
        ``method="auto"`` without a measured model takes the usable strategy of
        highest priority for the array's kind.
    refines
        The method this one does better where it is usable: ``auto`` takes it where
        the measured model picks that method.
    """

    name: ClassVar[str] = ""
    device: ClassVar[bool] = False
    priority: ClassVar[int] = 0
    refines: ClassVar[str] = ""

    def __init__(self, layout: HaloLayout, xp: ModuleType) -> None:
        self.layout = layout
        self.xp = xp
        self.comm = layout.decomp.cart
        self.mpi_type = from_numpy_dtype(layout.dtype)
        self.itemsize = layout.dtype.itemsize

    @classmethod
    def usable(cls) -> bool:
        """Whether ``auto`` may pick this strategy on this machine (e.g. CUDA-aware MPI present)."""
        return True

    @classmethod
    def collective_check(cls, comm: MPI.Comm) -> bool:
        """Whether the strategy works on every rank of ``comm``; ``auto`` skips it where not.

        Called on every rank, once per decomposition, after rank 0 chose the strategy;
        an override that communicates must end in a collective answer (``shm``: one
        node, and every rank can map the others' segments).  True here.
        """
        return True

    @property
    def nrounds(self) -> int:
        """Rounds of one exchange: ``start``/``finish`` take ``0..nrounds-1`` (one per layout stage here)."""
        return len(self.layout.stages)

    @abstractmethod
    def new_state(self) -> Any:
        """Buffers and requests for one exchange in flight."""

    @abstractmethod
    def start(self, stage: int, data: Any, state: Any) -> list[MPI.Request]:
        """Begin round ``stage`` (see :attr:`nrounds`) on ``data``; return the requests to complete."""

    def finish(self, stage: int, data: Any, state: Any) -> None:  # noqa: B027 - optional hook
        """Complete round ``stage`` once its requests are done (unpack received buffers)."""

    def arrived(self, stage: int, state: Any) -> bool:
        """Whether round ``stage`` can finish without waiting, beyond its MPI requests (``shm``: flags)."""
        return True

    def exchange(self, data: Any) -> bool:
        """A blocking exchange of ``data`` by a path of the strategy's own; False: it has none.

        :meth:`hpcml.halo.HaloExchange.exchange` tries this first and otherwise runs
        the rounds of ``start``/``finish``.  ``shm`` overrides it (no MPI message).
        """
        return False

    @abstractmethod
    def adjoint(self, data: Any) -> None:
        """Apply the adjoint of the exchange to ``data`` in place (see :meth:`hpcml.halo.HaloExchange.adjoint`)."""

    def free(self) -> None:  # noqa: B027 - optional hook
        """Release MPI objects (committed datatypes, persistent requests)."""

    # -- helpers for subclasses -----------------------------------------------------------------
    def _spec(self, buf: Any, nbytes: int) -> list[Any]:
        """mpi4py message spec: ``nbytes`` of ``buf`` as elements of the array's MPI type."""
        return [buf, nbytes // self.itemsize, self.mpi_type]


def _free_requests(reqs: Any) -> None:
    for r in reqs:
        if r != MPI.REQUEST_NULL:
            r.Free()


class _HostState:
    """One exchange in flight on the host: per-stage buffers and requests, and the array's views.

    ``words`` (the array as machine words) and ``bound`` (its persistent requests) are
    looked up once at stage 0 and dropped after the last stage, so a pooled state
    keeps no array alive.
    """

    __slots__ = ("bound", "entry", "stages", "words")

    def __init__(self, stages: list[Any]) -> None:
        self.stages = stages
        self.words: Any = None
        self.bound: Any = None
        self.entry: Any = None


class _HostStrategy(HaloStrategy):
    """Shared by the host-memory strategies: compiled region tables and the adjoint.

    Every local copy of a stage (and, for ``pack``, every packed face) runs in one
    compiled call of :func:`hpcml.kernels.pack.run_table` over the array viewed as
    machine words.  Messages sent straight from (into) the array use persistent
    requests bound to that array's memory, kept for the last few arrays seen.
    Stages without messages cost no round of their own (:attr:`rounds`): on two
    ranks an exchange split along one axis is one round, not one per dimension.
    Measured on the Zen 5 VM, 2 ranks, halo 1: 64x64 6.3-6.6 -> 5.6-5.7 us, 32^3
    split on its last axis 14.3-15.1 -> 13.0-13.2 us.
    """

    #: arrays whose bound requests are kept (two for a leapfrog pair, a few spare)
    BOUND_ARRAYS = 4

    def __init__(self, layout: HaloLayout, xp: ModuleType) -> None:
        super().__init__(layout, xp)
        self.unit = layout.word()
        self.word = _WORDS[self.unit]
        self.rounds = host_rounds(layout.stages)
        self.tables = [
            forward_tables(None if r.index is None else layout.stages[r.index], self.unit, r.before, r.after)
            for r in self.rounds
        ]
        # id(array) -> [weakref to it, per-stage (receives, sends), exchanges in flight on it]
        self._bound: OrderedDict[int, list[Any]] = OrderedDict()

    @property
    def nrounds(self) -> int:
        """Rounds of one exchange: the stages with messages (one if only copies, none if nothing)."""
        return len(self.rounds)

    def words(self, data: np.ndarray) -> np.ndarray:
        """``data``'s memory as a flat array of machine words (no copy)."""
        return data.ravel(order="K").view(self.word)

    def _open(self, rnd: int, data: np.ndarray, state: _HostState) -> tuple[np.ndarray, tuple[list[Any], list[Any]]]:
        """The array's word view and round ``rnd``'s bound requests (looked up at round 0)."""
        if rnd == 0:
            state.entry = self._entry(data)
            state.entry[2] += 1  # in flight: never evicted (its requests are active)
            state.words, state.bound = self.words(data), state.entry[1]
        index = self.rounds[rnd].index
        return state.words, (([], []) if index is None else state.bound[index])

    def finish(self, stage: int, data: np.ndarray, state: _HostState) -> None:
        """After the last round, forget the array (the state goes back to the pool)."""
        if stage == len(self.rounds) - 1 and state.entry is not None:
            state.entry[2] -= 1
            state.words = state.bound = state.entry = None

    def _entry(self, data: np.ndarray) -> list[Any]:
        """``[weakref, per-stage (receives, sends), in flight]`` of the requests bound to ``data``'s memory."""
        entry = self._bound.get(id(data))
        if entry is not None and entry[0]() is data:
            return entry
        if entry is not None:  # a dead array's id was reused
            self._drop(id(data))
        idle = [k for k, e in self._bound.items() if e[2] == 0]
        while idle and len(self._bound) >= self.BOUND_ARRAYS:  # least recently bound first
            self._drop(idle.pop(0))
        # Bound by address, without a reference: a cached request must not keep the array alive.
        address = data.__array_interface__["data"][0]
        reqs = [self.bind(i, address, data.nbytes) for i in range(len(self.layout.stages))]
        entry = self._bound[id(data)] = [weakref.ref(data), reqs, 0]
        return entry

    def bind(self, index: int, address: int, nbytes: int) -> tuple[list[Any], list[Any]]:
        """Persistent requests of stage ``index`` that read or write the array at ``address`` itself."""
        return [], []

    def _drop(self, key: int) -> None:
        _, reqs, _ = self._bound.pop(key)
        for recvs, sends in reqs:
            _free_requests(recvs + sends)

    def _direct(self, msg: Message, send: bool, address: int) -> MPI.Buffer:
        face = msg.faces[0]
        block = face.send if send else face.recv
        return MPI.buffer.fromaddress(address + block.start, block.nbytes)

    def free(self) -> None:
        """Free the requests bound to arrays."""
        while self._bound:
            self._drop(next(iter(self._bound)))

    def adjoint(self, data: np.ndarray) -> None:
        """Transpose of the exchange with packed buffers, stages in reverse (MPI types cannot add).

        Per stage: ghost layers are packed and sent back to the rank they came from,
        then zeroed; self-neighbour ghosts are added into their source cells and
        zeroed; received layers are added into the owned cells that were sent.
        Sums use the element dtype.
        """
        flat = data.ravel(order="K")
        item = self.itemsize
        for stage in reversed(self.layout.stages):
            out_rows, pos_out = packed_rows(stage.recvs, PACK, send=False)  # ghosts go back where they came from
            back_rows, pos_back = packed_rows(stage.sends, ADD_UNPACK, send=True)  # ... added into what was sent
            out_rows += [(ADD_COPY, f.recv, f.send.start) for f in stage.copies]
            out_rows += [(ZERO, f.recv, 0) for m in stage.recvs for f in m.faces]
            out_rows += [(ZERO, f.recv, 0) for f in stage.copies]
            outgoing = np.empty(pos_out // item, dtype=data.dtype)
            incoming = np.empty(pos_back // item, dtype=data.dtype)
            reqs, pos = [], 0
            for m in stage.sends:
                reqs.append(self.comm.Irecv(self._spec(incoming[pos // item :], m.nbytes), m.peer, m.tag))
                pos += m.nbytes
            run_table(flat, outgoing, region_table(out_rows, item))
            pos = 0
            for m in stage.recvs:
                reqs.append(self.comm.Isend(self._spec(outgoing[pos // item :], m.nbytes), m.peer, m.tag))
                pos += m.nbytes
            MPI.Request.Waitall(reqs)
            run_table(flat, incoming, region_table(back_rows, item))


@register_strategy
class PackStrategy(_HostStrategy):
    """``pack``: faces packed by one compiled call per stage into one buffer per peer.

    Dense faces that travel alone are sent from (received into) the array without a
    copy; every message uses persistent requests (``Send_init``/``Recv_init``,
    started together).  The default on CPUs across nodes (on one node ``shm``,
    :mod:`hpcml.halo_shm`): on this MPICH strided MPI datatypes cost 1.2-80x a
    contiguous send of the same bytes (docs/decomposition.md).
    """

    name = "pack"
    priority = 10

    def new_state(self) -> _HostState:
        """Per stage: send and receive word buffers with their persistent requests."""
        state = []
        for stage in self.layout.stages:
            send = np.empty(sum(m.nbytes for m in stage.packed_sends) // self.unit, dtype=self.word)
            recv = np.empty(sum(m.nbytes for m in stage.packed_recvs) // self.unit, dtype=self.word)
            rreqs, sreqs, pos = [], [], 0
            for m in stage.packed_recvs:
                rreqs.append(self.comm.Recv_init(self._spec(recv[pos // self.unit :], m.nbytes), m.peer, m.tag))
                pos += m.nbytes
            pos = 0
            for m in stage.packed_sends:
                sreqs.append(self.comm.Send_init(self._spec(send[pos // self.unit :], m.nbytes), m.peer, m.tag))
                pos += m.nbytes
            state.append((send, recv, rreqs, sreqs))
        return _HostState(state)

    def bind(self, index: int, address: int, nbytes: int) -> tuple[list[Any], list[Any]]:
        """Persistent requests of the stage's direct (unpacked) messages."""
        stage = self.layout.stages[index]
        recvs = [
            self.comm.Recv_init(self._spec(self._direct(m, False, address), m.nbytes), m.peer, m.tag)
            for m in stage.recvs
            if m.direct
        ]
        sends = [
            self.comm.Send_init(self._spec(self._direct(m, True, address), m.nbytes), m.peer, m.tag)
            for m in stage.sends
            if m.direct
        ]
        return recvs, sends

    def start(self, stage: int, data: np.ndarray, state: _HostState) -> list[MPI.Request]:
        """Receives first, then one compiled pack (and local copies), then the sends."""
        words, (drecv, dsend) = self._open(stage, data, state)
        index = self.rounds[stage].index
        send, _, rreqs, sreqs = state.stages[index] if index is not None else (words[:0], None, [], [])
        recvs, sends = rreqs + drecv, sreqs + dsend
        if recvs:
            MPI.Prequest.Startall(recvs)
        run_table(words, send, self.tables[stage][0])
        if sends:
            MPI.Prequest.Startall(sends)
        return recvs + sends

    def finish(self, stage: int, data: np.ndarray, state: _HostState) -> None:
        """One compiled unpack of every packed message of the round (and the copies after it)."""
        index = self.rounds[stage].index
        run_table(state.words, state.words[:0] if index is None else state.stages[index][1], self.tables[stage][1])
        super().finish(stage, data, state)

    def free(self) -> None:
        """Free bound requests (pooled states free theirs in :meth:`free_state`)."""
        super().free()

    def free_state(self, state: _HostState) -> None:
        """Free the persistent requests of a pooled state."""
        for _, _, rreqs, sreqs in state.stages:
            _free_requests(rreqs + sreqs)


@register_strategy
class DatatypeStrategy(_HostStrategy):
    """``datatype``: each message is one committed MPI datatype over the ghosted array.

    A message holding several faces is a struct of their subarray types, so the
    bytes on the wire match ``pack``'s.  No copies on hpcml's side except the local
    (self-neighbour) ones; the MPI library walks the strides.
    """

    name = "datatype"
    priority = 0

    def __init__(self, layout: HaloLayout, xp: ModuleType) -> None:
        super().__init__(layout, xp)
        order = MPI.ORDER_C if layout.order == "C" else MPI.ORDER_FORTRAN
        self._types: dict[tuple[int, bool, int], MPI.Datatype] = {}
        for s, stage in enumerate(layout.stages):
            for side, msgs in ((True, stage.sends), (False, stage.recvs)):
                for i, m in enumerate(msgs):
                    self._types[(s, side, i)] = self._message_type(m, side, order)
        # per round: copies before the messages start (earlier stages'), with them, after them
        self.copy_tables = [
            tuple(
                region_table([(COPY, f.send, f.recv.start) for f in faces], self.unit)
                for faces in (r.before, () if r.index is None else layout.stages[r.index].copies, r.after)
            )
            for r in self.rounds
        ]

    def _message_type(self, msg: Message, send: bool, order: int) -> MPI.Datatype:
        subs = []
        for f in msg.faces:
            region = f.send_region if send else f.recv_region
            sizes = list(self.layout.shape)
            subsizes = [s.stop - s.start for s in region]
            starts = [s.start for s in region]
            subs.append(self.mpi_type.Create_subarray(sizes, subsizes, starts, order=order))
        if len(subs) == 1:
            return subs[0].Commit()
        t = MPI.Datatype.Create_struct([1] * len(subs), [0] * len(subs), subs).Commit()
        for s in subs:
            s.Free()
        return t

    def new_state(self) -> _HostState:
        """No buffers: the datatypes read and write the array."""
        return _HostState([])

    def bind(self, index: int, address: int, nbytes: int) -> tuple[list[Any], list[Any]]:
        """One persistent request per message, typed by its datatype over the whole array."""
        s, stage = index, self.layout.stages[index]
        whole = MPI.buffer.fromaddress(address, nbytes)
        recvs = [
            self.comm.Recv_init([whole, 1, self._types[(s, False, i)]], m.peer, m.tag)
            for i, m in enumerate(stage.recvs)
        ]
        sends = [
            self.comm.Send_init([whole, 1, self._types[(s, True, i)]], m.peer, m.tag) for i, m in enumerate(stage.sends)
        ]
        return recvs, sends

    def start(self, stage: int, data: np.ndarray, state: _HostState) -> list[MPI.Request]:
        """Start every message of the round; do its local copies meanwhile."""
        words, (recvs, sends) = self._open(stage, data, state)
        before, during, _ = self.copy_tables[stage]
        if recvs:
            MPI.Prequest.Startall(recvs)
        run_table(words, words, before)  # earlier stages' ghosts: the sends may read them
        if sends:
            MPI.Prequest.Startall(sends)
        run_table(words, words, during)
        return recvs + sends

    def finish(self, stage: int, data: np.ndarray, state: _HostState) -> None:
        """The copies of later stages without messages, once this round's ghosts arrived."""
        run_table(state.words, state.words, self.copy_tables[stage][2])
        super().finish(stage, data, state)

    def free(self) -> None:
        """Free bound requests and the committed datatypes."""
        super().free()
        for t in self._types.values():
            if t != MPI.DATATYPE_NULL:
                t.Free()
        self._types.clear()


class _GpuStrategy(HaloStrategy):
    """Shared by the GPU strategies: faces packed on the device into one buffer per stage.

    The device-memory operations come from :mod:`hpcml.devices`, so CuPy arrays and
    Numba-CUDA device arrays (also in the CUDA simulator) share every line.  The
    producing stream is synchronised before MPI touches a buffer.
    """

    device = True
    #: receive and send through pinned host memory (``staged``) or hand MPI device memory
    host_side: ClassVar[bool] = False

    def __init__(self, layout: HaloLayout, xp: ModuleType) -> None:
        super().__init__(layout, xp)
        self.ops = device_ops(xp)

    def new_state(self) -> list[dict[str, Any]]:
        """Per stage: device buffers (and pinned host copies) and persistent requests."""
        state = []
        for stage in self.layout.stages:
            nsend = sum(m.nbytes for m in stage.sends)
            nrecv = sum(m.nbytes for m in stage.recvs)
            st: dict[str, Any] = {"dsend": self.ops.empty(max(nsend, 1)), "drecv": self.ops.empty(max(nrecv, 1))}
            wire_send, wire_recv = st["dsend"], st["drecv"]
            if self.host_side:
                wire_send = st["hsend"] = self.ops.pinned(max(nsend, 1))
                wire_recv = st["hrecv"] = self.ops.pinned(max(nrecv, 1))
            st["send_faces"], st["recv_faces"] = (
                _face_slices(stage.sends, st["dsend"], True),
                _face_slices(stage.recvs, st["drecv"], False),
            )
            st["rreqs"] = [
                self.comm.Recv_init(self._spec(wire_recv[off : off + m.nbytes], m.nbytes), m.peer, m.tag)
                for off, m in _offsets(stage.recvs)
            ]
            st["sreqs"] = [
                self.comm.Send_init(self._spec(wire_send[off : off + m.nbytes], m.nbytes), m.peer, m.tag)
                for off, m in _offsets(stage.sends)
            ]
            state.append(st)
        return state

    def free_state(self, state: Any) -> None:
        """Free the persistent requests of a pooled state."""
        for st in state:
            _free_requests(st["rreqs"] + st["sreqs"])

    def start(self, stage: int, data: Any, state: Any) -> list[MPI.Request]:
        """Post receives, pack on the device, do local copies, synchronise, (stage), send."""
        st = state[stage]
        if st["rreqs"]:
            MPI.Prequest.Startall(st["rreqs"])
        for block, buf in st["send_faces"]:
            block.pack(data, buf)
        for f in self.layout.stages[stage].copies:
            data[f.recv_region] = data[f.send_region]
        self.ops.synchronize()  # the packs must land before MPI reads
        if self.host_side and st["sreqs"]:
            self.ops.to_host(st["dsend"], st["hsend"])
        if st["sreqs"]:
            MPI.Prequest.Startall(st["sreqs"])
        return st["rreqs"] + st["sreqs"]

    def finish(self, stage: int, data: Any, state: Any) -> None:
        """(Copy received bytes to the device,) unpack every face on the device."""
        st = state[stage]
        if self.host_side and st["rreqs"]:
            self.ops.to_device(st["hrecv"], st["drecv"])
        for block, buf in st["recv_faces"]:
            block.unpack(buf, data)

    def adjoint(self, data: Any) -> None:
        """Transpose of the exchange: ghosts packed on the device, sent back, added on arrival."""
        ops = self.ops
        for stage in reversed(self.layout.stages):
            reqs, incoming, outgoing = [], [], []
            for m in stage.sends:
                buf = np.empty(m.nbytes, np.uint8) if self.host_side else ops.empty(m.nbytes)
                incoming.append(buf)
                reqs.append(self.comm.Irecv(self._spec(buf, m.nbytes), m.peer, m.tag))
            for m in stage.recvs:
                out = ops.empty(m.nbytes)
                pos = 0
                for f in m.faces:
                    f.recv.pack(data, out[pos : pos + f.nbytes])
                    pos += f.nbytes
                outgoing.append(out)
            for f in stage.copies:  # each self-neighbour ghost is summed back into its source
                f.send.unpack(f.recv.pack(data), data, accumulate=True)
            ops.synchronize()
            for m, packed in zip(stage.recvs, outgoing):
                wire = packed
                if self.host_side:
                    wire = np.empty(m.nbytes, np.uint8)
                    ops.to_host(packed, wire)
                reqs.append(self.comm.Isend(self._spec(wire, m.nbytes), m.peer, m.tag))
            MPI.Request.Waitall(reqs)
            for m, arrived in zip(stage.sends, incoming):
                dev = arrived
                if self.host_side:
                    dev = ops.empty(m.nbytes)
                    ops.to_device(arrived, dev)
                pos = 0
                for f in m.faces:
                    f.send.unpack(dev[pos : pos + f.nbytes], data, accumulate=True)
                    pos += f.nbytes
            for f in [f for m in stage.recvs for f in m.faces] + list(stage.copies):
                data[f.recv_region] = 0


def _offsets(msgs: tuple[Message, ...]) -> list[tuple[int, Message]]:
    out, pos = [], 0
    for m in msgs:
        out.append((pos, m))
        pos += m.nbytes
    return out


def _face_slices(msgs: tuple[Message, ...], buf: Any, send: bool) -> list[tuple[Any, Any]]:
    """``(block, buffer slice)`` of every face of ``msgs``, in message order."""
    out, pos = [], 0
    for m in msgs:
        for f in m.faces:
            out.append((f.send if send else f.recv, buf[pos : pos + f.nbytes]))
            pos += f.nbytes
    return out


@register_strategy
class StagedStrategy(_GpuStrategy):
    """``staged``: pack on the device, copy to pinned host memory, send from the host."""

    name = "staged"
    priority = 5
    host_side = True


@register_strategy
class DeviceStrategy(_GpuStrategy):
    """``device``: pack on the device and hand the device buffer to a CUDA-aware MPI."""

    name = "device"
    priority = 10

    @classmethod
    def usable(cls) -> bool:
        """Only with a CUDA-aware MPI (:func:`hpcml.cudaaware.cuda_aware_mpi`)."""
        from hpcml.cudaaware import cuda_aware_mpi

        return cuda_aware_mpi()
