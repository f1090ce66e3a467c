"""The measured halo cost model and ``method="auto"``; benchmark smoke runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from hpcml.halo_model import HaloModel, load_model
from hpcml.testing import MPIEXEC, run_mpi

TABLE = {
    "cpu": [
        {"run_bytes": 8, "nbytes": 32768, "datatype": 300.0, "pack": 40.0, "contiguous": 10.0},
        {"run_bytes": 2048, "nbytes": 524288, "datatype": 150.0, "pack": 200.0, "contiguous": 100.0},
        {"run_bytes": 524288, "nbytes": 524288, "datatype": 50.0, "pack": 300.0, "contiguous": 50.0},
    ],
    "gpu": [
        {"nbytes": 4096, "staged": 20.0, "device": 30.0},
        {"nbytes": 4 << 20, "staged": 900.0, "device": 300.0},
    ],
}


def test_chooser_picks_from_synthetic_table():
    m = HaloModel.from_json(json.dumps(TABLE))
    assert m.choose_cpu([(8, 32768)]) == "pack"  # columns: packing wins
    assert m.choose_cpu([(2048, 524288)]) == "datatype"  # long runs: the datatype engine wins here
    assert m.choose_cpu([(8, 32768), (2048, 524288)]) == "pack"  # summed: 40+200 < 300+150
    assert m.choose_cpu([]) == "pack"
    assert m.choose_gpu(4096, cuda_aware=True) == "staged"  # small: staging latency wins
    assert m.choose_gpu(8 << 20, cuda_aware=True) == "device"
    assert m.choose_gpu(8 << 20, cuda_aware=False) == "staged"  # never device without CUDA-aware MPI
    assert HaloModel().choose_gpu(100, cuda_aware=True) == "device"


def test_malformed_model_is_reported(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text('{"cpu": [{"nbytes": 1}]}')
    with pytest.raises(ValueError, match="lacks keys"):
        load_model(bad)
    worse = tmp_path / "w.json"
    worse.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(worse)
    assert load_model(tmp_path / "absent.json") is None


def test_auto_uses_model_and_stays_correct(tmp_path):
    model = tmp_path / "model.json"
    table = {"cpu": [{"run_bytes": 8, "nbytes": 8, "datatype": 1.0, "pack": 100.0, "contiguous": 1.0}]}
    model.write_text(json.dumps(table))
    script = tmp_path / "job.py"
    script.write_text(
        "import numpy as np, hpcml\n"
        "from mpi4py import MPI\n"
        "from hpcml import CartDecomp, DistArray\n"
        "d = CartDecomp((12, 10), MPI.COMM_WORLD, periodic=True, dims=(1, MPI.COMM_WORLD.size))\n"
        "u = DistArray.from_global(d, lambda i, j: 100.0 * i + j)\n"
        "v = u.copy()\n"
        "u.exchange_halos()\n"
        "v.exchange_halos('pack')\n"
        "methods = sorted(p.method for p in d.plan_cache().values() if hasattr(p, 'method'))\n"
        "assert np.array_equal(u.data, v.data)\n"
        "if MPI.COMM_WORLD.rank == 0: print('METHODS', methods)\n"
    )
    res = run_mpi(2, [str(script)], env={"HPCML_HALO_MODEL": str(model)})
    assert res.returncode == 0, res.stderr
    assert "METHODS ['datatype', 'pack']" in res.stdout


PER_RANK_JOB = """
import warnings
import numpy as np
from mpi4py import MPI
from hpcml import CartDecomp, DistArray
warnings.simplefilter("always")
comm = MPI.COMM_WORLD
d = CartDecomp((12, 10), comm, periodic=True, dims=(1, comm.size))
u = DistArray.from_global(d, lambda i, j: 100.0 * i + j)
v = u.copy()
try:
    u.exchange_halos()
except ValueError as exc:
    print(f"<RANK {comm.rank} ERROR {exc}>", flush=True)
else:
    v.exchange_halos("pack")
    assert np.array_equal(u.data, v.data)
    print(f"<RANK {comm.rank} METHOD {u.halo_plan().method}>", flush=True)
"""


def _mpmd(tmp_path, envs):
    """Run PER_RANK_JOB with one environment per rank (MPMD launch); fail on a hang."""
    script = tmp_path / "job.py"
    script.write_text(PER_RANK_JOB)
    cmd = [MPIEXEC]
    for i, env in enumerate(envs):
        if i:
            cmd.append(":")
        cmd += ["-n", "1"]
        for k, v in env.items():
            cmd += ["-env", k, v]
        cmd += [sys.executable, str(script)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("HPCML_HALO")}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=base, check=False)
    # ranks' lines may interleave on the shared stdout: pick the bracketed records out
    lines = sorted(f"RANK {r} {what} {text}" for r, what, text in re.findall(r"<RANK (\d+) (\w+) (.*?)>", res.stdout))
    return res, lines


@pytest.fixture
def model_files(tmp_path):
    """A valid model that favours ``datatype``, a corrupt one, and a path with no file."""
    valid = tmp_path / "valid.json"
    valid.write_text(json.dumps({"cpu": [{"run_bytes": 8, "nbytes": 8, "datatype": 1.0, "pack": 100.0}]}))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    return {"valid": str(valid), "corrupt": str(corrupt), "missing": str(tmp_path / "missing.json")}


@pytest.mark.parametrize(
    "order", [("valid", "corrupt", "missing"), ("corrupt", "missing", "valid"), ("missing", "valid", "corrupt")]
)
def test_ranks_with_different_model_files_agree(tmp_path, model_files, order):
    """Rank 0 alone reads the model and broadcasts its choice: no hang, one method everywhere."""
    res, lines = _mpmd(tmp_path, [{"HPCML_HALO_MODEL": model_files[k]} for k in order])
    assert res.returncode == 0, res.stderr
    expect = "datatype" if order[0] == "valid" else "shm"  # no model: shm, the ranks share a node
    assert lines == [f"RANK {r} METHOD {expect}" for r in range(3)], res.stdout + res.stderr
    if order[0] == "corrupt":
        assert "not valid JSON" in res.stderr and "chosen without it" in res.stderr


def test_ranks_with_different_method_settings_agree(tmp_path):
    """``HPCML_HALO_METHOD`` is rank 0's: other ranks' values are ignored; an error on rank 0 is raised everywhere."""
    res, lines = _mpmd(tmp_path, [{}, {"HPCML_HALO_METHOD": "datatype"}, {"HPCML_HALO_METHOD": "staged"}])
    assert res.returncode == 0, res.stderr
    assert lines == [f"RANK {r} METHOD shm" for r in range(3)], res.stdout + res.stderr
    res, lines = _mpmd(tmp_path, [{"HPCML_HALO_METHOD": "staged"}, {}, {"HPCML_HALO_METHOD": "datatype"}])
    assert res.returncode == 0, res.stderr
    assert len(lines) == 3, res.stdout + res.stderr
    assert all("ERROR" in ln and "does not apply to host arrays" in ln and "on rank 0" in ln for ln in lines), lines


@pytest.mark.parametrize(
    ("name", "args"),
    [("halo", ["--fields", "64x48", "20x18x16", "--repeat", "3"]), ("datatypes", ["--quick", "--repeat", "3"])],
)
def test_bench_smoke(tmp_path, name, args):
    res = run_mpi(2, ["-m", "hpcml.cli", "bench", name, "--out", str(tmp_path), *args], timeout=300)
    assert res.returncode == 0, res.stderr
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["rows"] and all("peak MiB/rank" in r for r in record["rows"])
    assert "| " in (tmp_path / f"{name}.md").read_text()
    if name == "halo":  # 2 ranks, one node: what they share is recorded, and a note says if it is too little
        meta = record["meta"]
        assert meta["ranks_per_node"] == 2 and meta["cpus_per_node"] >= 1
        assert meta["oversubscribed"] == (meta["cpus_per_node"] < 2)
    if name == "datatypes":
        assert all(r["correct"] for r in record["rows"])


@pytest.mark.cudasim
def test_bench_datatypes_gpu_half_in_simulator(tmp_path):
    """The GPU half of ``hpcml bench datatypes`` (staged and device) on simulated Numba arrays."""
    args = ["--device", "gpu", "--array", "numba", "--quick", "--repeat", "1", "--out", str(tmp_path)]
    env = {"NUMBA_ENABLE_CUDASIM": "1", "HPCML_CUDA_AWARE": "1"}
    res = run_mpi(2, ["-m", "hpcml.cli", "bench", "datatypes", *args], timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "datatypes.json").read_text())["rows"]
    assert rows and all(r["correct"] for r in rows)
    assert all(r["staged"] > 0 and r["device"] > 0 and r["best"] in ("staged", "device") for r in rows)
