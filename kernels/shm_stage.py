"""One stage of a halo exchange through shared memory, in one compiled call (CPU, Numba).

The ``shm`` halo strategy (:mod:`hpcml.halo_shm`) moves no MPI message.  Each rank
packs its outgoing faces into its own shared segment, raises a flag there, waits for
the flags of the ranks it receives from and unpacks straight from their segments:
all in one call (:func:`run_stage`) for a blocking exchange; for a started one, one
call to start a stage (:func:`start_stage`: the pack and its flag, after waiting for
the readers' acknowledgement of the area's previous use) and one to complete it
(:func:`run_stage` from the wait, then the acknowledgement).

A flag holds the number of the exchange that last published the stage: a reader
waits until the flag reaches its own exchange number, with an acquire load matching
the writer's release store, so the packed values are seen as written.  The wait is
bounded: after ``spins`` polls the function returns where it stopped, so that the
caller can let MPI progress and yield the CPU, and calls again from there.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit

from ._intrinsics import load_acquire, pointer_like, spin_pause, store_release
from .pack import run_rows

__all__ = ["FLAG_STRIDE", "await_flags", "publish", "run_stage", "start_stage"]

#: int64 words between two flags: one 64-byte cache line each, so a rank raising the
#: flag of one stage does not disturb the readers polling another
FLAG_STRIDE = 8


@njit(cache=True, nogil=True)
def _stage(  # pragma: no cover - compiled
    arr, own, own_flags, ptab, pix, utab, uix, peers, peer_bytes, shifts, flag, seq, pos, spins, ack
):
    # ``pix``: rows of ``ptab`` before the flag (the packs and local copies) and after the
    # last unpack (copies), 3 bounds; ``uix``: rows of ``utab`` per peer, P + 1 bounds.
    # ``pos`` < 0: a fresh start; else the packs are published and peers before ``pos``
    # are unpacked.  Returns P when done.
    npeers = peers.shape[0]
    p = pos
    if p < 0:
        run_rows(arr, own, ptab, pix[0], pix[1])
        store_release(own_flags, flag, seq)
        p = 0
    while p < npeers:
        flags = carray(pointer_like(own_flags, peers[p]), peer_bytes[p] // 8)
        left = spins
        while load_acquire(flags, flag) < seq:
            spin_pause()
            left -= 1
            if left == 0:
                return p
        # the unpack rows address the peer's segment from ``shifts[p]`` bytes on
        words = carray(pointer_like(own, peers[p] + shifts[p]), (peer_bytes[p] - shifts[p]) // own.itemsize)
        run_rows(arr, words, utab, uix[p], uix[p + 1])
        p += 1
    run_rows(arr, own, ptab, pix[1], pix[2])
    if ack >= 0:
        store_release(own_flags, ack, seq)
    return npeers


def run_stage(
    arr: np.ndarray,
    own: np.ndarray,
    own_flags: np.ndarray,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    peers: np.ndarray,
    peer_bytes: np.ndarray,
    shifts: np.ndarray,
    flag: int,
    seq: int,
    pos: int,
    spins: int,
    ack: int = -1,
) -> int:
    """Pack, publish, await and unpack one stage; return how far it got.

    ``arr`` is the array as machine words, ``own`` this rank's segment as words of the
    same type and ``own_flags`` it as int64.  ``tables`` are ``(pack table, its row
    bounds: packs | copies after, unpack table, its row bounds per peer)``; unpack
    rows address the peer's segment from ``shifts`` bytes on (one per peer: the area
    in use).  ``peers`` holds the address of each peer's segment as mapped here,
    ``peer_bytes`` its length.  The stage's flag is int64 word ``flag`` of every
    segment.  ``pos`` is -1 to start, 0 to skip the packs (published earlier, by
    :func:`start_stage`), or the value returned by a call that ran out of ``spins``
    polls; the stage is done when the result equals the number of peers.  Once done,
    int64 word ``ack`` (if not negative) of this rank's segment is set to ``seq``
    with a release store: the neighbours' messages have been read.
    """
    ptab, pix, utab, uix = tables
    return int(_stage(arr, own, own_flags, ptab, pix, utab, uix, peers, peer_bytes, shifts, flag, seq, pos, spins, ack))


@njit(cache=True, nogil=True)
def _publish(flags, index, value):  # pragma: no cover - compiled
    store_release(flags, index, value)


@njit(cache=True, nogil=True)
def _await(like, peers, peer_bytes, index, target, spins):  # pragma: no cover - compiled
    for p in range(peers.shape[0]):
        flags = carray(pointer_like(like, peers[p]), peer_bytes[p] // 8)
        left = spins
        while load_acquire(flags, index) < target:
            if left == 0:
                return False
            spin_pause()
            left -= 1
    return True


def publish(flags: np.ndarray, index: int, value: int) -> None:
    """``flags[index] = value`` as a release store: everything written before it is seen with it."""
    _publish(flags, index, value)


def await_flags(
    like: np.ndarray, peers: np.ndarray, peer_bytes: np.ndarray, index: int, target: int, spins: int
) -> bool:
    """Whether int64 word ``index`` of every peer's segment has reached ``target`` (acquire loads).

    Polls each peer's flag up to ``spins`` times (0: look once); ``like`` is any int64
    array (the type of the views made at ``peers``' addresses).
    """
    return bool(_await(like, peers, peer_bytes, index, target, spins))


@njit(cache=True, nogil=True)
def _start(arr, area, own_flags, ptab, flag, seq, readers, reader_bytes, ack, target, spins):  # pragma: no cover
    if ack >= 0 and not _await(own_flags, readers, reader_bytes, ack, target, spins):
        return False
    run_rows(arr, area, ptab, 0, ptab.shape[0])
    if flag >= 0:
        store_release(own_flags, flag, seq)
    return True


def start_stage(
    arr: np.ndarray,
    area: np.ndarray,
    own_flags: np.ndarray,
    ptab: np.ndarray,
    flag: int,
    seq: int,
    readers: np.ndarray,
    reader_bytes: np.ndarray,
    ack: int,
    target: int,
    spins: int,
) -> bool:
    """Start a stage of a started exchange: pack ``ptab``'s rows into ``area`` and raise flag ``flag``.

    With ``ack`` not negative, first wait until int64 word ``ack`` of every reader's
    segment (``readers``: addresses as mapped here, ``reader_bytes``: lengths) reaches
    ``target``, polling up to ``spins`` times each; if one has not, return ``False``
    having written nothing, so that the caller can let MPI progress and call again.
    """
    return bool(_start(arr, area, own_flags, ptab, flag, seq, readers, reader_bytes, ack, target, spins))
