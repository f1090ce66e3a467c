"""Files written on N ranks read back on M ranks (separate mpiexec jobs), both write paths.

Also: appends across restarts on other rank counts, the virtual-dataset file
opened by plain h5py in a separate serial process from another directory,
consolidation, and checkpoint save/load/crash across rank counts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from io_helpers import check_worker, drivers, global_value, run_worker

SHAPE = "7x5"  # uneven splits on 2, 3 and 4 ranks
RANKS = (1, 2, 3, 4)


@pytest.mark.parametrize("driver", drivers())
def test_written_on_n_read_on_m(tmp_path, driver):
    files = []
    for n in RANKS:
        path = tmp_path / f"w{n}.h5"
        out = check_worker(n, "write", path, driver, SHAPE, 2, "--mode", "w")
        assert f"driver {driver}" in out
        files.append(str(path))
    for m in RANKS:
        check_worker(m, "check", ",".join(files), SHAPE, "0,1")


@pytest.mark.parametrize("driver", drivers())
def test_append_across_restarts_on_other_rank_counts(tmp_path, driver):
    path = tmp_path / "run.h5"
    check_worker(2, "write", path, driver, SHAPE, 2)  # steps 0, 1
    check_worker(3, "write", path, driver, SHAPE, 2, "--first", 2, "--dims", "1x3")  # 2, 3
    # A job that restarts from a checkpoint at step 3 drops the snapshot of step 3 first.
    check_worker(1, "write", path, driver, SHAPE, 2, "--first", 3, "--restart-step", 3)  # 3, 4
    check_worker(4, "check", path, SHAPE, "0,1,2,3,4")
    import h5py

    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["step"][:], [0, 1, 2, 3, 4])
        np.testing.assert_allclose(f["time"][:], 0.5 * np.arange(5))
        assert f["norm"].shape == (5,) and f.attrs["history"].count("\n") == 2


READ_ALONE = textwrap.dedent(
    """
    import sys, h5py, numpy as np
    from io_helpers import global_value
    path, shape = sys.argv[1], tuple(int(x) for x in sys.argv[2].split("x"))
    with h5py.File(path, "r") as f:
        u = f["u"]
        assert u.is_virtual == (sys.argv[3] == "virtual"), u.is_virtual
        for i, step in enumerate(f["step"][:]):
            np.testing.assert_array_equal(u[i], global_value(shape, int(step)))
    print("SERIAL-OK")
    """
)


def _read_alone(path, cwd, kind):
    from io_helpers import HERE

    proc = subprocess.run(
        [sys.executable, "-c", READ_ALONE, str(path), SHAPE, kind],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0 and "SERIAL-OK" in proc.stdout, proc.stdout + proc.stderr


def test_vds_file_opens_with_plain_h5py_elsewhere(tmp_path):
    run_dir, other = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir()
    other.mkdir()
    check_worker(3, "write", "out.h5", "vds", SHAPE, 3, cwd=run_dir)  # relative path, like a job script
    assert sorted(p.name for p in (run_dir / "out.d").iterdir()) == [f"rank-0000{r}.h5" for r in range(3)]
    _read_alone(run_dir / "out.h5", other, "virtual")  # absolute path, other cwd
    _read_alone("../run/out.h5", other, "virtual")  # relative path, other cwd
    moved = tmp_path / "moved"  # the pair moves together
    moved.mkdir()
    shutil.move(run_dir / "out.h5", moved / "out.h5")
    shutil.move(run_dir / "out.d", moved / "out.d")
    _read_alone(moved / "out.h5", tmp_path, "virtual")


def test_consolidate_then_append(tmp_path):
    path = tmp_path / "c.h5"
    check_worker(3, "write", path, "vds", SHAPE, 2, "--consolidate")
    assert not (tmp_path / "c.d").exists()
    _read_alone(path, tmp_path, "plain")
    check_worker(2, "write", path, "vds", SHAPE, 2, "--first", 2)  # consolidated data + new rank files
    _read_alone(path, tmp_path, "virtual")
    check_worker(4, "check", path, SHAPE, "0,1,2,3")


def test_missing_rank_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.h5"
    check_worker(2, "write", path, "vds", SHAPE, 1)
    (tmp_path / "m.d" / "rank-00001.h5").unlink()
    proc = run_worker(2, "check", path, SHAPE, "0")
    assert proc.returncode != 0
    assert "rank-00001.h5" in proc.stderr and "missing" in proc.stderr


def test_checkpoint_on_any_rank_count(tmp_path):
    ck = tmp_path / "ck"
    check_worker(3, "ckpt-save", ck, "9x6", 4, "--dims", "3x1")
    for m in (1, 2, 4):
        check_worker(m, "ckpt-load", ck, "9x6", 4)
    check_worker(4, "ckpt-save", ck, "9x6", 5)
    check_worker(3, "ckpt-load", ck, "9x6", 5)


def test_checkpoint_killed_before_rename_keeps_previous(tmp_path):
    ck = tmp_path / "ck"
    check_worker(2, "ckpt-save", ck, "9x6", 1)
    proc = run_worker(2, "ckpt-crash", ck, "9x6", 2)
    assert proc.returncode != 0, "the writer was supposed to be killed"
    assert (ck / ".ckpt-0000000002.h5.tmp").exists(), "temporary file should be fully written"
    assert not (ck / "ckpt-0000000002.h5").exists()
    check_worker(3, "ckpt-load", ck, "9x6", 1)  # the previous checkpoint still loads
    check_worker(2, "ckpt-save", ck, "9x6", 3)  # the next save clears the leftover
    assert not (ck / ".ckpt-0000000002.h5.tmp").exists()
    check_worker(1, "ckpt-load", ck, "9x6", 3)


def test_global_value_helper_matches_worker():
    g = global_value((2, 3), step=1)
    assert g[0, 0] == 1001 and g[1, 2] == 1006
