"""Nothing lost: killed writers, concurrent jobs on one path (separate mpiexec jobs, both write paths).

A job killed in the middle of a snapshot (a rank dying after its block reached the
data file, or rank 0 dying with the new main file written but not renamed) leaves
the last complete state readable by h5py and xarray, and a restarted job appends
to it.  A second job on a path in use is refused before it touches anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from io_helpers import WORKER, check_worker, drivers, global_value, mpiexec, run_crashing_worker, run_worker

SHAPE = "7x5"


def _steps_and_values(path):
    with h5py.File(path, "r") as f:
        steps = [int(s) for s in f["step"][...]]
        for i, s in enumerate(steps):
            np.testing.assert_array_equal(f["u"][i], global_value((7, 5), s))
        return steps, list(f["norm"][...])


@pytest.mark.parametrize("driver", drivers())
@pytest.mark.parametrize(("rank", "where"), [(1, "data"), (0, "main")])
def test_killed_mid_write_leaves_the_last_complete_state(tmp_path, driver, rank, where):
    import xarray as xr

    path = tmp_path / "run.h5"
    status = run_crashing_worker(3, "crash", path, driver, SHAPE, 3, "--rank", rank, "--where", where)
    assert status != 0, "the writer was supposed to be killed"
    steps, norms = _steps_and_values(path)
    assert steps == [0, 1, 2] and norms == [0.0, 1.0, 2.0]
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.u.dims == ("time", "y", "x") and list(ds.step.values) == [0, 1, 2]
        np.testing.assert_array_equal(ds.u.isel(time=2).values, global_value((7, 5), 2))
    # The killed job's lock died with it: a restarted job appends (on another rank count).
    check_worker(2, "write", path, driver, SHAPE, 2, "--first", 3)
    check_worker(4, "check", path, SHAPE, "0,1,2,3,4")
    assert not list(tmp_path.glob(".run.h5.tmp-*")), "the dead writer's temporary main file was left behind"


@pytest.mark.parametrize("driver", drivers())
def test_second_job_on_a_path_in_use_is_refused_and_changes_nothing(tmp_path, driver):
    path = tmp_path / "busy.h5"
    cmd = [mpiexec(), "-n", "2", sys.executable, str(WORKER), "write", str(path), driver, SHAPE, "40", "--sleep", "0.5"]
    env = dict(os.environ, NUMBA_NUM_THREADS="1", HPCML_PROGRESS="0")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (path.exists() and path.with_name("busy.h5.lock").exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.exists(), "the first job never wrote its output"
        second = run_worker(3, "write", path, driver, SHAPE, 2, "--mode", "w")  # would replace the output
        assert first.poll() is None, "the first job ended before the second started: nothing was tested"
        assert second.returncode != 0
        assert "busy.h5 is in use by another running job" in second.stderr and "pid" in second.stderr
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out + err
    steps, _ = _steps_and_values(path)
    assert steps == list(range(40))
    assert not path.with_name("busy.h5.lock").exists(), "a clean exit removes the lock file"


def test_folder_in_an_unwritable_directory_is_locked_inside(tmp_path, monkeypatch):
    # `hpcml run --hipft` in $HOME or /scratch/$USER writes into "."; its lock beside
    # the folder would land in a directory the user cannot write
    import os

    from hpcml.io import lock as lk

    work = tmp_path / "case"
    work.mkdir()
    real = os.access
    monkeypatch.setattr(lk.os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    assert lk.lock_file(work) == work / ".hpcml.lock"
    assert lk.lock_file(tmp_path / "case" / "out") == work / "out.lock"  # not a folder yet: beside it
    held = lk.hold(None, folders=[work])
    assert (work / ".hpcml.lock").is_file()
    held.release()
    assert not (work / ".hpcml.lock").exists()
    monkeypatch.setattr(lk.os, "access", real)
    assert lk.lock_file(work) == tmp_path / "case.lock"
