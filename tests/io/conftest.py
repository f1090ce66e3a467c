"""Fixtures for the hpcml.io tests (helpers live in ``io_helpers``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("HPCML_PROGRESS", "0")


@pytest.fixture(scope="session")
def comm():
    """``MPI.COMM_WORLD``."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.fixture
def io_dir(comm):
    """A fresh directory shared by all ranks (made by rank 0, removed after the test).

    Not ``tmp_path``: every rank would make its own pytest base directory, and
    pytest's pruning of old ones could delete rank 0's while in use.
    """
    path = Path(comm.bcast(tempfile.mkdtemp(prefix="hpcml-io-") if comm.Get_rank() == 0 else None, root=0))
    yield path
    comm.Barrier()
    if comm.Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)
