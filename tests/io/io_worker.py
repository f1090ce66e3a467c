"""MPI job used by the serial I/O tests: ``mpiexec -n N python io_worker.py CMD ...``.

A failure on any rank is printed and ends the job with ``Abort`` (non-zero exit
code instead of a hang); success prints ``OK`` on rank 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import numpy as np
from io_helpers import field_value, global_value
from mpi4py import MPI

from hpcml import CartDecomp, DistArray

comm = MPI.COMM_WORLD


def shape_of(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("x"))


def dims_of(text: str | None, nd: int):
    if not text:
        return None
    return [int(x) for x in text.split("x")][:nd]


def all_dims(size: int, nd: int) -> list[list[int]]:
    """Every process grid of ``size`` ranks over ``nd`` dimensions."""
    if nd == 1:
        return [[size]]
    return [[a, *rest] for a in range(1, size + 1) if size % a == 0 for rest in all_dims(size // a, nd - 1)]


def cmd_write(a: argparse.Namespace) -> None:
    from hpcml.io import Output

    shape = shape_of(a.shape)
    d = CartDecomp(shape, comm, dims=dims_of(a.dims, len(shape)))
    with Output(
        a.path,
        comm,
        config={"run": {"shape": list(shape)}},
        mode=a.mode,
        driver=a.driver,
        consolidate=a.consolidate,
        restart_step=a.restart_step,
    ) as out:
        for step in range(a.first, a.first + a.nsteps):
            u = DistArray.from_global(d, field_value(shape, step))
            out.write("u", u, step=step, time=0.5 * step, units="K")
            out.write_scalar("norm", u.norm(), step=step, time=0.5 * step)
            time.sleep(a.sleep)
        if comm.Get_rank() == 0:
            print("driver", out.driver)


def cmd_crash(a: argparse.Namespace) -> None:
    """Write ``nsteps`` snapshots, then die (SIGKILL on rank ``--rank``) in the middle of the next one.

    ``--where data``: after that rank's block is in its data file, before the main file is
    rewritten; ``--where main``: on rank 0, the new main file written but not yet renamed.
    ``--sleep`` seconds between snapshots (to let a second job find this one running).
    """
    from hpcml.io import Output, mainfile

    shape = shape_of(a.shape)
    d = CartDecomp(shape, comm)

    def die(*args, **kwargs):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    with Output(a.path, comm, mode=a.mode, driver=a.driver, flush_seconds=0) as out:  # every step readable
        for step in range(a.first, a.first + a.nsteps + 1):
            if step == a.first + a.nsteps and comm.Get_rank() == a.rank:
                if a.where == "data":

                    def write_then_die(*args, original=out._writer._write, **kwargs):
                        original(*args, **kwargs)
                        out._writer.flush()
                        die()

                    out._writer._write = write_then_die
                else:
                    mainfile.os.replace = die
            u = DistArray.from_global(d, field_value(shape, step))
            out.write("u", u, step=step, time=0.5 * step, units="K")
            out.write_scalar("norm", float(step), step=step, time=0.5 * step)
            out.flush()
            time.sleep(a.sleep)


def cmd_check(a: argparse.Namespace) -> None:
    """Read every snapshot on this rank count, on every process grid, and compare."""
    from hpcml.io import read, series

    shape = shape_of(a.shape)
    steps = [int(s) for s in a.steps.split(",")]
    paths = a.paths.split(",")
    if comm.Get_rank() == 0:
        for path in paths:
            got = series(path, "u")["steps"]
            assert got == steps, f"{path}: steps in file {got} != expected {steps}"
    for dims in all_dims(comm.Get_size(), len(shape)):
        if any(n < p for n, p in zip(shape, dims)):
            continue
        d = CartDecomp(shape, comm, dims=dims)
        for path in paths:
            for step in steps:
                u = read(path, "u", d, step=step)
                want = global_value(shape, step)[d.slices]
                assert np.array_equal(u.interior, want), f"{path} step {step} dims {dims}: mismatch"
        d.free()


def _state(d: CartDecomp, shape: tuple[int, ...], step: int) -> dict:
    u = DistArray.from_global(d, field_value(shape, step))
    u.data[...] = -float(step)  # the boundary frame must come back too
    u.interior[...] = global_value(shape, step)[d.slices]
    return {"u": u, "meta": {"step": step, "label": f"s{step}", "hist": np.arange(step + 1.0)}, "empty": {}}


def cmd_ckpt_save(a: argparse.Namespace) -> None:
    from hpcml.io import checkpoint

    shape = shape_of(a.shape)
    d = CartDecomp(shape, comm, dims=dims_of(a.dims, len(shape)))
    checkpoint.save(a.path, _state(d, shape, a.step), a.step, time=0.1 * a.step, keep=a.keep)


def cmd_ckpt_load(a: argparse.Namespace) -> None:
    from hpcml.io import checkpoint

    shape = shape_of(a.shape)
    for dims in all_dims(comm.Get_size(), len(shape)):
        if any(n < p for n, p in zip(shape, dims)):
            continue
        d = CartDecomp(shape, comm, dims=dims)
        r = checkpoint.load(a.path, d)
        assert r.step == a.step, f"loaded step {r.step}, expected {a.step}"
        u = r["u"]
        assert np.array_equal(u.interior, global_value(shape, a.step)[d.slices])
        for ax in range(len(shape)):  # outer ghost frame (non-periodic) restored
            if d.coords[ax] == 0:
                idx = [slice(h, h + n) for h, n in zip(d.halo, d.local_shape)]
                idx[ax] = slice(0, d.halo[ax])
                assert np.all(u.data[tuple(idx)] == -float(a.step)), "frame not restored"
        assert r["meta"]["label"] == f"s{a.step}" and r["meta"]["step"] == a.step
        assert np.array_equal(r["meta"]["hist"], np.arange(a.step + 1.0))
        assert r["empty"] == {}, r["empty"]
        d.free()


def cmd_ckpt_crash(a: argparse.Namespace) -> None:
    """Save ``step``, but die (SIGKILL) after the temporary file is written, before the rename."""
    from hpcml.io import checkpoint

    shape = shape_of(a.shape)
    d = CartDecomp(shape, comm)

    def die(src, dst):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.os.replace = die  # only rank 0 renames: the kill lands between write and rename
    checkpoint.save(a.path, _state(d, shape, a.step), a.step)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("path")
    w.add_argument("driver")
    w.add_argument("shape")
    w.add_argument("nsteps", type=int)
    w.add_argument("--first", type=int, default=0)
    w.add_argument("--mode", default="a")
    w.add_argument("--dims")
    w.add_argument("--consolidate", action="store_true")
    w.add_argument("--restart-step", type=int)
    w.add_argument("--sleep", type=float, default=0.0)
    k = sub.add_parser("crash")
    k.add_argument("path")
    k.add_argument("driver")
    k.add_argument("shape")
    k.add_argument("nsteps", type=int)
    k.add_argument("--first", type=int, default=0)
    k.add_argument("--mode", default="a")
    k.add_argument("--rank", type=int, default=0)
    k.add_argument("--where", choices=["data", "main"], default="data")
    k.add_argument("--sleep", type=float, default=0.0)
    c = sub.add_parser("check")
    c.add_argument("paths", help="comma-separated files")
    c.add_argument("shape")
    c.add_argument("steps", help="comma-separated steps expected in each file")
    for name in ("ckpt-save", "ckpt-load", "ckpt-crash"):
        q = sub.add_parser(name)
        q.add_argument("path")
        q.add_argument("shape")
        q.add_argument("step", type=int)
        q.add_argument("--dims")
        q.add_argument("--keep", type=int, default=3)
    a = p.parse_args(argv)
    {
        "write": cmd_write,
        "check": cmd_check,
        "crash": cmd_crash,
        "ckpt-save": cmd_ckpt_save,
        "ckpt-load": cmd_ckpt_load,
        "ckpt-crash": cmd_ckpt_crash,
    }[a.cmd](a)
    comm.Barrier()
    if comm.Get_rank() == 0:
        print("OK")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            raise
        sys.stderr.write(f"[rank {comm.Get_rank()}] {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        # Give the launcher time to forward the message: Abort kills the job at once.
        time.sleep(1.0)
        comm.Abort(1)
