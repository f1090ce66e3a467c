"""The restart and output-path contracts of every app (DESIGN.md "Contracts every app keeps", docs/running.md).

One sequence per app (heat, poisson, train, flux), each run a real ``mpiexec ... hpcml
run`` job, switching rank counts between runs:

1. ``run.restart = "auto"`` in an empty folder starts fresh and says so (2 ranks);
   the output opens in xarray with the app's named dimensions, coordinates and units;
2. a second job on the same output while the path is locked is refused, naming the
   holder, and changes nothing (3 ranks);
3. a checkpoint of another problem (one solution key changed) is refused naming the
   key, in ``"auto"`` mode too, and changes nothing (3 ranks);
4. resuming from an older checkpoint (``run.restart = true``, 3 ranks) appends to the
   output: the series equal the uninterrupted run's;
5. ``run.restart = true`` without a checkpoint is an error naming the folder.

Plus: training never resumes another run's checkpoint (its folder derives from the
output path), and one from a different model is refused; and an app's ``run()`` called
from a user's script sizes the thread pool as ``hpcml run`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcml.io.lock import PathLock
from hpcml.testing import MPIEXEC

HPCML = [sys.executable, "-m", "hpcml.cli", "run", "--json"]

APPS = {
    "heat": {
        "sets": ["app=heat", "grid.shape=[24,20]", "heat.steps=20", "output.every=5", "checkpoint.every=10"],
        "output": "heat.h5",
        "checkpoints": "heat.ckpt",
        "change": "heat.alpha=2.0",
        "dims": {"u": ("time", "y", "x"), "norm": ("time",)},
        "units": {"time": "1", "u": "1", "x": "1"},
        "series": ("u", "norm"),
    },
    "poisson": {
        "sets": ["app=poisson", "grid.shape=[24,20]", "checkpoint.every=10"],
        "output": "poisson.h5",
        "checkpoints": "poisson.ckpt",
        "change": "problem.modes=[2,1]",
        "dims": {"u": ("y", "x"), "error": ("y", "x"), "residual": ("iteration",)},
        "units": {"u": "1"},
        "series": ("residual",),
    },
    "train": {
        "sets": [
            "app=train",
            "grid.shape=[16,12]",
            "data.samples=8",
            "data.steps_ahead=3",
            "data.path=pairs.h5",
            "model.channels=[4]",
            "train.epochs=2",
            "train.batch_size=4",
        ],
        "output": "train.h5",
        "checkpoints": "train.ckpt",
        "change": "model.channels=[5]",
        "dims": {"loss": ("iteration",)},
        "units": {},
        "series": ("loss",),
    },
    "flux": {
        "sets": [
            "app=flux",
            "grid.res_nt=19",
            "grid.res_np=37",
            "time.end=24.0",
            "output.map_cadence=6.0",
            "output.checkpoint_cadence=12.0",
            "output.directory=fl",
        ],
        "output": "fl/flux_maps.h5",
        "checkpoints": "fl/checkpoints",
        "change": "diffusion.coef=[300.0]",
        "dims": {"br": ("time", "realization", "lat", "lon"), "ax_dipole": ("time", "realization")},
        "units": {"time": "hours", "lat": "degrees_north", "lon": "degrees_east", "br": "G"},
        "series": ("br", "ax_dipole", "butterfly"),
    },
}


def _job(n: int, sets: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [MPIEXEC, "-n", str(n), *HPCML]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def _ok(res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _series(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        out = {name: f[name][...] for name in names}
        axis = f[names[0]].attrs["hpcml_series_axis"]
        out["@steps"] = f["step"][...] if axis == "time" else f[axis][...]
    return out


@pytest.mark.parametrize("app", list(APPS))
def test_restart_and_output_path_contracts(app, tmp_path):
    import xarray as xr

    spec = APPS[app]
    sets = spec["sets"]
    output = tmp_path / spec["output"]
    ckdir = tmp_path / spec["checkpoints"]

    # 1. "auto" with nothing to resume: a fresh start that says so; a labelled output.
    res = _job(2, [*sets, "run.restart='auto'"], tmp_path)
    first = _ok(res)
    assert 'run.restart = "auto": no checkpoint in' in res.stderr and "starting fresh" in res.stderr
    with xr.open_dataset(output, engine="h5netcdf") as ds:
        for name, dims in spec["dims"].items():
            assert ds[name].dims == dims, (name, ds[name].dims)
        for name, units in spec["units"].items():
            assert ds[name].attrs.get("units") == units, (name, ds[name].attrs)
        assert not any(str(d).startswith("phony") for d in ds.dims) and ds.attrs["Conventions"] == "CF-1.8"
        for dim in ds.dims:
            assert dim in ds.coords, f"dimension {dim} has no coordinate variable"
    reference = _series(output, spec["series"])
    before = _digest(output)

    # 2. The output path is in use (this test process holds the app's lock): refused, nothing changed.
    held = PathLock(None, folders=[tmp_path / "fl"]) if app == "flux" else PathLock(None, files=[output])
    with held:
        res = _job(3, [*sets, "run.restart='auto'"], tmp_path)
    assert res.returncode != 0 and "is in use by another running job" in res.stderr, res.stderr[-2000:]
    assert _digest(output) == before

    # 3. A checkpoint of another problem: refused naming the key (also in "auto" mode), nothing changed.
    res = _job(3, [*sets, spec["change"], "run.restart='auto'"], tmp_path)
    key = spec["change"].split("=")[0]
    assert res.returncode != 0 and f"{key} = " in res.stderr and "there" in res.stderr, res.stderr[-2000:]
    assert _digest(output) == before

    # 4. Resume from the older checkpoint on 3 ranks: the series equal the uninterrupted run's.
    newest = sorted(ckdir.glob("ckpt-*.h5"))
    assert len(newest) >= 2, newest
    newest[-1].unlink()
    again = _ok(_job(3, [*sets, "run.restart=true"], tmp_path))
    got = _series(output, spec["series"])
    if app == "poisson":  # CG restarts its Krylov space: same solution, its own iteration count
        kept = int(newest[-2].name[5:15])
        steps = got["@steps"]
        assert list(steps) == list(range(len(steps))) and steps[-1] == again["iterations"]
        np.testing.assert_array_equal(got["residual"][: kept + 1], reference["residual"][: kept + 1])
        assert again["converged"] and again["restarted_from"] == kept
    else:
        np.testing.assert_array_equal(got["@steps"], reference["@steps"])
        for name in spec["series"]:
            np.testing.assert_allclose(got[name], reference[name], rtol=1e-10, atol=0, err_msg=name)
    assert again["resumed"] if app == "train" else again["restarted_from"] > 0, again
    assert first["app"] == again["app"] == app

    # 5. "true" without a checkpoint: an error naming the folder; no output appears.
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _job(2, [*sets, "run.restart=true"], empty)
    assert res.returncode != 0 and "run.restart = true but" in res.stderr and "holds no checkpoint" in res.stderr
    assert not (empty / spec["output"]).exists()


def test_training_never_resumes_a_foreign_checkpoint(tmp_path):
    sets = list(APPS["train"]["sets"])
    _ok(_job(2, [*sets, "output.path=a.h5", "run.restart='auto'"], tmp_path))
    assert sorted(p.name for p in (tmp_path / "a.ckpt").glob("ckpt-*.h5"))
    # Another run with another output keeps its own checkpoints: nothing to resume.
    res = _job(3, [*sets, "output.path=b.h5", "run.restart='auto'"], tmp_path)
    second = _ok(res)
    assert not second["resumed"] and "no checkpoint in b.ckpt" in res.stderr
    with h5py.File(tmp_path / "b.h5") as f:
        assert list(f["iteration"][...]) == [1, 2, 3, 4] and np.isfinite(f["loss"][...]).all()
    # A checkpoint of another model copied into a run's folder: refused, naming the key.
    shutil.copytree(tmp_path / "a.ckpt", tmp_path / "c.ckpt")
    res = _job(3, [*sets, "model.channels=[5]", "output.path=c.h5", "run.restart='auto'"], tmp_path)
    assert res.returncode != 0 and "model.channels = [4] there, [5] now" in res.stderr, res.stderr[-2000:]


_LIBRARY_RUN = """
import importlib, json, sys
import numba
from mpi4py import MPI
from hpcml.apps import APPS
from hpcml.config import load_config
cfg = load_config(None, sys.argv[1:])
importlib.import_module(APPS[cfg["app"]]).run(cfg)
threads = MPI.COMM_WORLD.gather(numba.get_num_threads())
if MPI.COMM_WORLD.rank == 0:
    print(json.dumps(threads))
"""


@pytest.mark.parametrize("app", list(APPS))
def test_library_run_sizes_the_thread_pool_like_hpcml_run(app, tmp_path):
    """An app's ``run()`` called from a user's script under ``mpiexec``, without ``hpcml.init()``
    or ``NUMBA_NUM_THREADS``, gives each rank cores per node / ranks per node threads, as
    ``hpcml run`` does (Numba's default, every core on every rank, oversubscribes the node)."""
    script = tmp_path / "user_script.py"
    script.write_text(_LIBRARY_RUN)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    cmd = [MPIEXEC, "-n", "2", sys.executable, str(script), *APPS[app]["sets"]]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    want = max(1, (os.cpu_count() or 1) // 2)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [want, want]
