"""``shm``: halo exchange through memory the ranks of one node share.

On one node MPI moves a packed halo message with two copies, the sender's into
MPI's shared-memory cells and the receiver's out of them, plus its handshakes.
This strategy packs every outgoing face (dense ones too) straight into a segment
of shared memory the receiving rank has mapped, sends only an 8-byte token saying
where the message lies, and the receiver unpacks straight from the sender's
segment: one copy fewer on each side, and no rendezvous for large messages.
``hpcml bench halo`` on the 2-core Zen 5 VM, 2 ranks, 3 alternating runs of each
(auto / the modelled floor): 4096x4096 split on its fastest axis, halo 1-3,
1.58-1.95 with ``pack`` -> 1.17-1.54; split on its slowest axis 1.06-1.49 ->
0.81-1.11; 32x32x32 split on its last axis, halo 1, 17.6 -> 12.2 us.  The hot path
is ``pack``'s: per round a ``Startall``, one compiled pack, a ``Startall``, the wait,
one compiled unpack per message (the round's later copies ride on the last one);
the tokens' values are fixed per slot, so nothing is computed in Python (computing
them there cost 4 us an exchange: 64x64 took 12.5 us against ``pack``'s 8.1).

The segments are Linux ``memfd`` files: each rank creates one per plan, and its
neighbours map it through ``/proc/<pid>/fd/<fd>`` while the plan is built (a
collective step over the decomposition's communicator, like every plan
construction); then every rank closes its file descriptors and keeps the
mappings.  Nothing is named in a file system, so a killed job leaves nothing
behind, and no later call is collective: the memory goes when the last rank
drops its mapping.

Usable when every rank of the communicator runs on one node and may open its
neighbours' files (:meth:`ShmStrategy.collective_check`, which ``method="auto"``
runs before choosing it).  Dense faces that ``pack`` sends straight from the array
(``Message.direct``) are copied through the segment as well: with MPI sending them
from the array, a 4096x4096 split on its slowest axis (two 32 KiB rows) took
1.04-1.12x the hand-written exchange, through the segment 0.84x.

Each exchange state owns an area of the segment with two slots per round, used
alternately: a rank writes a slot again only two exchanges of that state later,
after the neighbour has sent the token of the next one, so the neighbour has
finished reading it.  That relies on what every exchange already relies on:
exchanges in flight together are started and completed in the same order on
every rank.  The token's arrival orders the packed data before the reads: MPI
completes a message only after the sender's earlier stores are visible.
"""

from __future__ import annotations

import mmap
import os
import socket
from types import ModuleType
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.halo_layout import HaloLayout, chunk_block, forward_tables, packed_rows, region_table
from hpcml.halo_strategies import _free_requests, _HostState, _HostStrategy, register_strategy
from hpcml.kernels.pack import COPY, PACK, UNPACK, run_table
from hpcml.kernels.shm_stage import FLAG_STRIDE, run_stage

__all__ = ["ShmStrategy"]

#: exchange states (exchanges of one plan in flight at once) a segment has room for
MAX_STATES = 16

#: a blocking exchange cuts a stage's faces into chunks of about this many strided runs
#: (rows of a face along the fastest axis; every such row is its own page), so that the
#: pages packed in a chunk are still in the TLB when its ghosts are unpacked
CHUNK_RUNS = 2048

#: at most this many chunks per stage (flags per stage in a segment)
MAX_CHUNKS = 16

#: polls of a neighbour's flag before the wait returns to Python to let MPI progress
SPINS = 2000
_MAGIC = 0x6870636D6C73686D  # "hpcmlshm": the first word of every segment
_HEADER = 64  # bytes before the first area (magic, nonce)


def _bounded(chunks: list[list[tuple[int, Any, int]]], unit: int) -> tuple[np.ndarray, np.ndarray]:
    """One region table of all ``chunks`` in turn, and the row where each chunk starts (plus the end)."""
    bounds = np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64)
    return region_table([row for c in chunks for row in c], unit), bounds


def _supported() -> bool:
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


class _Segment:
    """One rank's memfd segment: a header, the flags, then :data:`MAX_STATES` + 1 areas of equal size.

    Areas ``0 .. MAX_STATES - 1`` serve exchanges started with ``start`` (their
    places travel in tokens); the last one serves blocking exchanges, whose places
    the neighbours learn when the plan is built.
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
        self.free_areas = list(range(MAX_STATES - 1, -1, -1))

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
        # per round: one unpack table per received message (offsets from the message's start); the
        # copies after the round ride on the last one's table (one compiled call fewer)
        self._unpack: list[list[tuple[int, int, np.ndarray]]] = []
        self._after: list[np.ndarray | None] = []
        for r in self.rounds:
            msgs = [] if r.index is None else list(layout.stages[r.index].recvs)
            after = [(COPY, f.send, f.recv.start) for f in r.after]
            tables = []
            for j, m in enumerate(msgs):
                rows = packed_rows([m], UNPACK, send=False)[0] + (after if j == len(msgs) - 1 else [])
                tables.append((m.peer, m.nbytes // unit, region_table(rows, unit)))
            self._unpack.append(tables)
            self._after.append(region_table(after, unit) if after and not msgs else None)
        # the pack table of each round: the copies before, every send (dense faces too), the stage's copies
        self._pack = [
            forward_tables(None if r.index is None else layout.stages[r.index], unit, r.before, every=True)[0]
            for r in self.rounds
        ]
        peers = {m.peer for st in layout.stages for m in st.recvs}
        flag_bytes = len(layout.shape) * MAX_CHUNKS * FLAG_STRIDE * 8
        seg, maps, error = _handshake(self.comm, self._stage_off[-1], peers, flag_bytes)
        if error:
            raise ValueError(f"halo method 'shm' is not usable here: {error}; use 'pack'")
        seg.close()  # every neighbour has mapped it (the handshake ends in a collective): the mapping is enough
        self._seg = seg
        self._words = np.frombuffer(seg.map, dtype=self.word)
        self._flags = np.frombuffer(seg.map, dtype=np.int64)
        self._peer_words = {p: np.frombuffer(m, dtype=self.word) for p, m in maps.items()}
        self._seq = 0  # blocking exchanges done (every rank counts the same ones)
        self._blocking = self._blocking_rounds()

    # -- the blocking path -------------------------------------------------------------------
    def _blocking_rounds(self) -> list[Any]:
        """Per round: a copy table alone, or a stage in chunks (collective: agrees on offsets and chunks).

        A stage entry is ``(flag0, (tables for even, odd exchanges), peer addresses,
        peer sizes, done)``; see :func:`hpcml.kernels.shm_stage.run_stage`.
        """
        layout, unit = self.layout, self.unit
        area = self._seg.area_start(MAX_STATES)
        offsets: dict[int, dict[tuple[int, int], tuple[int, int]]] = {}
        for i, st in enumerate(layout.stages):
            half = (self._stage_off[i + 1] - self._stage_off[i]) // 2
            for m, start in zip(st.sends, self._starts[i]):
                base = area + self._stage_off[i] + int(start)
                offsets.setdefault(m.peer, {})[(i, m.tag)] = (base, base + half)
        # the places of the neighbours' messages to this rank, and one chunk count per stage for all
        theirs: dict[int, dict[tuple[int, int], tuple[int, int]]] = {}
        for p, got in enumerate(self.comm.alltoall([offsets.get(p, {}) for p in range(self.comm.Get_size())])):
            if got:
                theirs[p] = got
        runs = np.zeros(max(len(layout.stages), 1), dtype=np.int64)
        for i, st in enumerate(layout.stages):
            runs[i] = sum(f.send.nbytes // f.send.counts[0] for m in st.sends for f in m.faces if f.send.nbytes)
        self.comm.Allreduce(MPI.IN_PLACE, runs, op=MPI.MAX)
        rounds: list[Any] = []
        for r in self.rounds:
            if r.index is None:
                rounds.append(region_table([(COPY, f.send, f.recv.start) for f in r.before], unit))
                continue
            st = layout.stages[r.index]
            parts = int(min(MAX_CHUNKS, max(1, -(-int(runs[r.index]) // CHUNK_RUNS))))
            tables = tuple(self._chunk_tables(r, parts, offsets, theirs, odd) for odd in (0, 1))
            peers = np.array([self._peer_words[m.peer].ctypes.data for m in st.recvs], dtype=np.int64)
            sizes = np.array([self._peer_words[m.peer].nbytes for m in st.recvs], dtype=np.int64)
            flag0 = _HEADER // 8 + min(st.axes) * MAX_CHUNKS * FLAG_STRIDE
            rounds.append((flag0, tables, peers, sizes, parts * len(st.recvs)))
        return rounds

    def _chunk_tables(self, rnd: Any, parts: int, mine: dict, theirs: dict, odd: int) -> tuple[np.ndarray, ...]:
        """``(pack table, its row bounds, unpack table, its row bounds)`` of one round in ``parts`` chunks."""
        st = self.layout.stages[rnd.index]
        pack: list[list[tuple[int, Any, int]]] = [[] for _ in range(parts)]
        pack[0] += [(COPY, f.send, f.recv.start) for f in (*rnd.before, *st.copies)]
        for m in st.sends:
            pos = mine[m.peer][(rnd.index, m.tag)][odd]
            for f in m.faces:
                for k, piece in enumerate(chunk_block(f.send, parts)):
                    if piece is not None:
                        pack[k].append((PACK, piece[0], pos + piece[1]))
                pos += f.nbytes
        pack.append([(COPY, f.send, f.recv.start) for f in rnd.after])
        unpack: list[list[tuple[int, Any, int]]] = [[] for _ in range(parts * len(st.recvs))]
        for j, m in enumerate(st.recvs):
            pos = theirs[m.peer][(rnd.index, m.tag)][odd]
            for f in m.faces:
                for k, piece in enumerate(chunk_block(f.recv, parts)):
                    if piece is not None:
                        unpack[k * len(st.recvs) + j].append((UNPACK, piece[0], pos + piece[1]))
                pos += f.nbytes
        return (*_bounded(pack, self.unit), *_bounded(unpack, self.unit))

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
            flag0, tables, peers, sizes, done = rnd
            pos = run_stage(words, self._words, self._flags, tables[odd], peers, sizes, flag0, seq, -1, SPINS)
            while pos != done:
                self._idle()
                pos = run_stage(words, self._words, self._flags, tables[odd], peers, sizes, flag0, seq, pos, SPINS)
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

    # -- states ----------------------------------------------------------------------------
    def new_state(self) -> _HostState:
        """An area of the segment, token buffers and their persistent requests per stage."""
        if not self._seg.free_areas:
            raise RuntimeError(
                f"halo method 'shm': more than {MAX_STATES} exchanges of one plan in flight at once on rank "
                f"{self.comm.Get_rank()}; wait for some first, or use method='pack'"
            )
        area = self._seg.free_areas.pop()
        base = self._seg.area_start(area) // self.unit  # in words
        stages = []
        for i, st in enumerate(self.layout.stages):
            start = base + self._stage_off[i] // self.unit
            half = (self._stage_off[i + 1] - self._stage_off[i]) // 2 // self.unit
            slot = self._slot[i] // self.unit
            views = [self._words[start + k * half : start + k * half + slot] for k in (0, 1)]
            tokens_in = np.zeros((len(st.recvs), 1), dtype=np.int64)
            rreqs = [self.comm.Recv_init([t, MPI.INT64_T], m.peer, m.tag) for t, m in zip(tokens_in, st.recvs)]
            reqs = []
            for k in (0, 1):  # one set of token sends per slot, their values fixed
                tokens = (start + k * half + self._starts[i] // self.unit).astype(np.int64).reshape(-1, 1)
                sreqs = [self.comm.Send_init([t, MPI.INT64_T], m.peer, m.tag) for t, m in zip(tokens, st.sends)]
                reqs.append((sreqs, rreqs + sreqs, tokens))
            stages.append([views, tokens_in, rreqs, reqs, 0, area])
        return _HostState(stages)

    def free_state(self, state: _HostState) -> None:
        """Free the token requests; the area returns to the segment."""
        for st in state.stages:
            _free_requests(st[2] + st[3][0][0] + st[3][1][0])
        if state.stages:
            self._seg.free_areas.append(state.stages[0][5])

    # -- one round ---------------------------------------------------------------------------
    def start(self, stage: int, data: np.ndarray, state: _HostState) -> list[MPI.Request]:
        """Token receives first, the pack into this exchange's slot, then the tokens."""
        words, _ = self._open(stage, data, state)
        index = self.rounds[stage].index
        if index is None:
            run_table(words, words[:0], self._pack[stage])
            return []
        views, _, rreqs, reqs, count, _ = state.stages[index]
        sreqs, both, _ = reqs[count & 1]
        if rreqs:
            MPI.Prequest.Startall(rreqs)
        run_table(words, views[count & 1], self._pack[stage])
        if sreqs:
            MPI.Prequest.Startall(sreqs)
        return both

    def finish(self, stage: int, data: np.ndarray, state: _HostState) -> None:
        """Unpack each message from its sender's segment (the round's later copies with the last one)."""
        index = self.rounds[stage].index
        words = state.words
        if index is not None:
            st = state.stages[index]
            tokens = st[1]
            for j, (peer, n, table) in enumerate(self._unpack[stage]):
                at = int(tokens[j, 0])
                run_table(words, self._peer_words[peer][at : at + n], table)
            st[4] += 1
        after = self._after[stage]
        if after is not None:
            run_table(words, words[:0], after)
        super().finish(stage, data, state)

    def free(self) -> None:
        """Free bound requests and drop the mappings (local; the memory goes with the last one)."""
        super().free()
        self._blocking = None  # it holds the neighbours' addresses, unmapped once the views go
        self._peer_words.clear()
        self._seg.close()
