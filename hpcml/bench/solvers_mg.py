"""The multigrid case of ``hpcml bench solvers``: Poisson solved to rtol 1e-8, whole-solve times.

Problem: the 2-D 5-point Poisson matrix of ``shared/peers.md`` (``--n`` squared
unknowns, 4 on the diagonal, -1 off it, Dirichlet boundary eliminated),
``b = 1``, ``x0 = 0``, CG to rtol 1e-8 on the unpreconditioned residual.

hpcml rows (matrix-free :class:`~hpcml.linalg.PoissonOperator`): CG+Jacobi,
CG preconditioned by one :class:`~hpcml.linalg.Multigrid` V(2,2)-cycle
(Jacobi and Chebyshev smoothers), and multigrid alone; the time is the
whole solve, multigrid setup included (``setup ms`` shows it).  PETSc rows
(Debian's petsc4py, a separate Open MPI job of ``/usr/bin/python3``): KSPCG
with ``-pc_type gamg`` on the same MPIAIJ matrix, and with ``-pc_type mg``
(Galerkin coarse operators, PETSc's default Chebyshev/Jacobi smoothing) on a
DMDA, which only coarsens sizes ``2^k m + 1``: that row solves the
``(n+1)^2`` problem, 0.1% larger.  ``--mg-sizes`` adds MG-CG iteration counts
from 256^2 up (mesh independence).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

PETSC_MG_SCRIPT = r"""
import json, sys, time
import numpy as np
import petsc4py
petsc4py.init(sys.argv[:1])
from petsc4py import PETSc
n, kind = int(sys.argv[1]), sys.argv[2]
comm = PETSc.COMM_WORLD
mpi = comm.tompi4py()
size = comm.getSize()
if kind == "mg":
    # a DMDA split along the slow index only: its ordering is the natural one
    da = PETSc.DMDA().create([n, n], dof=1, stencil_width=1, proc_sizes=(1, size), comm=comm)
    A = da.createMatrix()
else:
    A = PETSc.Mat().createAIJ([n * n, n * n], nnz=(5, 2), comm=comm)
r0, r1 = A.getOwnershipRange()
rows = np.arange(r0, r1)
i, j = np.divmod(rows, n)
cols = [rows]
vals = [np.full(rows.size, 4.0)]
for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
    keep = (i + di >= 0) & (i + di < n) & (j + dj >= 0) & (j + dj < n)
    cols.append(np.where(keep, rows + di * n + dj, -1))
    vals.append(np.where(keep, -1.0, 0.0))
C, V = np.stack(cols, 1), np.stack(vals, 1)
order = np.argsort(np.where(C < 0, np.iinfo(np.int64).max, C), axis=1)
C, V = np.take_along_axis(C, order, 1), np.take_along_axis(V, order, 1)
keep = C >= 0
indptr = np.concatenate(([0], np.cumsum(keep.sum(1)))).astype(PETSc.IntType)
A.setValuesCSR(indptr, C[keep].astype(PETSc.IntType), V[keep])
A.assemblyBegin(); A.assemblyEnd()
x, b = A.createVecs()
b.set(1.0)
opts = PETSc.Options()
ksp = PETSc.KSP().create(comm)
ksp.setOperators(A)
ksp.setType("cg")
ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
ksp.setTolerances(rtol=1e-8, atol=0.0, max_it=1000)
pc = ksp.getPC()
if kind == "mg":
    levels = 1
    while (n - 1) % 2 ** levels == 0 and (n - 1) // 2 ** levels >= 16:
        levels += 1
    ksp.setDM(da)
    ksp.setDMActive(False)
    opts["pc_mg_levels"] = levels
    opts["pc_mg_galerkin"] = "both"
    pc.setType("mg")
else:
    pc.setType("gamg")
ksp.setFromOptions()
mpi.Barrier(); t0 = time.perf_counter()
ksp.setUp()
setup = mpi.allreduce(time.perf_counter() - t0, op=max)
mpi.Barrier(); t0 = time.perf_counter()
ksp.solve(b, x)
solve = mpi.allreduce(time.perf_counter() - t0, op=max)
r = b.duplicate(); A.mult(x, r); r.aypx(-1.0, b)
out = {"n": n, "kind": kind, "its": ksp.getIterationNumber(), "setup_s": setup, "solve_s": solve,
       "rel": r.norm() / b.norm(), "reason": int(ksp.getConvergedReason())}
if comm.getRank() == 0:
    print("PETSC_RESULT " + json.dumps(out), flush=True)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the multigrid case."""
    parser.add_argument(
        "--mg-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also report MG-CG iteration counts on these n x n grids (e.g. 256 512 1024 2048 4096)",
    )
    parser.add_argument("--no-cg-reference", action="store_true", help="skip the (slow) CG+Jacobi reference solve")


def _rhs_ones(op: Any) -> Any:
    return op.create_vector(lambda i, j: np.ones(np.broadcast_shapes(i.shape, j.shape)))


def mg_rows(comm: MPI.Comm, args: argparse.Namespace) -> list[dict]:
    """Hpcml's rows on the ranks of ``comm``: CG+Jacobi, MG-CG (two smoothers), multigrid alone."""
    from hpcml import CartDecomp
    from hpcml.linalg import Multigrid, PoissonOperator, cg

    n = args.n
    case = f"Poisson {n}^2 to rtol 1e-8"
    decomp = CartDecomp((n, n), comm)
    op = PoissonOperator(decomp, spacing=1.0)
    b = _rhs_ones(op)
    rows = []

    def add(impl: str, info: Any, seconds: float, setup: float = 0.0) -> None:
        rows.append(
            {
                "case": case,
                "impl": impl,
                "ranks": comm.Get_size(),
                "iterations": info.iterations,
                "ms": 1e3 * seconds,
                "ms/iter": 1e3 * (seconds - setup) / max(info.iterations, 1),
                "setup ms": 1e3 * setup,
                "true_rel_residual": info.true_residual / info.bnorm,
                "converged": bool(info.converged),
            }
        )

    for smoother in ("jacobi", "chebyshev"):
        cg(op, b, rtol=1e-8, M=Multigrid(op, smoother=smoother), maxiter=2)  # compile once, untimed
        best = None
        for _ in range(max(1, args.repeat)):
            comm.Barrier()
            t0 = time.perf_counter()
            mg = Multigrid(op, smoother=smoother)
            setup = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            _, info = cg(op, b, rtol=1e-8, M=mg)
            total = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            if best is None or total < best[1]:
                best = (info, total, setup, mg)
        info, total, setup, mg = best
        add(f"hpcml MG-CG, V(2,2) {smoother}", info, total, setup)
        if smoother == "jacobi":
            comm.Barrier()
            t0 = time.perf_counter()
            _, alone = mg.solve(b, rtol=1e-8)
            add("hpcml multigrid alone, V(2,2) jacobi", alone, comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
            levels = len(mg.hierarchy)
    if not args.no_cg_reference:
        cg(op, b, rtol=1e-300, maxiter=2, M="jacobi")
        comm.Barrier()
        t0 = time.perf_counter()
        _, info = cg(op, b, rtol=1e-8, M="jacobi")
        add("hpcml CG+Jacobi (matrix-free)", info, comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    for r in rows:
        r["levels"] = levels
    for size in args.mg_sizes:
        d = CartDecomp((size, size), comm)
        o = PoissonOperator(d, spacing=1.0)
        comm.Barrier()
        t0 = time.perf_counter()
        _, info = cg(o, _rhs_ones(o), rtol=1e-8, M=Multigrid(o))
        seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        rows.append(
            {
                "case": f"MG-CG mesh independence {size}^2",
                "impl": "hpcml MG-CG, V(2,2) jacobi",
                "ranks": comm.Get_size(),
                "iterations": info.iterations,
                "ms": 1e3 * seconds,
                "ms/iter": 1e3 * seconds / max(info.iterations, 1),
                "true_rel_residual": info.true_residual / info.bnorm,
            }
        )
        d.free()
    decomp.free()
    return rows


def petsc_mg_rows(args: argparse.Namespace, ranks: int, env: dict[str, str]) -> tuple[list[dict], list[str]]:
    """PETSc's KSPCG with GAMG and with geometric MG on ``ranks`` Open MPI processes."""
    rows, errors = [], []
    case = f"Poisson {args.n}^2 to rtol 1e-8"
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "petsc_mg.py"
        script.write_text(PETSC_MG_SCRIPT, encoding="utf-8")
        for kind, n, impl in (
            ("gamg", args.n, "PETSc CG + -pc_type gamg"),
            ("mg", args.n + 1, f"PETSc CG + -pc_type mg (DMDA {args.n + 1}^2, Galerkin)"),
        ):
            cmd = ["mpiexec.openmpi", "-n", str(ranks), "/usr/bin/python3", str(script), str(n), kind]
            try:
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"PETSc {kind} on {ranks} ranks failed to run: {exc}")
                continue
            line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PETSC_RESULT ")), None)
            if out.returncode != 0 or line is None:
                errors.append(f"PETSc {kind} on {ranks} ranks failed (exit {out.returncode}): {out.stderr[-300:]}")
                continue
            res = json.loads(line[len("PETSC_RESULT ") :])
            total = res["setup_s"] + res["solve_s"]
            rows.append(
                {
                    "case": case,
                    "impl": impl,
                    "ranks": ranks,
                    "iterations": res["its"],
                    "ms": 1e3 * total,
                    "ms/iter": 1e3 * res["solve_s"] / max(res["its"], 1),
                    "setup ms": 1e3 * res["setup_s"],
                    "true_rel_residual": res["rel"],
                    "converged": res["reason"] > 0,
                }
            )
    return rows, errors


def compare(rows: list[dict]) -> None:
    """``vs PETSc``: whole-solve time over PETSc GAMG's on the same ranks; ``speedup vs CG+Jacobi``."""
    gamg = {r["ranks"]: r for r in rows if r["impl"].startswith("PETSc CG + -pc_type gamg")}
    ref = {r["ranks"]: r for r in rows if r["impl"] == "hpcml CG+Jacobi (matrix-free)"}
    for r in rows:
        if not r["case"].startswith("Poisson"):
            continue
        if r["impl"].startswith("hpcml") and (p := gamg.get(r["ranks"])) is not None:
            r["vs PETSc"] = r["ms"] / p["ms"]
        if (q := ref.get(r["ranks"])) is not None and r is not q:
            r["speedup vs CG+Jacobi"] = q["ms"] / r["ms"]


NOTES = [
    "Poisson rows: whole solves to rtol 1e-8 (b = 1, x0 = 0, unpreconditioned residual), multigrid setup "
    "included (`setup ms`); `ms/iter` excludes the setup. `vs PETSc` there: the whole-solve time over PETSc "
    "GAMG's on the same ranks (< 1 is faster); `speedup vs CG+Jacobi`: hpcml's matrix-free CG+Jacobi time over "
    "the row's. Targets: MG-CG <= 15 iterations and >= 20x faster than CG+Jacobi on 1 and 2 ranks. The PETSc "
    "-pc_type mg row solves the (n+1)^2 problem (a DMDA coarsens only 2^k m + 1 points).",
]
