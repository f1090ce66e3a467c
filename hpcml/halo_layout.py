"""What a halo exchange moves, independent of how: stages, messages per peer, local copies.

A :class:`HaloLayout` is the geometry every halo strategy (:mod:`hpcml.halo_strategies`)
shares.  It is computed once per (decomposition, dtype, memory order, corners) from
the :class:`~hpcml.decomp.CartDecomp` alone, with no communication:

* **Stages.**  With ``corners=True`` one stage per dimension; each stage's faces
  span the full ghosted extent of the other dimensions, so ghosts filled earlier
  travel on and edges and corners are filled.  With ``corners=False`` one stage
  holds every dimension's faces over interior extents.  Stages without any work
  are dropped.
* **Faces.**  Per dimension ``d`` and flow direction (``+1``: data moves to the
  upper neighbour, ``-1``: to the lower one) a :class:`Face` names the owned layer
  read and the ghost layer written, as :class:`~hpcml.datatypes.StridedBlock`.
* **Self-neighbour faces** (a periodic dimension held whole by this rank) are local
  copies, never messages.
* **Messages.**  All faces of a stage that go to the same peer travel together:
  with two ranks along a periodic dimension both directions share one message.
  A face that is one dense run goes as its own message straight from (into) the
  array when it is alone or large (:data:`DIRECT_BYTES`); everything else to
  that peer is packed into one buffer.  Sender and receiver list a message's
  faces in the same canonical order (dimension, then flow ``+1``, ``-1``) and
  derive the same split, so all strategies interoperate on the wire: every
  message is typed with the element's MPI datatype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcml.datatypes import StridedBlock
from hpcml.kernels.pack import COPY, PACK, TABLE_HEAD, UNPACK

__all__ = [
    "DIRECT_BYTES",
    "Face",
    "HaloLayout",
    "Message",
    "Round",
    "Stage",
    "forward_tables",
    "host_rounds",
    "packed_rows",
    "region_table",
]

#: a dense face at least this large goes as its own message, straight from the array,
#: rather than being copied into a merged buffer (a copy costs more than a message then)
DIRECT_BYTES = 32 << 10

#: tags: ``TAG_BASE + TAGS_PER_STAGE * stage + index of the message among those to one peer``
TAG_BASE = 0x4C0
TAGS_PER_STAGE = 16


@dataclass(frozen=True)
class Face:
    """One dimension, one flow direction: the owned layer sent and the ghost layer filled."""

    axis: int
    flow: int
    send: StridedBlock
    recv: StridedBlock
    send_region: tuple[slice, ...]
    recv_region: tuple[slice, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of one layer (sent and received sizes are equal)."""
        return self.send.nbytes


@dataclass(frozen=True)
class Message:
    """Faces exchanged with one peer in one stage, as one MPI message each way.

    For the outgoing message the faces' ``send`` blocks are read; for the incoming
    message from the same peer, the faces' ``recv`` blocks are written.
    """

    peer: int
    tag: int
    faces: tuple[Face, ...]
    direct: bool

    @property
    def nbytes(self) -> int:
        """Bytes of the message."""
        return sum(f.nbytes for f in self.faces)


@dataclass(frozen=True)
class Stage:
    """Messages that may travel together, plus the local copies done with them."""

    axes: tuple[int, ...]
    sends: tuple[Message, ...]
    recvs: tuple[Message, ...]
    copies: tuple[Face, ...]

    @property
    def packed_sends(self) -> tuple[Message, ...]:
        """Outgoing messages assembled in a buffer."""
        return tuple(m for m in self.sends if not m.direct)

    @property
    def packed_recvs(self) -> tuple[Message, ...]:
        """Incoming messages received into a buffer."""
        return tuple(m for m in self.recvs if not m.direct)


def _strides(shape: Sequence[int], itemsize: int, order: str) -> tuple[int, ...]:
    dims = range(len(shape)) if order == "F" else reversed(range(len(shape)))
    out = [0] * len(shape)
    step = itemsize
    for d in dims:
        out[d] = step
        step *= shape[d]
    return tuple(out)


class HaloLayout:
    """Stages, messages and local copies of a halo exchange on ``decomp``'s ghosted arrays.

    Parameters
    ----------
    decomp
        The :class:`~hpcml.decomp.CartDecomp`.
    dtype
        Element type.
    order
        ``"C"`` or ``"F"``: memory order of the ghosted arrays.
    corners
        Fill edges and corners (one stage per dimension) or faces only (one stage).
    """

    def __init__(self, decomp: Any, dtype: Any, order: str = "C", corners: bool = True) -> None:
        if order not in ("C", "F"):
            raise ValueError(f"order must be 'C' or 'F', got {order!r}")
        self.decomp = decomp
        self.dtype = np.dtype(dtype)
        self.order = order
        self.corners = bool(corners)
        self.shape = tuple(decomp.ghosted_shape)
        self.rank = decomp.cart.Get_rank()
        self.strides = _strides(self.shape, self.dtype.itemsize, order)
        groups = [(d,) for d in range(decomp.ndim)] if corners else [tuple(range(decomp.ndim))]
        stages = [self._stage(axes, i) for i, axes in enumerate(groups)]
        self.stages: tuple[Stage, ...] = tuple(s for s in stages if s.sends or s.recvs or s.copies)

    # -- construction -------------------------------------------------------------------------
    def _block(self, region: tuple[slice, ...]) -> StridedBlock:
        starts = [s.start for s in region]
        shape = [s.stop - s.start for s in region]
        offset = sum(a * st for a, st in zip(starts, self.strides))
        return StridedBlock.from_shape_strides(offset, shape, self.strides, self.dtype.itemsize)

    def _faces(self, d: int) -> dict[int, Face]:
        """The two faces of dimension ``d``, keyed by flow direction."""
        dec = self.decomp
        h, n = dec.halo[d], dec.local_shape[d]
        extent = [
            slice(0, self.shape[e]) if self.corners else slice(dec.halo[e], dec.halo[e] + dec.local_shape[e])
            for e in range(dec.ndim)
        ]

        def region(lo: int, hi: int) -> tuple[slice, ...]:
            r = list(extent)
            r[d] = slice(lo, hi)
            return tuple(r)

        up_send, up_recv = region(n, n + h), region(0, h)  # flow +1: top owned layer -> peer's low ghosts
        dn_send, dn_recv = region(h, 2 * h), region(n + h, n + 2 * h)  # flow -1
        return {
            +1: Face(d, +1, self._block(up_send), self._block(up_recv), up_send, up_recv),
            -1: Face(d, -1, self._block(dn_send), self._block(dn_recv), dn_send, dn_recv),
        }

    def _stage(self, axes: tuple[int, ...], index: int) -> Stage:
        dec = self.decomp
        outgoing: dict[int, list[Face]] = {}
        incoming: dict[int, list[Face]] = {}
        copies: list[Face] = []
        for d in axes:
            if dec.halo[d] == 0:
                continue
            lo, hi = dec.neighbors[d]
            faces = self._faces(d)
            for flow in (+1, -1):
                dest, source = (hi, lo) if flow > 0 else (lo, hi)
                face = faces[flow]
                if dest == self.rank and source == self.rank:
                    copies.append(face)
                    continue
                if dest >= 0:  # MPI.PROC_NULL is negative
                    outgoing.setdefault(dest, []).append(face)
                if source >= 0:
                    incoming.setdefault(source, []).append(face)
        tag0 = TAG_BASE + TAGS_PER_STAGE * index
        return Stage(
            axes,
            tuple(m for peer in sorted(outgoing) for m in _split(peer, outgoing[peer], tag0)),
            tuple(m for peer in sorted(incoming) for m in _split(peer, incoming[peer], tag0)),
            tuple(copies),
        )

    # -- summaries ------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes this rank sends per exchange (received bytes are the same)."""
        return sum(m.nbytes for s in self.stages for m in s.sends)

    @property
    def copy_nbytes(self) -> int:
        """Bytes copied locally per exchange (periodic dimensions held by one rank)."""
        return sum(f.nbytes for s in self.stages for f in s.copies)

    @property
    def messages(self) -> int:
        """Point-to-point messages this rank sends per exchange."""
        return sum(len(s.sends) for s in self.stages)

    def word(self) -> int:
        """Widest machine word (8, 4, 2 or 1 bytes) dividing every region: plain copies move these."""
        return math.gcd(8, self.dtype.itemsize)


def _split(peer: int, faces: list[Face], tag0: int) -> list[Message]:
    """Messages to (or from) one peer: large dense faces alone, the rest packed together.

    A face goes alone (``direct``: sent from / received into the array, no copy) when it
    is one dense run and either the only face for this peer or at least
    :data:`DIRECT_BYTES`; the rest share one packed message.  Both sides of a message
    compute the same split: their faces have the same shapes and canonical order.
    """
    alone = [f for f in faces if f.send.contiguous and (len(faces) == 1 or f.nbytes >= DIRECT_BYTES)]
    packed = [f for f in faces if f not in alone]
    out = []
    if packed:
        out.append(Message(peer, tag0, tuple(packed), direct=False))
    out += [Message(peer, tag0 + 1 + i, (f,), direct=True) for i, f in enumerate(alone)]
    if len(out) > TAGS_PER_STAGE:  # pragma: no cover - at most 2 * ndim faces per stage
        raise ValueError(f"{len(out)} messages to one peer in one stage exceed the tag space")
    return out


def region_table(rows: Sequence[tuple[int, StridedBlock, int]], unit: int) -> np.ndarray:
    """An int64 region table for :func:`hpcml.kernels.pack.run_table`.

    ``rows`` are ``(op, block, b)`` with ``b`` in bytes (a buffer offset, or for
    ``COPY``/``ADD_COPY`` the byte start of the second region); the table is in
    elements of ``unit`` bytes, which must divide every start, run and stride.
    """
    ndims = max((len(blk.counts) - 1 for _, blk, _ in rows), default=0)
    table = np.zeros((len(rows), TABLE_HEAD + 2 * max(ndims, 1)), dtype=np.int64)
    table[:, TABLE_HEAD::2] = 1  # unused dimensions repeat once
    for r, (op, blk, b) in enumerate(rows):
        if blk.start % unit or blk.counts[0] % unit or b % unit or any(s % unit for s in blk.strides[1:]):
            raise ValueError(f"region {blk} is not aligned to {unit}-byte elements")
        table[r, :TABLE_HEAD] = (op, blk.start // unit, b // unit, blk.counts[0] // unit)
        for d, (c, s) in enumerate(zip(blk.counts[1:], blk.strides[1:])):
            table[r, TABLE_HEAD + 2 * d] = c
            table[r, TABLE_HEAD + 2 * d + 1] = s // unit
    return table


def packed_rows(msgs: Sequence[Message], op: int, send: bool) -> tuple[list[tuple[int, StridedBlock, int]], int]:
    """Region-table rows applying ``op`` to every face of ``msgs`` packed back to back; and the total bytes.

    ``send`` picks the faces' ``send`` blocks (owned layers), else their ``recv``
    blocks (ghost layers).
    """
    rows, pos = [], 0
    for m in msgs:
        for f in m.faces:
            rows.append((op, f.send if send else f.recv, pos))
            pos += f.nbytes
    return rows, pos


@dataclass(frozen=True)
class Round:
    """One round of a host exchange: a stage's messages and the local copies around them.

    A stage without messages (every neighbour along its axis is this rank) needs no
    round of its own: its copies run ``before`` the packs of the first stage with
    messages, or ``after`` the unpack of the stage with messages before it.  The
    order of the copies is the order of the stages, so edges and corners come out
    the same; a 2-rank exchange split along one axis takes one round instead of one
    per dimension.
    """

    index: int | None  # the layout stage whose messages travel (None: no stage has any)
    before: tuple[Face, ...]
    after: tuple[Face, ...]


def host_rounds(stages: Sequence[Stage]) -> list[Round]:
    """The stages of a layout folded into rounds (see :class:`Round`); none for no stages."""
    rounds: list[Round] = []
    pending: list[Face] = []
    for i, stage in enumerate(stages):
        if stage.sends or stage.recvs:
            rounds.append(Round(i, tuple(pending), ()))
            pending = []
        elif rounds:  # after a stage with messages: once its ghosts are unpacked
            last = rounds[-1]
            rounds[-1] = Round(last.index, last.before, last.after + stage.copies)
        else:
            pending += stage.copies
    if pending:
        rounds.append(Round(None, tuple(pending), ()))
    return rounds


def forward_tables(
    stage: Stage | None, unit: int, before: Sequence[Face] = (), after: Sequence[Face] = (), every: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(pack, unpack)`` tables of one stage: packed faces into / out of the stage buffers.

    The pack table also holds the stage's local copies, so one compiled call packs
    every outgoing face and fills every self-neighbour ghost.  Offsets follow the
    order of :attr:`Stage.packed_sends` / :attr:`Stage.packed_recvs` in one
    contiguous buffer per direction (with ``every``, of all the stage's messages,
    the dense ones that travel alone too).  ``before`` are copies run ahead of the
    packs and ``after`` copies run after the unpack (a :class:`Round`'s);
    ``stage=None`` gives tables of those copies alone.
    """
    rows = [(COPY, f.send, f.recv.start) for f in before]
    back = []
    if stage is not None:
        sends, recvs = (stage.sends, stage.recvs) if every else (stage.packed_sends, stage.packed_recvs)
        rows += packed_rows(sends, PACK, send=True)[0]
        rows += [(COPY, f.send, f.recv.start) for f in stage.copies]
        back += packed_rows(recvs, UNPACK, send=False)[0]
    back += [(COPY, f.send, f.recv.start) for f in after]
    return region_table(rows, unit), region_table(back, unit)
