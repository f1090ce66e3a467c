"""Run the Numba-CUDA kernel tests (tests/kernels/sim) in the CUDA simulator.

``NUMBA_ENABLE_CUDASIM`` is read when numba is imported, so the simulator
tests need a fresh interpreter with it set; this test starts one.  A run that
already has the variable set (``NUMBA_ENABLE_CUDASIM=1 pytest tests/kernels``)
collects tests/kernels/sim directly and skips this wrapper.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpcml.backend import simulator_enabled

SIM_DIR = Path(__file__).parent / "sim"


def test_numba_cuda_kernels_in_simulator():
    if simulator_enabled():
        pytest.skip("simulator already on: tests/kernels/sim runs in this process")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(SIM_DIR)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = r.stdout[-6000:] + r.stderr[-3000:]
    assert r.returncode == 0, tail
    summary = r.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary, tail
