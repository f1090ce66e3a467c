"""`hpcml bench numpy`: a small end-to-end run on 2 ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hpcml.testing import MPIEXEC


def test_bench_numpy_small(tmp_path):
    hpcml = str(Path(sys.executable).parent / "hpcml")
    cmd = [MPIEXEC, "-n", "2", hpcml, "bench", "numpy", "--n", "64", "--repeat", "2", "--out", str(tmp_path)]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "numpy.json").read_text())["rows"]
    impls = {r["impl"] for r in rows}
    assert {"hpcml DistArray", "hpcml global get", "hpcml redistribute", "NumPy on each local block"} <= impls
    assert all(r["ms"] > 0 and r["ranks"] == 2 for r in rows)
    assert all("vs peer" in r for r in rows if r["impl"] == "hpcml DistArray")
    assert "| case |" in (tmp_path / "numpy.md").read_text()
