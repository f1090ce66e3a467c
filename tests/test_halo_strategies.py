"""hpcml.halo_strategies and hpcml.halo_layout: the registry, a strategy added in a test, merged
messages and self-neighbour copies, all checked against ``np.pad(mode="wrap")``."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from hpcml import CartDecomp, DistArray
from hpcml.halo import HaloExchange, choose_method, methods, register_strategy, unregister_strategy
from hpcml.halo_layout import HaloLayout
from hpcml.halo_strategies import REGISTRY, HaloStrategy
from hpcml.testing import SENTINEL, assert_all, expected_ghosted, field_fn, global_field


class CopytoStrategy(HaloStrategy):
    """A method written in a test: NumPy copies and plain Isend/Irecv per message of the layout."""

    name = "test-copyto"

    def new_state(self):
        return None

    def start(self, stage, data, state):
        st = self.layout.stages[stage]
        self._incoming = [(m, np.empty(m.nbytes, np.uint8)) for m in st.recvs]
        reqs = [self.comm.Irecv(self._spec(buf, m.nbytes), m.peer, m.tag) for m, buf in self._incoming]
        for m in st.sends:
            packed = np.concatenate([np.ascontiguousarray(data[f.send_region]).view(np.uint8).ravel() for f in m.faces])
            reqs.append(self.comm.Isend(self._spec(packed, m.nbytes), m.peer, m.tag))
        for f in st.copies:
            data[f.recv_region] = data[f.send_region]
        return reqs

    def finish(self, stage, data, state):
        for m, buf in self._incoming:
            pos = 0
            for f in m.faces:
                ghost = data[f.recv_region]
                ghost[...] = buf[pos : pos + f.nbytes].view(data.dtype).reshape(ghost.shape)
                pos += f.nbytes

    def adjoint(self, data):
        raise NotImplementedError("not needed by this test")


@pytest.fixture
def copyto_strategy():
    register_strategy(CopytoStrategy)
    yield CopytoStrategy.name
    unregister_strategy(CopytoStrategy.name)


def _exchange_matches(comm, shape, periodic, halo, method, corners=True, dims=None):
    d = CartDecomp(shape, comm, dims=dims, periodic=periodic, halo=halo)
    u = DistArray.full(d, SENTINEL)
    u.interior[...] = field_fn(shape)(*d.global_indices())
    u.exchange_halos(method=method, corners=corners)
    ok = np.array_equal(u.data, expected_ghosted(global_field(shape), d, corners=corners))
    plan = u.halo_plan(method, corners)
    d.free()
    return ok, plan


@pytest.mark.mpi
@pytest.mark.parametrize("corners", [True, False])
def test_registered_strategy_runs_the_reference_suite(comm, copyto_strategy, corners):
    assert copyto_strategy in methods()
    for shape, periodic, halo in [((11, 7), (True, False), 1), ((9, 8, 7), (True, True, False), 2)]:
        ok, plan = _exchange_matches(comm, shape, periodic, halo, copyto_strategy, corners)
        assert isinstance(plan.strategy, CopytoStrategy)
        assert_all(comm, ok, f"{shape} {periodic} halo={halo}")


@pytest.mark.mpi
def test_registered_strategy_interoperates_with_pack(comm, copyto_strategy):
    """Odd ranks use the test strategy, even ranks ``pack``: the wire format is the layout's."""
    method = copyto_strategy if comm.rank % 2 else "pack"
    ok, _ = _exchange_matches(comm, (10, 9, 6), (True, True, True), 1, method)
    assert_all(comm, ok, "mixed methods")


def test_registry_rules(copyto_strategy):
    assert set(REGISTRY) >= {"pack", "datatype", "staged", "device", copyto_strategy}
    with pytest.raises(ValueError, match="other than 'auto'"):
        register_strategy(type("Auto", (CopytoStrategy,), {"name": "auto"}))
    with pytest.raises(TypeError, match="not a HaloStrategy"):
        register_strategy(type("Other", (), {"name": "other"}))
    # auto never picks a strategy of lower priority than pack; shm (same node) ranks above it
    assert choose_method(False) == "shm"
    assert choose_method(False, exclude=("shm",)) == "pack"


def test_auto_considers_registered_strategies(monkeypatch, tmp_path):
    from hpcml.settings import rc

    monkeypatch.setattr(rc, "halo_model", str(tmp_path / "no-model.json"))  # priorities decide

    class Faster(CopytoStrategy):
        name = "test-faster"
        priority = 99

    register_strategy(Faster)
    try:
        assert choose_method(False) == "test-faster"
        assert choose_method(True) in ("staged", "device")  # it serves host arrays only
        d = CartDecomp((6, 5), MPI.COMM_SELF, periodic=True)
        assert HaloExchange(d, "f8").method == "test-faster"
        d.free()
    finally:
        unregister_strategy("test-faster")


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("method", ["pack", "datatype"])
def test_both_directions_to_one_rank_are_one_message(comm, method):
    """Two ranks along a periodic axis: one message per stage each way, both faces in it."""
    if comm.size != 2:
        pytest.skip("the merged-message case is two ranks along one periodic axis")
    for shape, dims in [((8, 12), (2, 1)), ((8, 12), (1, 2)), ((6, 5, 8), (1, 1, 2)), ((6, 7, 5), (2, 1, 1))]:
        d = CartDecomp(shape, comm, dims=dims, periodic=True, halo=2)
        layout = HaloLayout(d, "f8", "C", True)
        split = dims.index(2)
        messages = [m for s in layout.stages for m in s.sends]
        faces = [f for m in messages for f in m.faces]
        assert {f.axis for f in faces} == {split} and len(faces) == 2
        dense = all(f.send.contiguous for f in faces)
        assert len(messages) == (2 if dense and faces[0].nbytes >= 32 << 10 else 1)
        assert all(len(s.copies) == 2 for s in layout.stages if s.axes[0] != split)
        d.free()
        ok, _ = _exchange_matches(comm, shape, True, 2, method, dims=dims)
        assert_all(comm, ok, f"{shape} dims={dims}")


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["pack", "datatype"])
def test_self_neighbour_faces_are_local_copies(comm, method):
    """Every periodic axis held by one rank is copied locally, never sent; the result is np.pad's wrap."""
    shape = (7, 5, 6 * comm.size)
    d = CartDecomp(shape, comm, dims=(1, 1, comm.size), periodic=True, halo=2)
    layout = HaloLayout(d, "f8", "C", True)
    for stage in layout.stages:
        if stage.axes[0] < 2 or comm.size == 1:
            assert not stage.sends and not stage.recvs and len(stage.copies) == 2
    assert layout.copy_nbytes > 0
    d.free()
    ok, _ = _exchange_matches(comm, shape, True, 2, method)
    assert_all(comm, ok, "self-neighbour copies")


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["pack", "datatype"])
@pytest.mark.parametrize("corners", [True, False])
def test_stages_without_messages_take_no_round(comm, method, corners):
    """Host strategies fold the stages that only copy into a neighbouring round (before the
    first stage with messages, or after the one before them): one round per stage with
    messages, one if there are none; edges and corners still equal np.pad's wrap, blocking
    and started, for every axis the ranks lie along and mixed periodicity."""
    cases = []
    for ndim in (2, 3):
        for axis in range(ndim):
            dims = [1] * ndim
            dims[axis] = comm.size
            shape = tuple(5 + 3 * comm.size if a == axis else 6 + a for a in range(ndim))
            for periodic in (
                (True,) * ndim,
                tuple(a != axis for a in range(ndim)),
                tuple(a == axis for a in range(ndim)),
            ):
                cases.append((shape, tuple(dims), periodic))
    for shape, dims, periodic in cases:
        ok, plan = _exchange_matches(comm, shape, periodic, 2, method, corners=corners, dims=dims)
        stages = plan.layout.stages
        with_messages = sum(1 for s in stages if s.sends or s.recvs)
        ok &= plan.strategy.nrounds == (with_messages or (1 if stages else 0))
        assert_all(comm, ok, f"{shape} dims={dims} periodic={periodic} corners={corners}")
        # the started form walks the same rounds
        d = CartDecomp(shape, comm, dims=dims, periodic=periodic, halo=2)
        u = DistArray.full(d, SENTINEL)
        u.interior[...] = field_fn(shape)(*d.global_indices())
        req = u.start_exchange(method=method, corners=corners)
        req.wait()
        ok = np.array_equal(u.data, expected_ghosted(global_field(shape), d, corners=corners))
        assert_all(comm, ok, f"started: {shape} dims={dims} periodic={periodic} corners={corners}")
        d.free()


@pytest.mark.mpi
def test_persistent_requests_serve_many_arrays(comm):
    """More arrays than the bound-request cache keeps, exchanged in turn: every result right."""
    shape = (3 * comm.size + 5, 9)
    d = CartDecomp(shape, comm, dims=(comm.size, 1), periodic=True, halo=1)
    ref = expected_ghosted(global_field(shape), d)
    arrays = []
    for _ in range(7):
        u = DistArray.full(d, SENTINEL)
        u.interior[...] = field_fn(shape)(*d.global_indices())
        arrays.append(u)
    ok = True
    for _ in range(3):
        for u in arrays:
            u.data[...] = np.where(ref == SENTINEL, SENTINEL, 0)
            u.interior[...] = field_fn(shape)(*d.global_indices())
            u.exchange_halos("pack")
            ok &= np.array_equal(u.data, ref)
    del arrays  # dead arrays' bound requests are freed when their cache slot is reused
    v = DistArray.full(d, SENTINEL)
    v.interior[...] = field_fn(shape)(*d.global_indices())
    v.exchange_halos("pack")
    ok &= np.array_equal(v.data, ref)
    assert_all(comm, ok, "exchanges over many arrays")
    d.free()


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["pack", "datatype"])
def test_more_exchanges_in_flight_than_cached_bindings(comm, method):
    """Six arrays in flight on one plan (the binding cache keeps four): none loses its requests."""
    shape = (3 * comm.size + 4, 11)
    d = CartDecomp(shape, comm, dims=(comm.size, 1), periodic=True, halo=1)
    ref = expected_ghosted(global_field(shape), d)
    arrays = []
    for k in range(6):
        u = DistArray.full(d, SENTINEL)
        u.interior[...] = (k + 1) * field_fn(shape)(*d.global_indices())
        arrays.append(u)
    for _ in range(2):
        reqs = [u.start_exchange(method) for u in arrays]
        for r in reqs:
            r.wait()
    ok = all(np.array_equal(u.data, (k + 1) * ref) for k, u in enumerate(arrays))
    assert_all(comm, ok, f"{method}: six exchanges in flight")
    d.free()


@pytest.mark.mpi
def test_auto_skips_shm_where_its_collective_check_fails(comm, monkeypatch):
    """``auto`` takes ``shm`` where every rank shares a node, and ``pack`` on every rank where
    the check fails (here: forced to), with the same ghosts."""
    from hpcml.halo_shm import ShmStrategy

    results = []
    for passes in (True, False):
        if not passes:
            monkeypatch.setattr(ShmStrategy, "collective_check", classmethod(lambda cls, c: False))
        d = CartDecomp((11, 7), comm, periodic=True, halo=1)
        u = DistArray.full(d, SENTINEL)
        u.interior[...] = field_fn(d.shape)(*d.global_indices())
        u.exchange_halos()
        ref = expected_ghosted(global_field(d.shape), d)
        results.append((u.halo_plan().method, np.array_equal(u.data, ref)))
        d.free()
    assert_all(comm, results == [("shm", True), ("pack", True)], f"auto choices {results}")


@pytest.mark.mpi
def test_shm_names_the_rank_that_cannot_map_a_neighbour(comm, monkeypatch):
    """Ranks that do not share a node (here: each rank reports its own host name) get one
    ``ValueError`` on every rank when ``shm`` is asked for, before any exchange: no rank
    waits for a neighbour that gave up."""
    import socket

    if comm.size < 2:
        pytest.skip("needs a neighbour rank")
    monkeypatch.setattr(socket, "gethostname", lambda: f"node-{comm.rank}")
    # split along the fastest axis: strided faces, packed (dense faces alone would go by MPI)
    d = CartDecomp((6, 4 * comm.size + 1), comm, dims=(1, comm.size), periodic=True, halo=1)
    u = DistArray.full(d, SENTINEL)
    with pytest.raises(ValueError, match=r"'shm' is not usable here: rank \d+ cannot map rank \d+.*node-"):
        u.exchange_halos(method="shm")
    u.exchange_halos(method="pack")  # the communicator is still in step
    d.free()


def test_auto_takes_the_usable_refinement_of_the_measured_method(monkeypatch):
    """Where the measured model picks ``pack``, ``auto`` takes ``shm`` (pack through shared
    memory, usable here); a pick with no refinement stands."""
    import hpcml.halo as halo

    d = CartDecomp((6, 6), MPI.COMM_SELF, periodic=True)
    layout = HaloLayout(d, np.dtype("f8"), "C", True)
    monkeypatch.setattr(halo, "_model_choice", lambda on_device, lay, candidates: "pack")
    assert choose_method(False, "auto", layout) == "shm"
    assert choose_method(False, "auto", layout, exclude=("shm",)) == "pack"
    monkeypatch.setattr(halo, "_model_choice", lambda on_device, lay, candidates: "datatype")
    assert choose_method(False, "auto", layout) == "datatype"
    d.free()
