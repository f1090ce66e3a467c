"""``shm``: halo exchange through memory the ranks of one node share.

On one node MPI moves a packed halo message with two copies, the sender's into
MPI's shared-memory cells and the receiver's out of them, plus its handshakes.
This strategy packs every outgoing face (dense ones too) straight into a segment
of shared memory the receiving rank has mapped, and the receiver unpacks straight
from the sender's segment: one copy fewer on each side, and no rendezvous for
large messages.  No MPI message travels at all: the ranks tell each other that data
is ready through flags in the same segments.  A flag holds the number of the last
exchange that published what it guards, written with a release store after the
packed values and read with an acquire load before them.  Two paths:

* **Blocking exchanges** (``exchange_halos``, :meth:`ShmStrategy.exchange`): per round
  one compiled call (:func:`hpcml.kernels.shm_stage.run_stage`) packs the faces into
  this rank's segment, raises this rank's flag of the stage, waits for the flag of
  every rank it receives from and unpacks from their segments.  The blocking
  exchanges share one area of the segment, with two slots per round used
  alternately.  On the Zen 4 VM, 2 ranks, 4096x4096 split on its fastest axis, halo
  1: 50-52 us with MPI tokens (how started exchanges worked until session 22), 39-44
  us this way; after a sweep over the array, as in an application, 178-192 -> 105-119
  us (``docs/decomposition.md``, "Measured").
* **Started exchanges** (``start_exchange``; the caller's work overlaps the wait):
  ``start`` packs a round into the exchange's own area and raises its flag, ``wait``
  (or a ``test`` that finds every neighbour's flag raised) unpacks.  Exchanges are
  numbered in the order they start, which every rank shares, and exchange ``n``
  uses area ``n mod MAX_STATES``; so ranks may complete exchanges in flight together
  in different orders.  Once a rank has unpacked an exchange it raises the area's
  acknowledgement flag; an area is packed again only when every rank that reads it
  has acknowledged its previous use.  Each round costs two compiled calls:
  :func:`~hpcml.kernels.shm_stage.start_stage` (the wait for the acknowledgement, the
  pack, the flag) and :func:`~hpcml.kernels.shm_stage.run_stage` from its wait on
  (the wait, the unpacks, the copies after, the acknowledgement).  With a call each
  for the wait, the pack, the flag, every unpack and the acknowledgement, a 64x64
  exchange on 2 ranks took 12.6-13.3 us started and back to back; 7.8-8.7 us this
  way (``pack``: 9.5-10.3, the blocking path 4.2-5.0).

A blocking wait polls with the CPU's spin hint; after :data:`SPINS` polls
(:data:`SPINS_SHARED` with more ranks than CPUs on the node) it returns to Python,
which lets MPI progress (``Iprobe``: an ``Ssend`` to this rank completes only once
this rank's MPI has matched it) and yields the CPU, then polls on.  Like an MPI
exchange, it waits as long as the neighbour takes to arrive.

Faces cut into chunks, each packed, flagged and unpacked in turn (so that the pages
of a fastest-axis face are still in the TLB when its ghosts are unpacked), were
measured and dropped: on the Zen 4 VM, 2 ranks, 4096x4096 split on its fastest
axis, chunks of 2048-4096 rows gave 36.4-40.2 us against 38.9-40.5 us unchunked in
the bench's loop, and were 0-30 % slower with the array swept or the caches evicted
between exchanges (every chunk waits for the slower rank).

The segments are Linux ``memfd`` files: each rank creates one per plan, and its
neighbours map it through ``/proc/<pid>/fd/<fd>`` while the plan is built (a
collective step over the decomposition's communicator, like every plan
construction, which also tells each rank where its neighbours' messages lie in
their segments); then every rank closes its file descriptors and keeps the
mappings.  Nothing is named in a file system, so a killed job leaves nothing
behind, and no later call is collective: the memory goes when the last rank drops
its mapping.

Usable when every rank of the communicator runs on one node and may open its
neighbours' files (:meth:`ShmStrategy.collective_check`, which ``method="auto"``
runs before choosing it).  Dense faces that ``pack`` sends straight from the array
(``Message.direct``) are copied through the segment as well: with MPI sending them
from the array, a 4096x4096 split on its slowest axis (two 32 KiB rows) took
1.04-1.12x the hand-written exchange, through the segment 0.84x.

Every rank must start the exchanges of a plan in the same order, as MPI messages
between the same ranks must be; a blocking exchange is complete when it returns.
"""

from __future__ import annotations

import mmap
import os
import socket
from types import ModuleType
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.halo_layout import HaloLayout, forward_tables, region_table
from hpcml.halo_strategies import _HostState, _HostStrategy, register_strategy
from hpcml.kernels.pack import COPY, PACK, UNPACK, run_table
from hpcml.kernels.shm_stage import FLAG_STRIDE, await_flags, publish, run_stage, start_stage
from hpcml.runtime import node_share

__all__ = ["ShmStrategy"]

#: started exchanges of one plan in flight at once that a segment has room for
MAX_STATES = 16

#: polls of a neighbour's flag before a blocking wait returns to Python to let MPI
#: progress and yield the CPU (about 60-150 us with the spin hint)
SPINS = 2000

#: the same with more ranks than CPUs on the node: the neighbour awaited may need this
#: rank's CPU, so yield almost at once
SPINS_SHARED = 20

_MAGIC = 0x6870636D6C73686D  # "hpcmlshm": the first word of every segment
_HEADER = 64  # bytes before the flags (magic, nonce)


def _bounded(parts: list[list[tuple[int, Any, int]]], unit: int) -> tuple[np.ndarray, np.ndarray]:
    """One region table of all ``parts`` in turn, and the row where each part starts (plus the end)."""
    bounds = np.cumsum([0] + [len(c) for c in parts]).astype(np.int64)
    return region_table([row for c in parts for row in c], unit), bounds


def _faces_at(msg: Any, send: bool) -> list[tuple[Any, int]]:
    """``(block, byte offset in the packed message)`` of each face of ``msg`` (sent or ghost layers)."""
    out, pos = [], 0
    for f in msg.faces:
        out.append((f.send if send else f.recv, pos))
        pos += f.nbytes
    return out


def _supported() -> bool:
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


class _Segment:
    """One rank's memfd segment: a header, the flags, then :data:`MAX_STATES` + 1 areas of equal size.

    Areas ``0 .. MAX_STATES - 1`` serve exchanges started with ``start`` (exchange
    ``n`` uses area ``n mod MAX_STATES``); the last one serves blocking exchanges.
    The flags hold, per area, one line per stage (by axis) and one acknowledgement.
    """

    def __init__(self, area_bytes: int, flag_bytes: int = 0) -> None:
        self.area = max(64, -(-area_bytes // 64) * 64)
        self.first = _HEADER + flag_bytes  # a multiple of 64
        self.nbytes = self.first + (MAX_STATES + 1) * self.area
        self.fd = os.memfd_create("hpcml-halo", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.nbytes)  # pages are allocated when first written
        self.map = mmap.mmap(self.fd, self.nbytes)
        self.nonce = int.from_bytes(os.urandom(7), "little")
        head = np.frombuffer(self.map, dtype=np.uint64, count=self.first // 8)
        head[:] = 0  # the flags start at 0: no exchange has published anything
        head[:2] = (_MAGIC, self.nonce)
        self.handle = (socket.gethostname(), os.getpid(), self.fd, self.nonce, self.nbytes)

    def area_start(self, area: int) -> int:
        """Byte offset of area ``area`` in the segment."""
        return self.first + area * self.area

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # the mapping stays until the last view of it is dropped
            self.fd = -1


def _open_peer(handle: tuple[str, int, int, int, int], host: str) -> mmap.mmap:
    """Map a neighbour's segment from its handle; raises ``OSError`` naming what failed."""
    name, pid, fd, nonce, nbytes = handle
    if name != host:
        raise OSError(f"the neighbour runs on {name!r}, this rank on {host!r}")
    # read and write: the compiled unpack takes writable buffers (it only reads this one)
    peer_fd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    try:
        seg = mmap.mmap(peer_fd, nbytes)
    finally:
        os.close(peer_fd)
    head = np.frombuffer(seg, dtype=np.uint64, count=2)
    if int(head[0]) != _MAGIC or int(head[1]) != nonce:
        raise OSError(f"/proc/{pid}/fd/{fd} is not the neighbour's halo segment")
    return seg


def _handshake(
    comm: MPI.Comm, area_bytes: int, peers: set[int], flag_bytes: int = 0
) -> tuple[_Segment, dict[int, Any], str]:
    """Create this rank's segment and map ``peers``' (collective over ``comm``); ``(segment, maps, error)``."""
    host = socket.gethostname()
    error = ""
    seg: _Segment | None = None
    try:
        seg = _Segment(area_bytes, flag_bytes)
    except Exception as exc:  # any failure must reach the collective below, or the other ranks would wait
        error = f"rank {comm.Get_rank()}: cannot create a memfd segment ({exc})"
    handles = comm.allgather(seg.handle if seg is not None else None)
    maps: dict[int, Any] = {}
    for p in sorted(peers):
        if error:
            break
        if handles[p] is None:
            error = f"rank {p} has no segment"
            break
        try:
            maps[p] = _open_peer(handles[p], host)
        except Exception as exc:  # as above: reported through the collective, never raised alone
            error = f"rank {comm.Get_rank()} cannot map rank {p}'s halo segment: {exc}"
    errors = [e for e in comm.allgather(error) if e]  # every rank learns every failure: no rank goes on alone
    if errors:
        if seg is not None:
            seg.close()
        return seg, {}, errors[0]
    assert seg is not None
    return seg, maps, ""


class _ShmState(_HostState):
    """A started ``shm`` exchange: its number among the plan's started exchanges, and its area."""

    __slots__ = ("area", "seq")

    def __init__(self, stages: list[Any]) -> None:
        super().__init__(stages)
        self.seq = 0
        self.area = -1


@register_strategy
class ShmStrategy(_HostStrategy):
    """``shm``: packed faces through shared memory on one node (see the module docstring).

    ``auto`` prefers it on the CPU where :meth:`collective_check` passes; otherwise
    ``pack``.  Building it is collective over the decomposition's communicator;
    freeing it is local.
    """

    name = "shm"
    priority = 20
    refines = "pack"

    def __init__(self, layout: HaloLayout, xp: ModuleType) -> None:
        super().__init__(layout, xp)
        unit = self.unit
        # per stage: bytes of its packed sends (one slot), and where each packed send starts in a slot
        self._slot = [sum(m.nbytes for m in st.sends) for st in layout.stages]
        self._starts = [np.cumsum([0] + [m.nbytes for m in st.sends])[:-1] for st in layout.stages]
        self._stage_off = np.cumsum([0] + [2 * -(-b // 64) * 64 for b in self._slot]).tolist()
        # the pack table of each round: the copies before, every send (dense faces too), the stage's copies
        self._pack = [
            forward_tables(None if r.index is None else layout.stages[r.index], unit, r.before, every=True)[0]
            for r in self.rounds
        ]
        peers = {m.peer for st in layout.stages for m in st.recvs}
        self._lines = len(layout.shape) + 1  # flag lines per area: one per stage (by axis), one ack
        flag_bytes = (MAX_STATES + 1) * self._lines * FLAG_STRIDE * 8
        seg, maps, error = _handshake(self.comm, self._stage_off[-1], peers, flag_bytes)
        if error:
            raise ValueError(f"halo method 'shm' is not usable here: {error}; use 'pack'")
        seg.close()  # every neighbour has mapped it (the handshake ends in a collective): the mapping is enough
        self._seg = seg
        self._words = np.frombuffer(seg.map, dtype=self.word)
        self._flags = np.frombuffer(seg.map, dtype=np.int64)
        self._peer_words = {p: np.frombuffer(m, dtype=self.word) for p, m in maps.items()}
        self._seq = 0  # blocking exchanges done (every rank counts the same ones)
        self._started = 0  # exchanges started with ``start`` (every rank counts the same ones)
        self._busy = [False] * MAX_STATES  # areas of started exchanges not yet completed here
        ranks, cpus = node_share(self.comm)
        self._spins = SPINS if ranks <= cpus else SPINS_SHARED
        self._theirs = self._peer_places()
        self._blocking = self._blocking_rounds()
        self._started_rounds = self._started_plan()

    # -- the blocking path -------------------------------------------------------------------
    def _flag(self, area: int, line: int) -> int:
        """int64 index, in every segment, of flag line ``line`` of area ``area`` (stage axes, then the ack)."""
        return (_HEADER + (area * self._lines + line) * FLAG_STRIDE * 8) // 8

    def _places(self) -> dict[tuple[int, int, int], tuple[int, int]]:
        """``(stage, peer, tag) -> (byte offset of the message in an area, bytes to the stage's second slot)``."""
        places = {}
        for i, st in enumerate(self.layout.stages):
            half = (self._stage_off[i + 1] - self._stage_off[i]) // 2
            for m, start in zip(st.sends, self._starts[i]):
                places[(i, m.peer, m.tag)] = (self._stage_off[i] + int(start), half)
        return places

    def _peer_places(self) -> dict[int, Any]:
        """Per neighbour: where its segment's areas start, their size, and its messages to this rank (collective)."""
        mine = self._mine = self._places()
        layout = self.layout
        outgoing: list[Any] = [None] * self.comm.Get_size()
        for i, st in enumerate(layout.stages):
            for m in st.sends:
                if outgoing[m.peer] is None:
                    outgoing[m.peer] = (self._seg.first, self._seg.area, {})
                outgoing[m.peer][2][(i, m.tag)] = mine[(i, m.peer, m.tag)]
        return {p: got for p, got in enumerate(self.comm.alltoall(outgoing)) if got is not None}

    def _blocking_rounds(self) -> list[Any]:
        """Per round: a copy table alone, or a stage's tables.

        A stage entry is ``(flag, (tables for even, odd exchanges), peer addresses,
        peer sizes, zero shifts)``; see :func:`hpcml.kernels.shm_stage.run_stage`.
        """
        layout = self.layout
        rounds: list[Any] = []
        for r in self.rounds:
            if r.index is None:
                rounds.append(region_table([(COPY, f.send, f.recv.start) for f in r.before], self.unit))
                continue
            st = layout.stages[r.index]
            tables = tuple(self._stage_tables(r, odd) for odd in (0, 1))
            peers, sizes = self._mapped([m.peer for m in st.recvs])
            rounds.append((self._flag(MAX_STATES, min(st.axes)), tables, peers, sizes, np.zeros_like(peers)))
        return rounds

    def _stage_tables(self, rnd: Any, odd: int) -> tuple[np.ndarray, ...]:
        """``(pack table, its row bounds, unpack table, its row bounds per message)`` of one blocking round."""
        st = self.layout.stages[rnd.index]
        mine = self._mine
        base = self._seg.area_start(MAX_STATES)
        rows = [(COPY, f.send, f.recv.start) for f in (*rnd.before, *st.copies)]
        for m in st.sends:
            off, half = mine[(rnd.index, m.peer, m.tag)]
            rows += [(PACK, blk, base + off + odd * half + at) for blk, at in _faces_at(m, send=True)]
        after = [(COPY, f.send, f.recv.start) for f in rnd.after]
        unpack = self._unpack_parts(rnd.index, MAX_STATES, odd)
        return (*_bounded([rows, after], self.unit), *_bounded(unpack, self.unit))

    def _unpack_parts(self, index: int, area: int, odd: int = 0) -> list[list[tuple[int, Any, int]]]:
        """Unpack rows per message stage ``index`` receives, reading the sender's area ``area``, slot ``odd``."""
        parts = []
        for m in self.layout.stages[index].recvs:
            first, area_bytes, msgs = self._theirs[m.peer]
            off, half = msgs[(index, m.tag)]
            pos = first + area * area_bytes + off + odd * half
            parts.append([(UNPACK, blk, pos + at) for blk, at in _faces_at(m, send=False)])
        return parts

    def exchange(self, data: np.ndarray) -> bool:
        """A blocking exchange through the segments, synchronised by flags: no MPI call (see the module docstring)."""
        if self._blocking is None:
            raise RuntimeError("halo method 'shm': this plan has been freed")
        words = self.words(data)
        self._seq += 1
        seq, odd = self._seq, self._seq & 1
        for rnd in self._blocking:
            if not isinstance(rnd, tuple):
                run_table(words, words[:0], rnd)
                continue
            flag, tables, peers, sizes, shifts = rnd
            args = (words, self._words, self._flags, tables[odd], peers, sizes, shifts, flag, seq)
            pos = run_stage(*args, -1, self._spins)
            while pos != len(peers):
                self._idle()
                pos = run_stage(*args, pos, self._spins)
        return True

    def _idle(self) -> None:
        """While a neighbour is late: let MPI progress this rank's other traffic, and yield the CPU."""
        self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG)
        os.sched_yield()

    @classmethod
    def usable(cls) -> bool:
        """Linux with ``memfd_create`` and ``/proc``; whether the ranks share a node is :meth:`collective_check`'s."""
        return _supported()

    @classmethod
    def collective_check(cls, comm: MPI.Comm) -> bool:
        """Whether every rank of ``comm`` shares one node and can map the others' segments (collective)."""
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        one_node = node.Get_size() == comm.Get_size()
        node.Free()
        if not comm.allreduce(one_node and _supported(), op=MPI.LAND):
            return False
        seg, maps, error = _handshake(comm, 64, set(range(comm.Get_size())) - {comm.Get_rank()})
        maps.clear()
        if seg is not None:
            seg.close()
        return not error

    # -- the started path ------------------------------------------------------------------
    def _started_plan(self) -> list[Any]:
        """Per round of a started exchange: its copies after (rounds of copies only), or its stage entry.

        A stage entry is ``(own slot view per area, flag line, peer addresses, peer
        sizes, completing tables, per area the byte shift of each peer's area)``:
        :func:`~hpcml.kernels.shm_stage.start_stage` packs into the view, and
        :func:`~hpcml.kernels.shm_stage.run_stage` completes the round, its unpack rows
        addressing each peer's segment as if the exchange used area 0.
        """
        unit = self.unit
        plan: list[Any] = []
        for r in self.rounds:
            after = [(COPY, f.send, f.recv.start) for f in r.after]
            if r.index is None:
                plan.append(region_table(after, unit) if after else None)
                continue
            i, st = r.index, self.layout.stages[r.index]
            slot = self._slot[i] // unit
            views = []
            for area in range(MAX_STATES):
                at = (self._seg.area_start(area) + self._stage_off[i]) // unit
                views.append(self._words[at : at + slot])
            steps = [self._theirs[m.peer][1] for m in st.recvs]  # bytes per area of each sender's segment
            tables = (*_bounded([[], after], unit), *_bounded(self._unpack_parts(i, 0), unit))
            shifts = [np.array(steps, dtype=np.int64) * area for area in range(MAX_STATES)]
            plan.append((views, min(st.axes), *self._mapped([m.peer for m in st.recvs]), tables, shifts))
        self._readers = self._mapped(sorted({m.peer for st in self.layout.stages for m in st.sends}))
        return plan

    def _mapped(self, ranks: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Addresses and sizes of ``ranks``' segments as mapped here (what the compiled waits take)."""
        return (
            np.array([self._peer_words[p].ctypes.data for p in ranks], dtype=np.int64),
            np.array([self._peer_words[p].nbytes for p in ranks], dtype=np.int64),
        )

    def _started_plan_or_raise(self) -> list[Any]:
        """The started path's plan; after :meth:`free` its neighbours' addresses are unmapped: refuse."""
        if self._started_rounds is None:
            raise RuntimeError("halo method 'shm': this plan has been freed")
        return self._started_rounds

    def new_state(self) -> _ShmState:
        """A started exchange's number and area, set when it starts."""
        return _ShmState([])

    def start(self, stage: int, data: np.ndarray, state: _ShmState) -> list[MPI.Request]:
        """Pack round ``stage`` into this exchange's area and raise its flag (no MPI message).

        Round 0 first waits until the area's readers have acknowledged its use
        :data:`MAX_STATES` exchanges ago.
        """
        ack, target = -1, 0
        self._started_plan_or_raise()
        if stage == 0:
            seq = self._started + 1
            area = seq % MAX_STATES
            if self._busy[area]:
                raise RuntimeError(
                    f"halo method 'shm': more than {MAX_STATES} exchanges of one plan in flight at once on rank "
                    f"{self.comm.Get_rank()}; wait for some first, or use method='pack'"
                )
            self._started, self._busy[area] = seq, True
            state.seq, state.area, state.words = seq, area, self.words(data)
            if seq > MAX_STATES:
                ack, target = self._flag(area, self._lines - 1), seq - MAX_STATES
        words, area = state.words, state.area
        entry = self._started_plan_or_raise()[stage]
        if not isinstance(entry, tuple):
            view, flag = words[:0], -1  # copies only: nobody reads this round
        else:
            view, flag = entry[0][area], self._flag(area, entry[1])
        readers, sizes = self._readers
        while not start_stage(
            words, view, self._flags, self._pack[stage], flag, state.seq, readers, sizes, ack, target, self._spins
        ):
            self._idle()
        return []

    def arrived(self, stage: int, state: _ShmState) -> bool:
        """Whether every neighbour has published round ``stage`` of this exchange (one look, no wait)."""
        entry = self._started_plan_or_raise()[stage]
        if not isinstance(entry, tuple):
            return True
        _, line, peers, sizes, _, _ = entry
        return await_flags(self._flags, peers, sizes, self._flag(state.area, line), state.seq, 0)

    def finish(self, stage: int, data: np.ndarray, state: _ShmState) -> None:
        """Wait for the neighbours' flags, unpack from their segments; after the last round, acknowledge."""
        words, area, seq = state.words, state.area, state.seq
        ack = self._flag(area, self._lines - 1) if stage == len(self.rounds) - 1 else -1
        entry = self._started_plan_or_raise()[stage]
        if isinstance(entry, tuple):
            _, line, peers, sizes, tables, shifts = entry
            args = (words, self._words, self._flags, tables, peers, sizes, shifts[area], self._flag(area, line), seq)
            pos = run_stage(*args, 0, self._spins, ack)
            while pos != len(peers):
                self._idle()
                pos = run_stage(*args, pos, self._spins, ack)
        else:
            if entry is not None:
                run_table(words, words[:0], entry)
            if ack >= 0:
                publish(self._flags, ack, seq)  # read: the area may be reused
        if ack >= 0:
            self._busy[area] = False
            state.words = None

    def free(self) -> None:
        """Free bound requests and drop the mappings (local; the memory goes with the last one)."""
        super().free()
        self._blocking = self._started_rounds = None  # they hold the neighbours' addresses, unmapped once the views go
        self._peer_words.clear()
        self._seg.close()
