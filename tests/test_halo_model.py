"""The measured halo cost model and ``method="auto"``; benchmark smoke runs."""

from __future__ import annotations

import json

import pytest
from helpers import run_mpi

from hpcml.halo_model import HaloModel, load_model

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
