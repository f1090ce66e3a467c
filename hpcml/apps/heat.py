"""Distributed heat diffusion on a periodic 2-D grid (the default ``hpcml run`` job).

``du/dt = alpha * laplacian(u)`` on the unit square, cell-centred, explicit Euler
with the 5-point stencil.  The initial field ``1 + sin(2 pi ky y) sin(2 pi kx x)``
is an eigenvector of the discrete operator, so the exact discrete solution is
known: the sine amplitude is multiplied by ``g = 1 + dt*alpha*(ly + lx)`` per step
with ``l = -(4/h^2) sin^2(pi k h)``.  The run reports the measured amplitude
against that value, which checks the decomposition, halo exchange and stencil
on any rank count.  Each step overlaps the halo exchange with the interior update.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.apps import app_comm, check_grid, grid_decomp, restart
from hpcml.config import ConfigError, check_choice, check_output_path, dumps
from hpcml.distarray import DistArray
from hpcml.io import Output, checkpoint
from hpcml.jit import work_clock
from hpcml.runtime import StopPoll
from hpcml.settings import CHOICES
from hpcml.stepping import diffusion_step

HALO_METHODS = CHOICES["halo_method"]

__all__ = ["SOLUTION_KEYS", "exact_amplitude", "run", "validate_config"]

log = logging.getLogger("hpcml.apps.heat")

#: Config values that determine the solution: a checkpoint written with others is refused.
SOLUTION_KEYS = ("grid.shape", "grid.periodic", "heat.alpha", "heat.cfl", "heat.modes")


def validate_config(cfg: dict[str, Any], ranks: int | None = None) -> None:
    """Check every heat option (names in the message); no MPI, runs before the first collective."""
    g, h = cfg["grid"], cfg["heat"]
    if len(g["shape"]) != 2 or any((not isinstance(n, int)) or n < 1 for n in g["shape"]):
        raise ConfigError(f"grid.shape must be two positive integers, got {g['shape']!r}")
    modes = h["modes"]
    if len(modes) != 2 or any(not isinstance(k, int) or isinstance(k, bool) for k in modes):
        raise ConfigError(f"heat.modes must be two integers (ky, kx), got {modes!r}")
    for k, n, axis in zip(modes, g["shape"], ("y", "x")):
        if not 1 <= k <= n // 2:
            raise ConfigError(
                f"heat.modes = {modes!r}: the {axis} wave number must be in 1..{n // 2} for grid.shape {g['shape']!r} "
                "(a sine with more than shape/2 periods is not resolved by the grid)"
            )
    check_choice(cfg, "run.halo_method", HALO_METHODS)
    check_output_path(cfg, "output.path")
    for key in ("periodic", "dims"):
        if len(g[key]) != 2:
            raise ConfigError(f"grid.{key} must have two entries, got {g[key]!r}")
    if not all(g["periodic"]):
        raise ConfigError("the heat app runs on a periodic grid: grid.periodic must be [true, true]")
    check_grid(g, ranks, halo=1)
    if h["alpha"] <= 0:
        raise ConfigError(f"heat.alpha must be positive, got {h['alpha']}")
    if not 0 < h["cfl"] <= 0.25:
        raise ConfigError(f"heat.cfl must be in (0, 0.25] for a stable explicit step, got {h['cfl']}")
    if h["steps"] < 0:
        raise ConfigError(f"heat.steps must be >= 0, got {h['steps']}")
    if cfg["output"]["every"] < 1:
        raise ConfigError(f"output.every must be >= 1, got {cfg['output']['every']}")


def _spacing(shape: tuple[int, int]) -> tuple[float, float]:
    return 1.0 / shape[0], 1.0 / shape[1]


def _dt(cfg: dict[str, Any], shape: tuple[int, int]) -> float:
    return cfg["heat"]["cfl"] * min(_spacing(shape)) ** 2 / cfg["heat"]["alpha"]


def exact_amplitude(cfg: dict[str, Any], steps: int) -> float:
    """Sine amplitude after ``steps`` Euler steps of the discrete operator."""
    shape = tuple(cfg["grid"]["shape"])
    hy, hx = _spacing(shape)
    ky, kx = cfg["heat"]["modes"]
    lam = -(4 / hy**2) * math.sin(math.pi * ky * hy) ** 2 - (4 / hx**2) * math.sin(math.pi * kx * hx) ** 2
    return (1.0 + _dt(cfg, shape) * cfg["heat"]["alpha"] * lam) ** steps


def _amplitude(u: DistArray, cfg: dict[str, Any]) -> float:
    """Projection of ``u - 1`` on the initial sine mode (global reduction)."""
    shape = u.shape
    hy, hx = _spacing(shape)
    ky, kx = cfg["heat"]["modes"]
    iy, ix = u.decomp.global_indices()
    mode = np.sin(2 * np.pi * ky * (iy + 0.5) * hy) * np.sin(2 * np.pi * kx * (ix + 0.5) * hx)
    local = float(np.sum((u.interior - 1.0) * mode))
    norm2 = float(np.sum(mode * mode))
    num, den = u.decomp.cart.allreduce(np.array([local, norm2]), op=MPI.SUM)
    return num / den if den else 0.0


def run(config: dict[str, Any], comm: MPI.Comm | None = None) -> dict[str, Any]:
    """Run the heat job described by ``config``; return a summary dict (same on every rank).

    Writes the field series ``u`` and the scalar series ``norm`` through
    :class:`hpcml.io.Output`, checkpoints every ``checkpoint.every`` steps and on a
    stop signal, and with ``run.restart`` continues from the newest good checkpoint
    (on any rank count) with a bit-identical result.  The output file and the
    checkpoint folder are locked for the run (another job using them is refused).
    """
    comm = app_comm(comm)
    validate_config(config, comm.Get_size())
    o = config["output"]
    ckdir = restart.checkpoint_directory(config["checkpoint"]["dir"], o["path"])
    return restart.run_locked(comm, o["path"], ckdir, lambda: _run(config, comm))


def _run(config: dict[str, Any], comm: MPI.Comm) -> dict[str, Any]:
    g, h, o, ck = config["grid"], config["heat"], config["output"], config["checkpoint"]
    shape = tuple(g["shape"])
    decomp = grid_decomp(g, comm, halo=1)
    hy, hx = _spacing(shape)
    ky, kx = h["modes"]
    dt = _dt(config, shape)
    cy, cx = h["alpha"] * dt / hy**2, h["alpha"] * dt / hx**2
    rank0 = comm.Get_rank() == 0
    start = 0
    u = None
    ckdir = restart.checkpoint_directory(ck["dir"], o["path"])
    plan = restart.plan(config, ckdir, SOLUTION_KEYS, comm, "heat")
    if plan.resume:
        state = checkpoint.load(ckdir, decomp, expect=plan.record)
        u, start = state["u"], int(state.step)
        if start > h["steps"]:  # every rank loaded the same checkpoint: every rank raises
            raise ConfigError(
                f"checkpoint {state.path} is at step {start}, past heat.steps = {h['steps']}: set heat.steps "
                f">= {start} to continue it, or run.restart = false to start again"
            )
        if rank0:
            log.info("heat: restarting from %s (step %d)", state.path, start)
    if u is None:

        def initial(iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
            return 1.0 + np.sin(2 * np.pi * ky * (iy + 0.5) * hy) * np.sin(2 * np.pi * kx * (ix + 0.5) * hx)

        u = DistArray.from_global(decomp, initial, dtype="f8")
    un = u.zeros_like()
    method = config["run"]["halo_method"]
    out = None
    if o["path"]:
        # A resumed run drops what was written at or after its checkpoint's step (a stop
        # between output steps records one extra snapshot) and re-records that step when
        # it is an output step, so the series equals an uninterrupted run's.
        out = Output(
            o["path"],
            comm,
            config=dumps(config),
            mode="a" if start else "w",
            restart_step=start or None,
            time_units="1",
            title="hpcml heat: du/dt = alpha laplacian(u) on the periodic unit square",
        )
    last = (start, start * dt, u.norm())
    if out is not None and (start % o["every"] == 0 or start == h["steps"]):
        _record(out, u, last, o["fields"])
    if rank0:
        log.info(
            "heat: grid %s on %d ranks (dims %s), steps %d..%d, dt=%.3e",
            shape,
            comm.Get_size(),
            decomp.dims,
            start + 1,
            h["steps"],
            dt,
        )
    stopped_at = None
    stop = StopPoll(comm)  # agreed by all ranks within about a second, whatever the step time
    t0 = work_clock()  # stops while kernels compile: compile time is reported apart
    for n in range(start + 1, h["steps"] + 1):
        diffusion_step(u, un, (cy, cx), method)
        u, un = un, u
        stopping = n < h["steps"] and stop()
        if stopping and rank0:
            log.info("heat: stop signal received at step %d: writing the output and a checkpoint", n)
        if n % o["every"] == 0 or n == h["steps"] or stopping:
            last = (n, n * dt, u.norm())
            if rank0:
                log.info("heat: step %6d  t=%.5e  |u|=%.12e", n, n * dt, last[2])
            if out is not None:
                _record(out, u, last, o["fields"])
        if ckdir is not None and ((ck["every"] and n % ck["every"] == 0) or stopping):
            if out is not None:  # the output holds every entry up to the checkpoint (a kill leaves no gap)
                out.flush(force=True)
            checkpoint.save(
                ckdir, {"u": u}, n, time=n * dt, comm=comm, keep=ck["keep"], config=dumps(config), solution=plan.record
            )
        if stopping:
            stopped_at = n
            break
    elapsed = comm.allreduce(work_clock() - t0, op=MPI.MAX)
    if out is not None:
        out.close()
    steps_done = stopped_at if stopped_at is not None else max(h["steps"], start)
    amp = _amplitude(u, config)
    expect = exact_amplitude(config, steps_done)
    summary = {
        "app": "heat",
        "ranks": comm.Get_size(),
        "dims": list(decomp.dims),
        "steps": steps_done,
        "restarted_from": start,
        "stopped_early": stopped_at is not None,
        "dt": dt,
        "time": steps_done * dt,
        "norm": u.norm(),
        "amplitude": amp,
        "amplitude_exact": expect,
        "amplitude_error": abs(amp - expect),
        "seconds": elapsed,
        "cell_updates_per_s": (math.prod(shape) * (steps_done - start) / elapsed) if elapsed > 0 else float("nan"),
    }
    if out is not None:
        summary["output"] = o["path"]
        if rank0:
            log.info("heat: output in %s (plots: hpcml analyze %s)", o["path"], o["path"])
    return summary


def _record(out: Output, u: DistArray, point: tuple[int, float, float], fields: bool) -> None:
    """One output step: the norm and (optionally) the field, readable when this returns."""
    step, t, norm = point
    out.write_scalar("norm", norm, step=step, time=t, units="1", long_name="L2 norm of u (sum over cells)")
    if fields:
        ny, nx = u.shape
        coords = {  # cell centres of the unit square
            "y": ((np.arange(ny) + 0.5) / ny, {"units": "1", "long_name": "y (cell centre)"}),
            "x": ((np.arange(nx) + 0.5) / nx, {"units": "1", "long_name": "x (cell centre)"}),
        }
        out.write("u", u, step=step, time=t, units="1", long_name="temperature", coords=coords)
    out.flush()
