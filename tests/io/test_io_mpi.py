"""MPI tests of hpcml.io (run under mpiexec -n 1..4 with --with-mpi).

Every assertion is collective (``assert_all``), so a failure on one rank fails
every rank instead of leaving the others waiting.
"""

from __future__ import annotations

import json
from contextlib import nullcontext

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from io_helpers import assert_all, drivers, field_value, global_value
from mpi4py import MPI

from hpcml import CartDecomp, DistArray
from hpcml.io import CheckpointError, Output, OutputError, checkpoint, read, read_scalar

pytestmark = pytest.mark.mpi


def sub_comms(comm):
    """``(m, subcomm or None)`` for every m = 1..size: the first m ranks."""
    for m in range(1, comm.Get_size() + 1):
        sub = comm.Split(0 if comm.Get_rank() < m else MPI.UNDEFINED, comm.Get_rank())
        yield m, (None if sub == MPI.COMM_NULL else sub)
        if sub != MPI.COMM_NULL:
            sub.Free()


def read_everywhere(comm, path, name, shape, step, want, dims_list=(None,)):
    """Read ``path:/name`` at ``step`` on every sub-communicator and grid; compare."""
    ok, msg = True, ""
    for m, sub in sub_comms(comm):
        if sub is None:
            continue
        for dims in dims_list:
            if dims is not None and int(np.prod(dims)) != m:
                continue
            d = CartDecomp(shape, sub, dims=dims)
            u = read(path, name, d, step=step)
            good = np.array_equal(u.interior, want[d.slices])
            if not good:
                ok, msg = False, f"{path}:/{name} step {step} on {m} rank(s), dims {d.dims}"
            d.free()
    assert_all(comm, ok, msg)


@pytest.mark.parametrize("driver", drivers())
def test_roundtrip_any_decomposition(io_dir, comm, driver):
    shape = (9, 7)
    path = io_dir / "rt.h5"
    d = CartDecomp(shape, comm)
    with Output(path, comm, config="[run]\nx = 1\n", mode="w", driver=driver) as out:
        assert out.driver == driver
        for step in (0, 10, 20):
            out.write("u", DistArray.from_global(d, field_value(shape, step)), step=step, time=step / 10)
            out.write_scalar("flux", float(step) ** 2, step=step)
    dims_list = (None, (1, comm.Get_size()), (comm.Get_size(), 1))
    read_everywhere(comm, path, "u", shape, 10, global_value(shape, 10), dims_list)
    read_everywhere(comm, path, "u", shape, -1, global_value(shape, 20))
    steps, _, values = read_scalar(path, "flux")
    assert_all(comm, list(steps) == [0, 10, 20] and list(values) == [0.0, 100.0, 400.0])
    ok = True
    if comm.Get_rank() == 0:
        with h5py.File(path) as f:  # the attributes the issue asks for
            a = f.attrs
            ok = a["writer"] == driver and a["config"] == "[run]\nx = 1\n"
            ok &= json.loads(a["hpcml_provenance"])[-1]["ranks"] == comm.Get_size()
            keys = ("hpcml_version", "mpi_library", "Conventions", "history", "hpcml_provenance", "title", "source")
            ok &= all(k in a for k in keys)
            u = f["u"]
            ok &= u.shape == (3, *shape) and list(f["step"][...]) == [0, 10, 20] and f["time"][-1] == 2.0
            ok &= '"dims"' in u.attrs["decomposition"]
    assert_all(comm, ok, "attributes")


@settings(max_examples=8, derandomize=True, database=None, deadline=None)
@given(
    shape=st.lists(st.integers(4, 9), min_size=1, max_size=3).map(tuple),
    dtype=st.sampled_from(["f8", "f4", "i4", "i8", "c16"]),
    halo=st.integers(0, 2),
    drv=st.integers(0, 1),
)
def test_roundtrip_shapes_dtypes(comm, shape, dtype, halo, drv):
    from tempfile import mkdtemp

    driver = drivers()[drv % len(drivers())]
    base = comm.bcast(mkdtemp(prefix="hpcml-io-hyp-") if comm.Get_rank() == 0 else None)
    path = f"{base}/h.h5"
    if min(shape) // 4 < halo:  # keep every block at least as wide as the halo on 4 ranks
        halo = 1
    d = CartDecomp(shape, comm, halo=halo)
    u = DistArray.zeros(d, dtype)  # zero ghosts: read() starts from zeros too
    u.interior[...] = DistArray.from_global(d, field_value(shape, 3, dtype), dtype=dtype).interior
    with Output(path, comm, mode="w", driver=driver, xdmf=False) as out:
        out.write("f", u, step=3)
    want = global_value(shape, 3, dtype)
    read_everywhere(comm, path, "f", shape, 3, want)
    # Ghosts after read: exchanged with the neighbours, like after a time step.
    v = read(path, "f", d)
    u.exchange_halos()
    assert_all(comm, np.array_equal(v.data, u.data), f"ghosts {shape} {dtype} halo {halo}")
    d.free()
    comm.Barrier()
    if comm.Get_rank() == 0:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("driver", drivers())
def test_append_with_new_decomposition_and_restart_step(io_dir, comm, driver):
    shape = (8, 6)
    path = io_dir / "ap.h5"
    size = comm.Get_size()
    for session, (dims, steps, restart) in enumerate(
        [((size, 1), (0, 1, 2), None), ((1, size), (3, 4), None), (None, (2, 3), 2)]
    ):
        d = CartDecomp(shape, comm, dims=dims)
        with Output(path, comm, mode="w" if session == 0 else "a", driver=driver, restart_step=restart) as out:
            for s in steps:
                out.write("u", DistArray.from_global(d, field_value(shape, s)), step=s, time=0.5 * s)
                out.write_scalar("res", 10.0**-s, step=s)
        d.free()
    problems = []
    if comm.Get_rank() == 0:
        with h5py.File(path) as f:
            if list(f["step"][:]) != [0, 1, 2, 3]:
                problems.append(f"steps {f['step'][:]}")
            if f["u"].shape != (4, *shape) or f["res"].shape != (4,):
                problems.append(f"u shape {f['u'].shape}, res shape {f['res'].shape}")
            problems += [f"snapshot {i}" for i in range(4) if not np.array_equal(f["u"][i], global_value(shape, i))]
            if '"restart_step":2' not in f.attrs["hpcml_provenance"] or len(f.attrs["history"].splitlines()) != 3:
                problems.append("history")
    assert_all(comm, not problems, f"appended series: {problems}")


@pytest.mark.parametrize("driver", drivers())
def test_output_errors_raise_on_every_rank(io_dir, comm, driver):
    d = CartDecomp((6, 6), comm)
    d2 = CartDecomp((6, 5), comm)
    path = io_dir / "e.h5"
    out = Output(path, comm, mode="w", driver=driver)
    out.write("u", DistArray.zeros(d), step=0)
    with pytest.raises(OutputError, match="dimension 'x' has length 6 in this file, got 5"):
        out.write("u", DistArray.zeros(d2), step=1)
    with pytest.raises(OutputError, match="the file holds 'u' as a field"):
        out.write("u", DistArray.zeros(d2), step=1, dims=("y", "x5"))
    with pytest.raises(OutputError, match="already the name of an axis"):
        out.write("time", DistArray.zeros(d), step=1)
    with pytest.raises(OutputError, match="comes before"):
        out.write("u", DistArray.zeros(d), step=-3)
    out.close()
    with pytest.raises(OutputError, match="closed"):
        out.write("u", DistArray.zeros(d), step=1)
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        read(io_dir / "nope.h5", "u", d)
    with pytest.raises(KeyError, match="no dataset"):
        read(path, "v", d)
    with pytest.raises(OutputError, match="global shape"):
        read(path, "u", d2)
    with pytest.raises(KeyError, match="step 7"):
        read(path, "u", d, step=7)


def _state(d, shape, step):
    u = DistArray.from_global(d, field_value(shape, step))
    u.data[...] = -1.0  # outer frame (Dirichlet values) must survive
    u.interior[...] = global_value(shape, step)[d.slices]
    v = DistArray.from_global(CartDecomp((5,), d.comm, periodic=True), field_value((5,), step, "i8"), dtype="i8")
    return {"u": u, "v": v, "opt": {"lr": 0.1 * step, "m": np.full(3, step, "f4")}, "name": "run", "n": step}


def _check_state(r, d, shape, step):
    u = r["u"]
    ok = r.step == step and np.array_equal(u.interior, global_value(shape, step)[d.slices])
    if d.coords[0] == 0:
        ok &= bool(np.all(u.data[0, d.halo[1] : d.halo[1] + d.local_shape[1]] == -1.0))
    ok &= np.array_equal(r["v"].interior, global_value((5,), step, "i8")[r["v"].decomp.slices])
    ok &= r["opt"]["lr"] == 0.1 * step and r["opt"]["m"].dtype == np.float32 and r["name"] == "run"
    ok &= r["n"] == step and isinstance(r["n"], int)
    return ok


def test_checkpoint_roundtrip_keep_and_other_decompositions(io_dir, comm):
    shape = (9, 6)
    d = CartDecomp(shape, comm)
    for step in (1, 2, 3):
        checkpoint.save(io_dir, _state(d, shape, step), step, keep=2)
    names = sorted(p.name for p in io_dir.iterdir())
    assert_all(comm, names == ["ckpt-0000000002.h5", "ckpt-0000000003.h5"], str(names))
    for m, sub in sub_comms(comm):
        if sub is None:
            continue
        for dims in (None, (1, m)):
            d2 = CartDecomp(shape, sub, dims=dims)
            r = checkpoint.load(io_dir, d2)
            ok = _check_state(r, d2, shape, 3) and not r.skipped
            d2.free()
            assert ok, f"checkpoint on {m} ranks dims {dims}"
    comm.Barrier()


def _flip_byte(path, dataset):
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(offset + 17)
        b = fh.read(1)
        fh.seek(offset + 17)
        fh.write(bytes([b[0] ^ 0x10]))


def test_checkpoint_corruption_detected_and_fallback(io_dir, comm):
    shape = (9, 6)
    d = CartDecomp(shape, comm)
    for step in (1, 2):
        checkpoint.save(io_dir, _state(d, shape, step), step)
    newest = io_dir / "ckpt-0000000002.h5"
    if comm.Get_rank() == 0:
        _flip_byte(newest, "state/u")
    comm.Barrier()
    with pytest.warns(UserWarning, match="checksum") if comm.Get_rank() == 0 else nullcontext():
        r = checkpoint.load(io_dir, d)
    assert_all(comm, _check_state(r, d, shape, 1) and r.skipped and "ckpt-0000000002.h5" in r.skipped[0][0])
    with pytest.raises(CheckpointError, match=r"ckpt-0000000002\.h5.*checksum mismatch in u"):
        checkpoint.load(newest, d, fallback=False)
    # A truncated file (a node died while the file system flushed) is named too.
    if comm.Get_rank() == 0:
        size = newest.stat().st_size
        with open(newest, "r+b") as fh:
            fh.truncate(size // 2)
    comm.Barrier()
    with pytest.raises(CheckpointError, match=r"ckpt-0000000002\.h5 is truncated"):
        checkpoint.load(newest, d, fallback=False)
    r = checkpoint.load(io_dir, d) if comm.Get_rank() != 0 else _load_quiet(io_dir, d)
    assert_all(comm, _check_state(r, d, shape, 1))
    if comm.Get_rank() == 0:
        (io_dir / "ckpt-0000000001.h5").write_bytes(b"not hdf5")
    comm.Barrier()
    with pytest.raises(CheckpointError, match="no loadable checkpoint") as info:
        _load_quiet(io_dir, d)
    assert_all(comm, "ckpt-0000000001.h5" in str(info.value) and "ckpt-0000000002.h5" in str(info.value))


def _load_quiet(path, d):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return checkpoint.load(path, d)


def test_checkpoint_bad_state_raises_everywhere(io_dir, comm):
    d = CartDecomp((6, 6), comm)
    with pytest.raises(CheckpointError, match="cannot checkpoint a object"):
        checkpoint.save(io_dir, {"x": object()}, 1)
    if comm.Get_size() > 1:
        state = {"a": 1} if comm.Get_rank() == 0 else {"b": 1}
        with pytest.raises(CheckpointError, match="differs between rank 0 and rank 1"):
            checkpoint.save(io_dir, state, 1)
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        checkpoint.load(io_dir, d)
    with pytest.raises(CheckpointError, match="no such file or directory"):
        checkpoint.load(io_dir / "absent", d)


@pytest.mark.parametrize("collective", [True, False])
def test_independent_and_collective_transfers(io_dir, comm, collective):
    shape = (7, 9)
    d = CartDecomp(shape, comm)
    path = io_dir / "t.h5"
    driver = drivers()[0]  # mpio where h5py has MPI (vds ignores the option)
    with Output(path, comm, mode="w", driver=driver, collective=collective) as out:
        out.write("u", DistArray.from_global(d, field_value(shape, 1)), step=1)
    v = read(path, "u", d, collective=not collective)
    assert_all(comm, np.array_equal(v.interior, global_value(shape, 1)[d.slices]))


@pytest.mark.parametrize("driver", drivers())
def test_distarray_write_and_read_shortcuts(io_dir, comm, driver, monkeypatch):
    """``u.write(path, name, step, time)`` appends; ``DistArray.read(path, name, decomp, step)`` reads any snapshot."""
    from hpcml.settings import rc

    monkeypatch.setattr(rc, "io_driver", driver)  # what HPCML_IO_DRIVER sets
    shape = (9, 7)
    path = io_dir / "short.h5"
    d = CartDecomp(shape, comm)
    for step in (0, 5):
        DistArray.from_global(d, field_value(shape, step)).write(path, "u", step=step, time=0.5 * step, units="K")
    DistArray.from_global(d, field_value(shape, 99)).write(path, "mask")  # static
    d2 = CartDecomp(shape, comm, dims=(1, comm.Get_size()))
    ok = np.array_equal(DistArray.read(path, "u", d2, step=0).interior, global_value(shape, 0)[d2.slices])
    ok &= np.array_equal(DistArray.read(path, "u", d2).interior, global_value(shape, 5)[d2.slices])
    ok &= np.array_equal(DistArray.read(path, "mask", d2).interior, global_value(shape, 99)[d2.slices])
    if comm.Get_rank() == 0:
        with h5py.File(path) as f:
            ok &= list(f["step"][...]) == [0, 5] and f["u"].attrs["units"] == "K" and f["mask"].shape == shape
    assert_all(comm, ok, "DistArray.write / DistArray.read")
