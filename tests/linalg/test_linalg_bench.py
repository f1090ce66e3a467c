"""`hpcml bench solvers`: a small end-to-end run, and the PETSc peer when Debian's petsc4py is there."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcml.bench import solvers
from hpcml.testing import MPIEXEC


def test_bench_solvers_small(tmp_path):
    hpcml = str(Path(sys.executable).parent / "hpcml")
    cmd = [MPIEXEC, "-n", "2", hpcml, "bench", "solvers", "--n", "48", "--iters", "5", "--repeat", "1"]
    cmd += ["--spmv-repeat", "3", "--summa-n", "40", "--summa-repeat", "1", "--no-petsc", "--out", str(tmp_path)]
    env = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**_environ(), **env}, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "solvers.json").read_text())
    impls = {(r["impl"], r["ranks"]) for r in record["rows"]}
    for impl in ("hpcml DistCSR cg", "hpcml matrix-free cg_pipelined", "hpcml DistCSR.matvec"):
        assert {(impl, 1), (impl, 2)} <= impls
    assert {("scipy cg", 1), ("scipy CSR A @ x", 1), ("numpy.matmul", 1), ("hpcml summa grid 2x1", 2)} <= impls
    cg_rows = [r for r in record["rows"] if r["impl"].startswith("hpcml") and r["case"].startswith("CG+Jacobi")]
    assert all(r["iterations"] == 5 and r["ms/iter"] > 0 for r in cg_rows)
    peered = [r for r in record["rows"] if r["impl"].startswith("hpcml") and not r["case"].startswith("Poisson")]
    assert all("vs SciPy/NumPy" in r for r in peered if r["ranks"] == 1)
    assert "| case |" in (tmp_path / "solvers.md").read_text()
    mg = [r for r in record["rows"] if r["case"] == "Poisson 48^2 to rtol 1e-8"]
    assert {(r["impl"], r["ranks"]) for r in mg} >= {
        ("hpcml MG-CG, V(2,2) jacobi", 2),
        ("hpcml CG+Jacobi (matrix-free)", 1),
        ("hpcml multigrid alone, V(2,2) jacobi", 1),
    }
    assert all(r["converged"] and r["true_rel_residual"] < 1e-8 for r in mg)
    assert all(r["speedup vs CG+Jacobi"] > 0 for r in mg if r["impl"].startswith("hpcml MG"))


@pytest.mark.skipif(solvers.petsc_python_path() is None, reason="Debian python3-petsc4py-real not installed")
def test_petsc_multigrid_peers_converge():
    from hpcml.bench import solvers_mg

    args = argparse.Namespace(n=32)
    rows, errors = solvers_mg.petsc_mg_rows(args, 2, solvers.petsc_env(1, solvers.petsc_python_path()))
    assert not errors, errors
    assert {r["impl"].split(" (")[0] for r in rows} == {"PETSc CG + -pc_type gamg", "PETSc CG + -pc_type mg"}
    assert all(r["converged"] and r["true_rel_residual"] < 1e-8 and r["iterations"] < 30 for r in rows)


@pytest.mark.skipif(solvers.petsc_python_path() is None, reason="Debian python3-petsc4py-real not installed")
def test_petsc_peer_runs_and_matches_iteration_count():
    args = argparse.Namespace(n=24, iters=4, full=True, spmv_repeat=2, repeat=1, threads=1, cases=["cg", "spmv"])
    rows, err = solvers._petsc_rows(args, 2, solvers.petsc_python_path())
    assert err is None, err
    cg_row = next(r for r in rows if r["impl"] == "PETSc KSPCG")
    # the same problem in SciPy: b = 1, Jacobi, rtol 1e-8 on the unpreconditioned residual
    import numpy as np
    import scipy.sparse as sps
    import scipy.sparse.linalg as spla

    t = sps.diags_array([np.full(23, -1.0), np.full(24, 2.0), np.full(23, -1.0)], offsets=[-1, 0, 1])
    a = sps.csr_array(sps.kron(sps.identity(24), t) + sps.kron(t, sps.identity(24)))
    count = [0]
    spla.cg(
        a,
        np.ones(576),
        rtol=1e-8,
        M=sps.diags_array(1 / a.diagonal()),
        callback=lambda _: count.__setitem__(0, count[0] + 1),
    )
    assert abs(cg_row["iterations"] - count[0]) <= 1 and cg_row["true_rel_residual"] < 1e-8
    assert any(r["impl"] == "PETSc MatMult" and r["ms"] > 0 for r in rows)


def _environ():
    import os

    return dict(os.environ)
