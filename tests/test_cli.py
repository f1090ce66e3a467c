"""Command-line conventions (``hpcml/cli.py``): login-node commands without MPI, streams, exit codes.

Every check runs the command in a fresh interpreter, as a user's shell would.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

MPIEXEC = str(Path(sys.executable).parent / "mpiexec")  # the venv's launcher, never a bare mpiexec

PY = sys.executable


def _py(code: str, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", code], check=False, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _hpcml(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "hpcml.cli", *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


NO_MPI = "import sys; assert 'mpi4py.MPI' not in sys.modules, sorted(m for m in sys.modules if 'mpi4py' in m)"


def test_import_hpcml_does_not_start_mpi():
    res = _py(f"import hpcml, hpcml.io, hpcml.apps, hpcml.config, hpcml.settings, hpcml.runtime; {NO_MPI}")
    assert res.returncode == 0, res.stderr
    # the public names still work, loading their modules on first use
    res = _py("import hpcml; print(hpcml.CartDecomp.__name__, hpcml.__version__)")
    assert res.returncode == 0 and res.stdout.startswith("CartDecomp"), res.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["run", "--help"],
        ["bench", "--help"],
        ["config", "show", "heat"],
        ["config", "show", "poisson", "--set", "solver.rtol=1e-6"],
        ["jobscript", "--ntasks-per-node", "4", "--time", "00:10:00", "--", "hpcml", "run", "job.toml"],
    ],
)
def test_login_node_commands_do_not_start_mpi(argv):
    code = (
        "import sys\nfrom hpcml.cli import main\n"
        f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
        f"{NO_MPI}\nsys.exit(rc or 0)\n"
    )
    res = _py(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip(), "prints its result on stdout"


def test_serial_analyze_does_not_start_mpi(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["u"] = np.arange(12.0).reshape(3, 4)
    code = f"import sys\nfrom hpcml.cli import main\nrc = main(['analyze', {str(path)!r}, '--no-plots'])\n{NO_MPI}\n"
    res = _py(code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def test_help_is_fast():
    best = min(_timed(["--help"]) for _ in range(3))
    # generous: a cold interpreter on a loaded CI machine; what matters is no MPI, Numba or benchmark import
    assert best < 3.0, f"hpcml --help took {best:.2f} s"
    res = _py(
        "import sys\nfrom hpcml.cli import build_parser\nbuild_parser(['--help'])\n"
        "heavy = [m for m in ('numba', 'mpi4py.MPI', 'hpcml.bench.flux', 'h5py') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    assert res.returncode == 0, res.stderr


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    res = _hpcml(*argv)
    assert res.returncode == 0
    return time.perf_counter() - t0


def test_usage_error_exits_2_without_traceback():
    res = _hpcml("run", "--no-such-option")
    assert res.returncode == 2
    assert "unrecognized arguments" in res.stderr and "SystemExit" not in res.stderr and "rank" not in res.stderr
    res = _hpcml("no-such-command")
    assert res.returncode == 2


def test_config_error_printed_once_exit_2(tmp_path):
    res = subprocess.run(
        [MPIEXEC, "-n", "3", PY, "-m", "hpcml.cli", "run", "--set", "app=heat", "--set", "run.halo_method=bogus"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("run.halo_method = 'bogus' is not one of") == 1, res.stderr
    assert not list(tmp_path.iterdir()), "nothing is written for a bad config"


@pytest.mark.parametrize(
    "setting, message",
    [
        ("heat.modes=[600, 1]", "heat.modes"),
        ("heat.cfl=0.5", "heat.cfl"),
        ("run.halo_method=bogus", "run.halo_method"),
    ],
)
def test_bad_heat_values_named_before_the_run(tmp_path, setting, message):
    res = _hpcml("run", "--set", "app=heat", "--set", setting, cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert not list(tmp_path.iterdir())


def test_json_on_stdout_logs_on_stderr(tmp_path):
    res = _hpcml(
        "run", "--json", "--set", "app=heat", "--set", "grid.shape=[32, 32]", "--set", "heat.steps=5", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)  # nothing but the JSON document
    assert summary["app"] == "heat" and summary["steps"] == 5
    assert "heat: grid" in res.stderr
    quiet = _hpcml(
        "run", "-q", "--set", "app=heat", "--set", "grid.shape=[32, 32]", "--set", "heat.steps=5", cwd=tmp_path
    )
    assert quiet.returncode == 0 and "heat: grid" not in quiet.stderr, quiet.stderr


def test_failure_exits_1_with_one_line(tmp_path):
    (tmp_path / "taken").write_text("a file where the output's folder should be: fails at run time")
    out = "output.path='taken/heat.h5'"
    res = _hpcml("run", "--set", "app=heat", "--set", "heat.steps=2", "--set", out, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stderr.count("[rank 0]") == 1, res.stderr


def test_ctrl_c_exits_130(tmp_path):
    proc = subprocess.Popen(
        [PY, "-m", "hpcml.cli", "run", "--set", "app=heat", "--set", "heat.steps=100000000", "--set", "output.path=''"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "heat: grid" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err


def test_abort_on_error_every_form():
    code = (
        "from hpcml.runtime import abort_on_error\n"
        "@abort_on_error\ndef a(x):\n    return x + 1\n"
        "@abort_on_error()\ndef b(x):\n    return x + 2\n"
        "assert a(1) == 2 and b(1) == 3 and a.__name__ == 'a'\n"
        "with abort_on_error():\n    pass\n"
        "@abort_on_error\ndef boom():\n    raise ValueError('bad thing')\n"
        "boom()\n"
    )
    res = _py(code)
    assert res.returncode == 1
    assert res.stderr.strip() == "[rank 0] ValueError: bad thing"


def test_analyze_refuses_a_main_file_without_its_data_files(tmp_path):
    # a main file copied without NAME.d/ reads fill values, or a same-named run's
    # data in the working directory: refused, naming the missing files
    run = tmp_path / "run"
    run.mkdir()
    made = _hpcml("run", "--set", "app=heat", "--set", "grid.shape=[16, 16]", "--set", "heat.steps=4", cwd=run)
    assert made.returncode == 0, made.stderr
    assert _hpcml("analyze", "heat.h5", "--no-plots", cwd=run).returncode == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run / "heat.h5", copy / "heat.h5")
    res = _hpcml("analyze", str(copy / "heat.h5"), "--no-plots", cwd=run)  # run/ holds heat.d of the same name
    assert res.returncode == 2 and "data files are missing: heat.d/" in res.stderr, res.stderr
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = [1.0, 2.0]
    res = _hpcml("analyze", str(tmp_path / "plain.h5"), "--no-plots")
    assert res.returncode == 2 and "not an hpcml output" in res.stderr, res.stderr


def test_bad_hpcml_variable_is_one_line_and_exit_2(tmp_path):
    from hpcml.testing import run_mpi

    res = run_mpi(2, ["-m", "hpcml.cli", "info"], timeout=120, env={"HPCML_HALO_METHOD": "bogus"})
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("HPCML_HALO_METHOD='bogus'") == 1 and "Traceback" not in res.stderr, res.stderr
