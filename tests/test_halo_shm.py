"""The ``shm`` strategy's blocking path: faces through shared segments, synchronised by flags.

Every exchange is checked against the NumPy reference built from the global array
(``np.pad(mode="wrap")`` on periodic axes), on uneven splits, several exchanges in
a row with the values changed between them (the two slots of a round alternate).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcml import CartDecomp, DistArray, halo_shm
from hpcml.testing import SENTINEL, assert_all, expected_ghosted, field_fn, global_field, halo_case


def _exchanges_match(comm, shape, periodic, halo, corners, dtype="f8", order="C", rounds=4):
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
def test_blocking_exchanges_match_reference(comm, data):
    shape, periodic, halo, corners = data.draw(halo_case(comm.size))
    ok = _exchanges_match(comm, shape, periodic, halo, corners)
    assert_all(comm, ok, f"shape={shape} periodic={periodic} halo={halo} corners={corners}")


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["f4", "c16", "bool"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_blocking_exchange_dtypes_and_orders(comm, dtype, order):
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


@pytest.mark.mpi
def test_waits_yield_sooner_on_a_crowded_node(comm):
    """With more ranks than CPUs on the node a blocking wait returns to Python (and yields) after a few polls."""
    from hpcml.runtime import node_share

    d = CartDecomp((8, 4 * comm.size), comm, periodic=True, halo=1)
    u = DistArray.zeros(d)
    u.exchange_halos(method="shm")
    ranks, cpus = node_share(comm)
    spins = u.halo_plan("shm").strategy._spins
    assert_all(comm, spins == (halo_shm.SPINS if ranks <= cpus else halo_shm.SPINS_SHARED), f"{spins} polls")
    d.free()


def _field(d, k=0):
    u = DistArray.full(d, SENTINEL)
    u.interior[...] = field_fn(d.shape)(*d.global_indices()) + k
    return u


def _ref(d, k=0):
    return expected_ghosted(global_field(d.shape) + k, d)


@pytest.mark.mpi
def test_started_exchanges_complete_in_any_order_on_each_rank(comm):
    """Exchanges in flight together are matched by the order they started in: ranks may wait for
    them in different orders (here reversed on odd ranks), and areas are reused many times over."""
    d = CartDecomp((6, 3 * comm.size + 1), comm, dims=[1, comm.size], periodic=True, halo=1)
    ok = True
    for rnd in range(3 * halo_shm.MAX_STATES // 5 + 2):
        arrays = [_field(d, 10 * rnd + k) for k in range(5)]
        reqs = [a.start_exchange(method="shm") for a in arrays]
        for k in reversed(range(5)) if comm.rank % 2 else range(5):
            reqs[k].wait()
        ok &= all(np.array_equal(a.data, _ref(d, 10 * rnd + k)) for k, a in enumerate(arrays))
    assert_all(comm, ok)
    d.free()


@pytest.mark.mpi
def test_more_started_exchanges_in_flight_than_areas_is_refused(comm):
    d = CartDecomp((6, 3 * comm.size + 1), comm, dims=[1, comm.size], periodic=True, halo=1)
    arrays = [_field(d, k) for k in range(halo_shm.MAX_STATES + 1)]
    reqs = [a.start_exchange(method="shm") for a in arrays[:-1]]
    with pytest.raises(RuntimeError, match="more than 16 exchanges of one plan in flight"):
        arrays[-1].start_exchange(method="shm")
    for r in reqs:
        r.wait()
    ok = all(np.array_equal(a.data, _ref(d, k)) for k, a in enumerate(arrays[:-1]))
    late = arrays[-1].start_exchange(method="shm")  # room again
    late.wait()
    assert_all(comm, ok and np.array_equal(arrays[-1].data, _ref(d, halo_shm.MAX_STATES)))
    d.free()


@pytest.mark.mpi(min_size=2)
def test_test_does_not_wait_for_a_late_neighbour(comm):
    """``test()`` on a started exchange returns False while a neighbour has not started it, and True once done."""
    import time

    d = CartDecomp((6, 3 * comm.size + 1), comm, dims=[1, comm.size], periodic=True, halo=1)
    u = _field(d)
    u.exchange_halos(method="shm")  # the plan exists everywhere
    comm.Barrier()
    if comm.rank != 0:
        time.sleep(0.3)
    req = u.start_exchange(method="shm")
    early = req.test()
    while not req.test():
        pass
    ok = np.array_equal(u.data, _ref(d)) and (comm.rank != 0 or not early)
    assert_all(comm, ok, f"test() before the neighbours started: {early}")
    d.free()


@pytest.mark.mpi
def test_a_freed_plan_refuses_every_exchange(comm):
    """After ``free()`` the neighbours' segments are unmapped: exchanges raise instead of touching them."""
    from hpcml.halo import HaloExchange

    d = CartDecomp((6, 3 * comm.size + 1), comm, dims=[1, comm.size], periodic=True, halo=1)
    u = _field(d)
    plan = HaloExchange(d, u.dtype, method="shm")
    plan.start(u.data).wait()
    plan.free()
    with pytest.raises(RuntimeError, match="freed"):
        plan.start(u.data)
    with pytest.raises(RuntimeError, match="freed"):
        plan.exchange(u.data)
    d.free()
