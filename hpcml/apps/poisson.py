"""Distributed Poisson solve with a manufactured solution (``hpcml run`` with ``app = "poisson"``).

``-Laplacian(u) = f`` on the unit square or cube, 5-point (2-D) or 7-point
(3-D) finite differences, Dirichlet (boundary nodes eliminated) or periodic
per dimension.  ``f`` is computed from the manufactured solution of
:func:`hpcml.linalg.manufactured` (``u = prod_d exp(x_d) sin(k_d pi x_d)``, or
``exp(sin(2 pi k_d x_d))`` on periodic dimensions), so the run reports the
discretisation error of the converged solution: it falls by about 4x each time
the grid spacing halves.  The operator is matrix-free
(:class:`~hpcml.linalg.PoissonOperator`, halo exchange overlapped with the
interior update); the solver is CG, pipelined CG or Jacobi from
:mod:`hpcml.linalg`.  Output (HDF5 through :mod:`hpcml.io`): the residual
history as the scalar series ``residual`` (step = iteration), and the fields
``u`` (solution) and ``error`` (``u - u_exact``).

A stop signal (``SIGTERM``/``SIGUSR1``) is seen within about a second: the solve
stops at an iteration all ranks agree on, the output is written and the iterate
``x`` is checkpointed.  ``run.restart`` continues from it: a Jacobi restart is
exact; CG restarts its Krylov space from ``x`` (as PETSc's KSP does with an initial
guess), so the continued run reaches the same solution to ``solver.rtol`` with a
few more iterations in total.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.apps import app_comm, check_grid, grid_decomp, restart
from hpcml.config import ConfigError, check_choice, check_output_path, dumps
from hpcml.io import Output, checkpoint
from hpcml.linalg import PoissonOperator, cg, cg_pipelined, jacobi, manufactured
from hpcml.runtime import StopPoll
from hpcml.settings import CHOICES

__all__ = ["SOLUTION_KEYS", "run", "validate_config"]

log = logging.getLogger("hpcml.apps.poisson")

#: Config values that determine the solution (a checkpoint written with others is refused).
#: The solver, its tolerance and preconditioner may change: a resumed solve starts from the iterate.
SOLUTION_KEYS = ("grid.shape", "grid.periodic", "problem.modes")

METHODS = ("cg", "cg_pipelined", "jacobi")
PRECONDITIONERS = ("none", "jacobi")


def validate_config(cfg: dict[str, Any], ranks: int | None = None) -> None:
    """Check every poisson option (names in the message); no MPI, runs before the first collective."""
    g, p, s = cfg["grid"], cfg["problem"], cfg["solver"]
    nd = len(g["shape"])
    if nd not in (2, 3) or any((not isinstance(n, int)) or n < 1 for n in g["shape"]):
        raise ConfigError(f"grid.shape must be two or three positive integers, got {g['shape']!r}")
    for section, key in (("grid", "periodic"), ("grid", "dims"), ("problem", "modes")):
        value = cfg[section][key]
        if len(value) != nd:
            raise ConfigError(f"{section}.{key} must have {nd} entries (one per grid dimension), got {value!r}")
    if any(not isinstance(v, bool) for v in g["periodic"]):
        raise ConfigError(f"grid.periodic must be booleans, got {g['periodic']!r}")
    if any((not isinstance(k, int)) or k < 1 for k in p["modes"]):
        raise ConfigError(f"problem.modes must be positive integers, got {p['modes']!r}")
    check_choice(cfg, "solver.method", METHODS)
    check_choice(cfg, "solver.preconditioner", PRECONDITIONERS)
    check_choice(cfg, "run.halo_method", CHOICES["halo_method"])
    check_output_path(cfg, "output.path")
    if not 0 < s["rtol"] < 1:
        raise ConfigError(f"solver.rtol must be in (0, 1), got {s['rtol']}")
    if s["maxiter"] < 0 or s["check_every"] < 1:
        raise ConfigError("solver.maxiter must be >= 0 and solver.check_every >= 1")
    if cfg["checkpoint"]["every"] < 0 or cfg["checkpoint"]["keep"] < 0:
        raise ConfigError("checkpoint.every and checkpoint.keep must be >= 0")
    check_grid(g, ranks, halo=1)


def run(config: dict[str, Any], comm: MPI.Comm | None = None) -> dict[str, Any]:
    """Solve the configured Poisson problem; return a summary dict (the same on every rank).

    The output file and the checkpoint folder are locked for the run.
    """
    comm = app_comm(comm)
    validate_config(config, comm.Get_size())
    o = config["output"]
    ckdir = restart.checkpoint_directory(config["checkpoint"]["dir"], o["path"])
    return restart.run_locked(comm, o["path"], ckdir, lambda: _run(config, comm))


def _run(config: dict[str, Any], comm: MPI.Comm) -> dict[str, Any]:
    g, p, s, o, ck = config["grid"], config["problem"], config["solver"], config["output"], config["checkpoint"]
    shape = tuple(g["shape"])
    decomp = grid_decomp(g, comm, halo=1)
    op = PoissonOperator(decomp, halo_method=config["run"]["halo_method"])
    exact, f = manufactured(op, p["modes"])
    rank0 = comm.Get_rank() == 0
    ckdir = restart.checkpoint_directory(ck["dir"], o["path"])
    plan = restart.plan(config, ckdir, SOLUTION_KEYS, comm, "poisson")
    x0, start = None, 0
    # The residual series so far, {iteration: norm}, carried in every checkpoint: a job
    # killed after a checkpoint (before its output was written) resumes with it whole.
    history: dict[int, float] | None = {}
    if plan.resume:
        state = checkpoint.load(ckdir, {"x": decomp}, expect=plan.record)
        x0, start = state["x"], int(state.step)
        saved = state.get("residuals")
        history = None if saved is None else dict(zip(saved["iteration"].tolist(), saved["norm"].tolist()))
        if rank0:
            log.info("poisson: continuing from the iterate of iteration %d in %s", start, state.path)

    def save(k: int, x: Any) -> None:
        if ckdir is not None:
            state: dict[str, Any] = {"x": x}
            if history is not None:
                if 0 not in history:  # a fresh solve's ||b - A 0|| before its solver reported it
                    history[0] = f.norm()
                its = sorted(i for i in history if i <= start + k)
                state["residuals"] = {
                    "iteration": np.array(its, dtype=np.int64),
                    "norm": np.array([history[i] for i in its]),
                }
            checkpoint.save(
                ckdir, state, start + k, comm=comm, keep=ck["keep"], config=dumps(config), solution=plan.record
            )

    stop = StopPoll(comm)  # agreed by all ranks within about a second, whatever the iteration time
    stopped = {"at": None}

    def every(k: int, rnorm: float, x: Any) -> bool:
        if history is not None and k > 0:
            history[start + k] = rnorm  # the solver's own value (info.residuals[k] after the solve)
        if ck["every"] and k > 0 and k % ck["every"] == 0:
            save(k, x)
        if stop():
            stopped["at"] = start + k
            if rank0:
                log.info(
                    "poisson: stop signal received at iteration %d: writing the output and a checkpoint", start + k
                )
            return True  # the solver returns with reason "callback"; the final save below checkpoints x
        return False

    if rank0:
        log.info(
            "poisson: grid %s (%s) on %d ranks (dims %s), %s + %s preconditioner, rtol %g",
            shape,
            ", ".join("periodic" if q else "dirichlet" for q in decomp.periodic),
            comm.Get_size(),
            decomp.dims,
            s["method"],
            s["preconditioner"],
            s["rtol"],
        )
    maxiter = s["maxiter"] or None
    if s["method"] == "jacobi":
        x, info = jacobi(
            op, f, x0=x0, rtol=s["rtol"], maxiter=maxiter or 100_000, check_every=s["check_every"], callback=every
        )
    else:
        solve = cg if s["method"] == "cg" else cg_pipelined
        x, info = solve(op, f, x0=x0, rtol=s["rtol"], maxiter=maxiter, M=s["preconditioner"], callback=every)
    if history is not None:  # the solver's complete record replaces the callbacks' (and ||b|| of iteration 0)
        for it, r in zip(info.residual_iterations, info.residuals):
            if not (start and it == 0):
                history[start + int(it)] = float(r)
    save(info.iterations, x)
    err = x.copy()
    err.interior[...] -= exact.interior
    if all(decomp.periodic):  # the solution is unique only up to a constant
        err.interior[...] -= err.sum() / math.prod(shape)
    local_max = float(np.abs(err.interior).max()) if err.interior.size else 0.0
    err_max = comm.allreduce(local_max, op=MPI.MAX)
    err_rms = err.norm() / math.sqrt(math.prod(shape))
    exchange = comm.allreduce(info.exchange_seconds, op=MPI.MAX)
    summary = {
        "app": "poisson",
        "ranks": comm.Get_size(),
        "dims": list(decomp.dims),
        "shape": list(shape),
        "method": s["method"],
        "preconditioner": s["preconditioner"],
        "iterations": start + info.iterations,
        "restarted_from": start,
        "stopped_early": stopped["at"] is not None,
        "converged": info.converged,
        "reason": info.reason,
        "relative_residual": info.relative_residual,
        "true_relative_residual": info.true_residual / info.bnorm if info.bnorm else 0.0,
        "error_max": err_max,
        "error_rms": err_rms,
        "h": max(op.spacing),
        "seconds": info.seconds,
        "ms_per_iteration": 1e3 * info.seconds / max(info.iterations, 1),
        "exchange_share": exchange / info.seconds if info.seconds > 0 else 0.0,
        "replacements": info.replacements,
        "restarts": info.restarts,
    }
    if rank0:
        log.info(
            "poisson: %s after %d iterations (%s), |r|/|b| = %.3e, max error %.3e, %.3f ms/iteration",
            "converged" if info.converged else "NOT converged",
            info.iterations,
            info.reason,
            summary["relative_residual"],
            err_max,
            summary["ms_per_iteration"],
        )
    if o["path"]:
        _write(o, config, comm, info, x, err, start, op, history)
        summary["output"] = o["path"]
    decomp.free()
    return summary


def _write(
    o: dict[str, Any],
    config: dict[str, Any],
    comm: MPI.Comm,
    info: Any,
    x: Any,
    err: Any,
    start: int,
    op: Any,
    history: dict[int, float] | None,
) -> None:
    """Residual history (series axis ``iteration``) and, optionally, the static fields ``u`` and ``error``.

    ``history`` is the whole series, the checkpoints' part included, so a continued
    solve (``start`` > 0) rewrites it whole: the residuals up to its checkpoint's
    iteration are there even when the job that wrote the checkpoint was killed
    before writing its output.  With ``None`` (a checkpoint of an older hpcml,
    without the series) the file's residuals up to the checkpoint's iteration are
    kept and the continued solve's appended.  The fields are replaced.
    """
    if history is not None:
        mode, keep = ("a", 0) if start else ("w", None)
        series = sorted(history.items())
    else:
        mode, keep = "a", start + 1
        series = [(start + int(it), float(r)) for it, r in zip(info.residual_iterations, info.residuals) if it]
    title = f"hpcml poisson: -laplacian(u) = f on the unit {'square' if x.decomp.ndim == 2 else 'cube'}"
    with Output(o["path"], comm, config=dumps(config), mode=mode, restart_step=keep, flush_every=0, title=title) as out:
        for it, r in series:
            out.write_scalar("residual", r, step=it, axis="iteration", long_name="residual norm ||b - A x||")
        if o["fields"]:
            names = ("y", "x") if x.decomp.ndim == 2 else ("z", "y", "x")
            coords = {}
            for name, n, h, per in zip(names, x.shape, op.spacing, x.decomp.periodic):
                # the unknowns' positions: x_i = i h (periodic) or (i + 1) h (Dirichlet nodes eliminated)
                coords[name] = ((np.arange(n) + (0 if per else 1)) * h, {"units": "1", "long_name": f"{name} (node)"})
            out.write("u", x, units="1", long_name="solution", coords=coords)
            out.write("error", err, units="1", long_name="error u - u_exact")
