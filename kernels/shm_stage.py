"""One stage of a halo exchange through shared memory, in one compiled call (CPU, Numba).

The blocking path of the ``shm`` halo strategy (:mod:`hpcml.halo_shm`) moves no MPI
message.  Each rank packs its outgoing faces into its own shared segment, raises a
flag there, waits for the flags of the ranks it receives from and unpacks straight
from their segments.  The faces are cut into chunks along their outermost dimension
and each chunk goes through all of that in turn: on a face along the fastest axis
every row is its own page, and unpacking a chunk right after packing it finds those
pages still in the TLB (the ghost column sits on the page of the column sent).

A flag holds the number of the exchange that last published its chunk: a reader
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

__all__ = ["FLAG_STRIDE", "run_stage"]

#: int64 words between two flags: one 64-byte cache line each, so a rank raising the
#: flag of one chunk does not disturb the readers polling another
FLAG_STRIDE = 8


@njit(cache=True, nogil=True)
def _stage(arr, own, own_flags, ptab, pix, utab, uix, peers, peer_bytes, flag0, seq, pos, spins):  # pragma: no cover
    # ``pix``: rows of ``ptab`` per chunk (K + 1 bounds) and then the copies after the
    # last unpack (one more bound); ``uix``: rows of ``utab`` per (chunk, peer), K * P + 1
    # bounds.  ``pos`` < 0: a fresh start; else chunk ``pos // P`` is packed and
    # published and peers before ``pos % P`` are unpacked.  Returns K * P when done.
    npeers = peers.shape[0]
    nchunks = pix.shape[0] - 2
    k, p, packed = 0, 0, False
    if pos >= 0:
        k, p, packed = pos // npeers, pos % npeers, True
    while k < nchunks:
        if not packed:
            run_rows(arr, own, ptab, pix[k], pix[k + 1])
            store_release(own_flags, flag0 + k * FLAG_STRIDE, seq)
            packed = True
        while p < npeers:
            flags = carray(pointer_like(own_flags, peers[p]), peer_bytes[p] // 8)
            left = spins
            while load_acquire(flags, flag0 + k * FLAG_STRIDE) < seq:
                spin_pause()
                left -= 1
                if left == 0:
                    return k * npeers + p
            words = carray(pointer_like(own, peers[p]), peer_bytes[p] // own.itemsize)
            run_rows(arr, words, utab, uix[k * npeers + p], uix[k * npeers + p + 1])
            p += 1
        k += 1
        p, packed = 0, False
    run_rows(arr, own, ptab, pix[nchunks], pix[nchunks + 1])
    return nchunks * npeers


def run_stage(
    arr: np.ndarray,
    own: np.ndarray,
    own_flags: np.ndarray,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    peers: np.ndarray,
    peer_bytes: np.ndarray,
    flag0: int,
    seq: int,
    pos: int,
    spins: int,
) -> int:
    """Pack, publish, await and unpack every chunk of one stage; return how far it got.

    ``arr`` is the array as machine words, ``own`` this rank's segment as words of the
    same type and ``own_flags`` it as int64.  ``tables`` are ``(pack table, pack row
    bounds per chunk, unpack table, unpack row bounds per chunk and peer)``; unpack
    rows address the peer's segment.  ``peers`` holds the address of each peer's
    segment as mapped here, ``peer_bytes`` its length.  Flag ``k`` of the
    stage is int64 word ``flag0 + FLAG_STRIDE * k`` of every segment.  ``pos`` is -1
    to start, or the value returned by a call that ran out of ``spins`` polls;
    the stage is done when the result equals chunks times peers.
    """
    ptab, pix, utab, uix = tables
    return int(_stage(arr, own, own_flags, ptab, pix, utab, uix, peers, peer_bytes, flag0, seq, pos, spins))
