"""Shared fixtures for serial and MPI tests.

MPI tests (``@pytest.mark.mpi``) run under ``mpiexec -n N python -m pytest --with-mpi``
for N = 1..4.  Hypothesis is derandomised and database-free so that every rank
draws the same examples, and MPI assertions go through :func:`assert_all` so a
failure on one rank fails every rank instead of leaving the others in a collective.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

settings.register_profile(
    "hpcml",
    deadline=None,
    max_examples=30,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("hpcml")

VENV_BIN = Path(sys.executable).parent
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def pytest_configure(config):
    if os.environ.get("HPCML_EXPECT_INSTALLED", "0") not in ("", "0"):
        # `make test-wheel`: the suite must test the installed wheel, not this checkout's sources
        import hpcml

        sources = Path(__file__).resolve().parents[1] / "hpcml"
        where = Path(hpcml.__file__).resolve()
        if sources in where.parents:
            raise pytest.UsageError(f"HPCML_EXPECT_INSTALLED is set but hpcml was imported from the checkout: {where}")
    config.addinivalue_line("markers", "cudasim: Numba-CUDA kernels in the CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
    config.addinivalue_line("markers", "gpu: needs a CUDA device and CuPy")
    config.addinivalue_line(
        "markers", "numba_cuda: Numba-CUDA device arrays: runs in the CUDA simulator or on a real GPU"
    )
    config.addinivalue_line("markers", "slow: long runs (CI runs them too)")
    config.addinivalue_line("markers", "torch: needs PyTorch (every test in a test_torch_*.py file)")


def _has_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _has_numba_gpu() -> bool:
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the torch marker must already be set
def pytest_collection_modifyitems(config, items):
    skip_sim = pytest.mark.skip(reason="needs NUMBA_ENABLE_CUDASIM=1 (make test-sim)")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device and CuPy (tests/gpu/run_device_checks.sh)")
    skip_numba = pytest.mark.skip(reason="needs NUMBA_ENABLE_CUDASIM=1 (make test-sim) or a CUDA device")
    gpu = numba_gpu = None
    for item in items:
        if item.path.name.startswith("test_torch_"):
            item.add_marker(pytest.mark.torch)
        if "cudasim" in item.keywords and not SIMULATOR:
            item.add_marker(skip_sim)
        if "numba_cuda" in item.keywords and not SIMULATOR:
            numba_gpu = _has_numba_gpu() if numba_gpu is None else numba_gpu
            if not numba_gpu:
                item.add_marker(skip_numba)
        if "gpu" in item.keywords:
            gpu = _has_gpu() if gpu is None else gpu
            if not gpu:
                item.add_marker(skip_gpu)


MPIEXEC = str(VENV_BIN / "mpiexec")


@pytest.fixture(scope="session")
def comm():
    """``MPI.COMM_WORLD``."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.fixture
def shared_tmp(tmp_path, comm):
    """A temporary directory that is the same on every rank (rank 0's tmp_path)."""
    return Path(comm.bcast(str(tmp_path), root=0))
