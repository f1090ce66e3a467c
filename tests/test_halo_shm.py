"""The ``shm`` strategy's blocking path: faces in chunks through shared segments, synchronised by flags.

Every exchange is checked against the NumPy reference built from the global array
(``np.pad(mode="wrap")`` on periodic axes).  The chunk size is shrunk so that small
fields are cut into many chunks, empty ones included, on uneven splits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcml import CartDecomp, DistArray, halo_shm
from hpcml.datatypes import StridedBlock
from hpcml.halo_layout import chunk_block
from hpcml.testing import SENTINEL, assert_all, expected_ghosted, field_fn, global_field, halo_case


def _exchanges_match(comm, shape, periodic, halo, corners, dtype="f8", order="C", rounds=3):
    """Blocking shm exchanges (values changed between them, a nonblocking one interleaved) vs the reference."""
    d = CartDecomp(shape, comm, periodic=periodic, halo=halo)
    u = DistArray.full(d, SENTINEL, dtype=dtype, order=order)
    base = field_fn(shape, dtype)(*d.global_indices())
    ok = True
    for k in range(rounds):
        u.interior[...] = _shifted(base, k)
        if k == 1:  # the token path on the same plan, between blocking exchanges
            u.start_exchange(method="shm", corners=corners).wait()
        else:
            u.exchange_halos(method="shm", corners=corners)
        ref = expected_ghosted(_shifted(global_field(shape, dtype), k), d, corners=corners)
        ok &= bool(np.array_equal(u.data, ref))
    assert u.halo_plan("shm", corners=corners).method == "shm"
    d.free()
    return ok


def _shifted(values, k):
    """``values`` changed by exchange number ``k`` (booleans flip on odd ``k``)."""
    return values ^ bool(k % 2) if values.dtype == bool else values + k


@pytest.mark.mpi
@given(data=st.data())
def test_blocking_exchange_in_chunks_matches_reference(comm, data):
    shape, periodic, halo, corners = data.draw(halo_case(comm.size))
    chunk_runs = data.draw(st.sampled_from([1, 2, 3, 7, 2048]))
    old = halo_shm.CHUNK_RUNS
    halo_shm.CHUNK_RUNS = chunk_runs
    try:
        ok = _exchanges_match(comm, shape, periodic, halo, corners)
    finally:
        halo_shm.CHUNK_RUNS = old
    assert_all(comm, ok, f"shape={shape} periodic={periodic} halo={halo} corners={corners} chunk_runs={chunk_runs}")


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["f4", "c16", "bool"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_blocking_exchange_dtypes_and_orders(comm, dtype, order, monkeypatch):
    monkeypatch.setattr(halo_shm, "CHUNK_RUNS", 2)
    ok = _exchanges_match(comm, (9, 4 * comm.size + 3, 5), (True, False, True), 2, True, dtype=dtype, order=order)
    assert_all(comm, ok, f"dtype={dtype} order={order}")


@pytest.mark.mpi
def test_blocking_exchange_needs_no_round_of_messages(comm, monkeypatch):
    """``exchange_halos`` on ``shm`` never starts a round (no MPI message); ``start_exchange`` does."""
    d = CartDecomp((8, 4 * comm.size), comm, periodic=True, halo=1)
    u = DistArray.full(d, SENTINEL)
    u.interior[...] = field_fn(d.shape)(*d.global_indices())
    u.exchange_halos(method="shm")  # builds the plan (collective)
    started = []
    real_start = halo_shm.ShmStrategy.start

    def counting_start(self, stage, data, state):
        started.append(stage)
        return real_start(self, stage, data, state)

    monkeypatch.setattr(halo_shm.ShmStrategy, "start", counting_start)
    u.exchange_halos(method="shm")
    blocking = len(started)
    u.start_exchange(method="shm").wait()
    ref = expected_ghosted(global_field(d.shape), d)
    assert_all(comm, blocking == 0 and len(started) >= 1 and np.array_equal(u.data, ref), f"rounds started {started}")
    d.free()


@pytest.mark.mpi(min_size=2)
def test_blocking_exchange_lets_pending_messages_progress(comm):
    """A rank enters the exchange with an ``Irecv`` posted while its neighbour is still in
    ``Ssend`` to it, which returns only once the receiving rank's MPI has matched the
    message: the exchange's wait lets MPI progress, so both ranks get through."""
    d = CartDecomp((8, 4 * comm.size), comm, periodic=True, halo=1)
    u = DistArray.full(d, SENTINEL)
    u.interior[...] = field_fn(d.shape)(*d.global_indices())
    u.exchange_halos(method="shm")
    msg = np.full(16, float(comm.rank))
    got = np.zeros_like(msg)
    rank, size = comm.rank, comm.size
    if rank % 2 == 0 and rank + 1 < size:
        req = comm.Irecv(got, rank + 1, tag=7)
        u.exchange_halos(method="shm")
        req.Wait()
    elif rank % 2 == 1:
        comm.Ssend(msg, rank - 1, tag=7)
        u.exchange_halos(method="shm")
    else:
        u.exchange_halos(method="shm")
    ok = rank % 2 == 1 or rank + 1 == size or bool(np.all(got == rank + 1))
    ok &= bool(np.array_equal(u.data, expected_ghosted(global_field(d.shape), d)))
    assert_all(comm, ok)
    d.free()


@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    cut=st.data(),
    parts=st.integers(1, 9),
)
def test_chunk_block_pieces_tile_the_packed_block(shape, cut, parts):
    """The pieces cover the block's bytes in packed order, once each, at their offsets."""
    arr = np.arange(np.prod([s + 2 for s in shape]), dtype="f8").reshape([s + 2 for s in shape])
    region = tuple(slice(1, 1 + cut.draw(st.integers(1, s), label="extent")) for s in shape)
    block = StridedBlock.from_view(arr, region)
    flat = arr.view(np.uint8).ravel()
    packed = np.ascontiguousarray(arr[region]).view(np.uint8).ravel()
    out = np.zeros_like(packed)
    seen = 0
    for piece in chunk_block(block, parts):
        if piece is None:
            continue
        blk, off = piece
        idx = _byte_indices(blk)
        out[off : off + idx.size] = flat[idx]
        seen += idx.size
    assert seen == packed.size
    assert np.array_equal(out, packed)


def _byte_indices(blk):
    idx = np.arange(blk.counts[0]) + blk.start
    for c, s in zip(blk.counts[1:], blk.strides[1:]):
        idx = (np.arange(c)[:, None] * s + idx[None, :]).ravel()
    return idx
