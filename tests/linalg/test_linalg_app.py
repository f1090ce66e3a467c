"""The poisson app (``hpcml run``), its output file, and the example script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcml import CartDecomp
from hpcml.config import ConfigError, load_config
from hpcml.testing import MPIEXEC, assert_all, run_mpi

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp, **overrides):
    items = [f"{k}={v}" for k, v in overrides.items()]
    return load_config(None, ["app=poisson", "grid.shape=[30, 22]", f"output.path={tmp}/p.h5", *items])


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["cg", "cg_pipelined", "jacobi"])
def test_app_runs_and_writes(comm, shared_tmp, method):
    from hpcml.apps import poisson
    from hpcml.io import read, read_scalar

    overrides = {"solver.method": f'"{method}"'}
    if method == "jacobi":
        overrides.update({"grid.shape": "[12, 10]", "solver.rtol": "1e-6", "solver.check_every": "20"})
    cfg = load_config(
        None, ["app=poisson", f"output.path={shared_tmp}/p.h5", *[f"{k}={v}" for k, v in overrides.items()]]
    )
    if method != "jacobi":
        cfg["grid"]["shape"] = [30, 22]
    s = poisson.run(cfg, comm)
    ok = s["converged"] and s["iterations"] > 1 and s["true_relative_residual"] < 2 * cfg["solver"]["rtol"]
    ok &= s["error_max"] < 0.05 and s == comm.bcast(s)
    # read back on any decomposition (here: the same ranks, the default process grid)
    d = CartDecomp(tuple(cfg["grid"]["shape"]), comm)
    u = read(f"{shared_tmp}/p.h5", "u", d)
    err = read(f"{shared_tmp}/p.h5", "error", d)
    ok &= u.shape == tuple(cfg["grid"]["shape"]) and err.max() - err.min() > 0
    ok &= max(abs(err.max()), abs(err.min())) == pytest.approx(s["error_max"])
    if comm.rank == 0:
        steps, _, res = read_scalar(f"{shared_tmp}/p.h5", "residual")
        ok &= steps[0] == 0 and steps[-1] == s["iterations"] and res[-1] / res[0] < cfg["solver"]["rtol"]
    assert_all(comm, ok, json.dumps(s, default=str))


def test_config_errors(tmp_path):
    from hpcml.apps import poisson

    bad = [
        {"grid.shape": "[8]"},
        {"grid.periodic": "[true]"},
        {"solver.method": '"gmres"'},
        {"solver.preconditioner": '"ilu"'},
        {"solver.rtol": "2.0"},
        {"problem.modes": "[0, 1]"},
    ]
    for item in bad:
        with pytest.raises(ConfigError):
            poisson.run(_config(tmp_path, **item))


def test_hpcml_run_cli_3d(tmp_path):
    """`hpcml run` with app = "poisson" on 2 ranks (3-D, mixed boundaries), summary as JSON."""
    env = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    hpcml = str(Path(sys.executable).parent / "hpcml")
    cmd = [
        MPIEXEC, "-n", "2", hpcml, "run", "--json", "--set", "app=poisson", "--set", "grid.shape=[12,10,9]",
        "--set", "grid.periodic=[true,false,true]", "--set", "grid.dims=[0,0,0]", "--set", "problem.modes=[1,1,1]",
        "--set", "output.path=", "--set", "solver.method=cg_pipelined",
    ]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path, env={**_env(), **env}, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout[out.stdout.index("{") :])
    assert summary["converged"] and summary["ranks"] == 2 and summary["shape"] == [12, 10, 9]


def test_example_script_second_order():
    out = run_mpi(2, [str(ROOT / "examples" / "poisson.py"), "--levels", "3", "--n0", "12"], timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    orders = [float(line.split()[-1]) for line in out.stdout.splitlines()[2:5] if len(line.split()) == 6]
    assert len(orders) == 2 and all(1.9 < o < 2.1 for o in orders), out.stdout
    assert "max |x_csr - x_free|" in out.stdout


def _env():
    import os

    return dict(os.environ)
