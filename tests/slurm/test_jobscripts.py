"""Job scripts: static checks, the generator, and real submissions to a local SLURM.

The SLURM tests need the one-node cluster that ``.ci/slurm_up.sh`` starts; they skip
when ``sinfo`` cannot reach a controller, unless ``HPCML_REQUIRE_SLURM=1`` (set by CI),
in which case that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from hpcml.jobscript import JobRequest, JobScriptError, parse_time, render

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "jobscripts").iterdir())
VENV_BIN = Path(sys.executable).parent
HPCML = str(VENV_BIN / "hpcml")


def _slurm_up() -> bool:
    if not shutil.which("sbatch"):
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False)
    return res.returncode == 0 and any(s in res.stdout for s in ("idle", "mix", "alloc"))


SLURM = _slurm_up()
REQUIRE = os.environ.get("HPCML_REQUIRE_SLURM", "0") == "1"
needs_slurm = pytest.mark.skipif(not SLURM and not REQUIRE, reason="no SLURM controller (run .ci/slurm_up.sh)")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    head = script.read_text().splitlines()[0]
    assert head.startswith("#!/bin/bash")
    text = script.read_text()
    assert "set -euo pipefail" in text
    if script.suffix == ".sbatch":
        assert "srun --mpi=pmi2" in text and ("%j" in text or "%A" in text)


@pytest.mark.skipif(not shutil.which("shellcheck") and not REQUIRE, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_shellcheck(script):
    res = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout


def test_parse_time():
    assert parse_time("01:00:00") == 3600
    assert parse_time("2-00:00:05") == 2 * 86400 + 5
    for bad in ("1:00", "00:61:00", "1-25:00:00", "00:00:00", "soon"):
        with pytest.raises(JobScriptError):
            parse_time(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": 0}, "--nodes must be >= 1"),
        ({"cpus_per_task": 0}, "--cpus-per-task"),
        ({"time": "00:01:00"}, "no room for the checkpoint signal"),
        ({"cores_per_node": 4, "ntasks_per_node": 4, "cpus_per_task": 2}, "8 CPUs per node"),
        ({"scheduler": "mpirun", "nodes": 2}, "single-node"),
        ({"command": []}, "no command given"),
        ({"gpus_per_task": -1}, "--gpus-per-task"),
        ({"job_name": "a b"}, "--job-name"),
        ({"partition": "gpu a100"}, "--partition"),
        ({"account": "p;rm"}, "--account"),
    ],
)
def test_generator_rejects(change, message):
    kw = {
        "scheduler": "slurm",
        "nodes": 1,
        "ntasks_per_node": 2,
        "cpus_per_task": 1,
        "time": "00:10:00",
        "command": ["hpcml", "run"],
    }
    kw.update(change)
    with pytest.raises(JobScriptError, match=message):
        render(JobRequest(**kw))


@pytest.mark.parametrize("scheduler", ["slurm", "mpirun"])
@pytest.mark.parametrize("gpus", [0, 1])
def test_generated_scripts_check(tmp_path, scheduler, gpus):
    req = JobRequest(scheduler, 1, 2, 2, "00:30:00", ["hpcml", "run", "my job.toml"], gpus_per_task=gpus)
    text = render(req)
    path = tmp_path / "job.sh"
    path.write_text(text)
    subprocess.run(["bash", "-n", str(path)], check=True)
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout
    assert "'my job.toml'" in text  # arguments are quoted
    if scheduler == "slurm":
        assert "#SBATCH --ntasks-per-node=2" in text and "srun --mpi=pmi2" in text
        assert ("--gpus-per-task=1" in text) == bool(gpus)
        assert "hpcml run --set run.restart=auto 'my job.toml'" in text  # a requeued job resumes


def test_cli_jobscript_error_exit(tmp_path):
    res = subprocess.run(
        [HPCML, "jobscript", "--ntasks-per-node", "2", "--time", "00:00:30", "--", "hpcml", "run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2, res.stderr  # a usage error, printed as one line
    assert res.stderr.startswith("hpcml jobscript: error:") and "no room for the checkpoint signal" in res.stderr
    assert "[rank" not in res.stderr and res.stderr.count("\n") == 1
    spaced = [HPCML, "jobscript", "--ntasks-per-node", "2", "--time", " 01:00:00 ", "--", "hpcml", "run"]
    text = subprocess.run(spaced, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "#SBATCH --time=01:00:00\n" in text


# -- real SLURM ------------------------------------------------------------------------------
def _sbatch(tmp_path, script, *args, options=(), extra_env=None, wait=True, timeout=240):
    env = {"HPCML": HPCML, **(extra_env or {})}
    export = "ALL," + ",".join(f"{k}={v}" for k, v in env.items())
    cmd = ["sbatch", "--parsable", f"--chdir={tmp_path}", f"--export={export}"]
    if wait:
        cmd.append("--wait")
    cmd += [*options, str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _small_config(tmp_path, steps=40, name="run.h5", checkpoints="ck"):
    cfg = tmp_path / "job.toml"
    text = f'app = "heat"\n[grid]\nshape = [64, 48]\n[heat]\nsteps = {steps}\n[output]\npath = "{name}"\nevery = 10\n'
    if checkpoints:
        text += f'[checkpoint]\ndir = "{checkpoints}"\n'
    cfg.write_text(text)
    return cfg


def _read(tmp_path, pattern):
    files = sorted(tmp_path.glob(pattern))
    return "".join(f.read_text() for f in files)


@needs_slurm
def test_sbatch_cpu_script(tmp_path):
    cfg = _small_config(tmp_path)
    res = _sbatch(tmp_path, ROOT / "jobscripts/slurm_cpu.sbatch", str(cfg))
    out, err = _read(tmp_path, "hpcml-cpu-*.out"), _read(tmp_path, "hpcml-cpu-*.err")
    assert res.returncode == 0, f"{res.stderr}\n{out}\n{err}"
    assert "2 ranks on 1 node(s)" in out  # the job script's own line, on stdout
    assert "2 ranks on 1 node(s) via srun" in err  # hpcml's banner: a log line, on stderr
    assert "cell_updates_per_s" in out and "cell_updates_per_s" not in err  # results on stdout
    with h5py.File(tmp_path / "run.h5") as f:
        assert f["u"].shape == (5, 64, 48)
        assert f["step"][-1] == 40
        assert json.loads(f.attrs["hpcml_provenance"])[-1]["ranks"] == 2


@needs_slurm
def test_srun_without_pmi_is_caught(tmp_path):
    script = tmp_path / "nopmi.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --ntasks=2\n#SBATCH --output=nopmi-%j.out\n#SBATCH --error=nopmi-%j.err\n"
        f"set -euo pipefail\nsrun --mpi=none {HPCML} run --set app=heat --set output.path='' --set heat.steps=1\n"
    )
    res = _sbatch(tmp_path, script)
    err = _read(tmp_path, "nopmi-*.err")
    assert res.returncode != 0
    assert "srun --mpi=pmi2" in err, err


@needs_slurm
def test_array_ensemble(tmp_path):
    # no checkpoint.dir: each member's checkpoints go next to its own output (member-0.ckpt, ...)
    cfg = _small_config(tmp_path, steps=20, checkpoints="")
    params = tmp_path / "params.txt"
    params.write_text(
        "--set heat.cfl=0.1 --set output.path=member-0.h5\n--set heat.cfl=0.2 --set output.path=member-1.h5\n"
    )
    res = _sbatch(
        tmp_path, ROOT / "jobscripts/slurm_array_ensemble.sbatch", str(cfg), str(params), options=["--array=0-1"]
    )
    assert res.returncode == 0, res.stderr + _read(tmp_path, "*.err")
    norms = []
    for i in range(2):
        with h5py.File(tmp_path / f"member-{i}.h5") as f:
            norms.append(f["norm"][-1])
            assert f["step"][-1] == 20
    assert norms[0] != norms[1]  # different time steps really ran


@needs_slurm
def test_signal_stops_cleanly(tmp_path):
    cfg = _small_config(tmp_path, steps=10**7, name="long.h5")
    res = _sbatch(
        tmp_path, ROOT / "jobscripts/slurm_cpu.sbatch", str(cfg), extra_env={"HPCML_REQUEUE": "0"}, wait=False
    )
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip().split(";")[0]
    deadline = time.time() + 120
    while time.time() < deadline and "step     10" not in _read(tmp_path, "hpcml-cpu-*.err"):
        time.sleep(0.5)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, check=False).stdout
        if not state.strip():
            break
        time.sleep(0.5)
    else:
        subprocess.run(["scancel", job], check=False)
        pytest.fail("job did not stop after USR1")
    out, err = _read(tmp_path, "hpcml-cpu-*.out"), _read(tmp_path, "hpcml-cpu-*.err")
    assert "asking hpcml to stop cleanly" in out, out  # the job script
    assert "stop signal received" in err, err  # hpcml's log
    with h5py.File(tmp_path / "long.h5") as f:
        assert 0 < f["step"][-1] < 10**7
    assert sorted(tmp_path.glob("ck/ckpt-*.h5")), "no checkpoint written on the stop signal"
