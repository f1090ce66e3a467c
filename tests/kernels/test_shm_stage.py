"""``hpcml.kernels.shm_stage`` in one process: the neighbours' segments are arrays of this one.

The MPI behaviour (real neighbours, every strategy path) is ``tests/test_halo_shm.py``'s;
here each call's contract is checked directly: what it writes, which flag it raises,
and that a call which runs out of polls has written nothing it should not have.
"""

from __future__ import annotations

import numpy as np
from hpcml.kernels.pack import COPY, PACK, UNPACK
from hpcml.kernels.shm_stage import FLAG_STRIDE, run_stage, start_stage

from hpcml.datatypes import StridedBlock
from hpcml.halo_layout import region_table

FLAG, ACK = 2 * FLAG_STRIDE, 3 * FLAG_STRIDE  # int64 words of a segment holding flags


def _segment(nbytes: int = 4096) -> np.ndarray:
    return np.zeros(nbytes // 8, dtype=np.int64)


def _where(*segs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s.ctypes.data for s in segs], dtype=np.int64), np.array([s.nbytes for s in segs], dtype=np.int64)


def test_start_stage_waits_for_the_readers_acknowledgement_before_packing() -> None:
    arr = np.arange(30.0).reshape(5, 6)
    own = _segment()
    area = own[64:80].view(np.float64)
    reader = _segment()
    table = region_table([(PACK, StridedBlock.from_view(arr, (slice(1, 4), slice(2, 3))), 0)], 8)
    readers, sizes = _where(reader)
    words = arr.ravel().view(np.int64)
    view = area.view(np.int64)

    # the reader has acknowledged exchange 3 only: exchange 20 may not reuse the area (target 4)
    reader[ACK] = 3
    assert not start_stage(words, view, own, table, FLAG, 20, readers, sizes, ACK, 4, 5)
    assert not area.any() and own[FLAG] == 0  # nothing packed, no flag raised

    reader[ACK] = 4
    assert start_stage(words, view, own, table, FLAG, 20, readers, sizes, ACK, 4, 5)
    np.testing.assert_array_equal(area[:3], arr[1:4, 2])
    assert own[FLAG] == 20

    # no acknowledgement to wait for (ack < 0), no flag (flag < 0): the copies alone
    before = own.copy()
    copy = region_table([(COPY, StridedBlock.from_view(arr, (slice(0, 1), slice(None))), 4 * 6 * 8)], 8)
    assert start_stage(words, view[:0], own, copy, -1, 21, readers[:0], sizes[:0], -1, 0, 0)
    np.testing.assert_array_equal(arr[4], arr[0])
    np.testing.assert_array_equal(own, before)


def test_run_stage_from_published_packs_unpacks_with_shifts_and_acknowledges() -> None:
    arr = np.zeros((4, 5))
    ghosts = StridedBlock.from_view(arr, (slice(None), slice(0, 1)))
    shift = 256  # bytes: the peer's message lies in its second area
    peer = _segment()
    peer.view(np.float64)[(shift + 64) // 8 : (shift + 64) // 8 + 4] = [1.5, 2.5, 3.5, 4.5]
    own = _segment()
    after = [(COPY, ghosts, StridedBlock.from_view(arr, (slice(None), slice(4, 5))).start)]
    ptab = region_table(after, 8)
    utab = region_table([(UNPACK, ghosts, 64)], 8)  # the message at byte 64 of area 0
    tables = (ptab, np.array([0, 0, 1]), utab, np.array([0, 1]))
    peers, sizes = _where(peer)
    words = arr.ravel().view(np.int64)
    args = (words, own, own, tables, peers, sizes, np.array([shift]), FLAG, 9)

    # the peer has not published exchange 9 yet: the call gives up at peer 0, unpacking nothing
    peer[FLAG] = 8
    assert run_stage(*args, 0, 3, ACK) == 0
    assert not arr.any() and own[ACK] == 0 and own[FLAG] == 0

    peer[FLAG] = 9
    assert run_stage(*args, 0, 3, ACK) == 1
    np.testing.assert_array_equal(arr[:, 0], [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(arr[:, 4], arr[:, 0])  # the copies after the unpack ran
    assert own[ACK] == 9 and own[FLAG] == 0  # acknowledged; pos 0: no pack and no flag of its own


def test_run_stage_fresh_start_packs_publishes_and_needs_no_ack() -> None:
    arr = np.arange(12.0).reshape(3, 4)
    own = _segment()
    ptab = region_table([(PACK, StridedBlock.from_view(arr, (slice(None), slice(1, 2))), 512)], 8)
    tables = (ptab, np.array([0, 1, 1]), region_table([], 8), np.array([0]))
    none = np.zeros(0, dtype=np.int64)
    words = arr.ravel().view(np.int64)
    assert run_stage(words, own, own, tables, none, none, none, FLAG, 5, -1, 10) == 0
    np.testing.assert_array_equal(own.view(np.float64)[64:67], arr[:, 1])
    assert own[FLAG] == 5 and own[ACK] == 0
