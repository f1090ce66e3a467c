"""Helpers shared by the test modules (importable as ``helpers``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

VENV_BIN = Path(sys.executable).parent
MPIEXEC = str(VENV_BIN / "mpiexec")
SENTINEL = -7


def global_field(shape, dtype="f8"):
    """Deterministic global array with unique values (detects any misplaced cell)."""
    g = np.arange(1, int(np.prod(shape)) + 1, dtype="f8").reshape(shape)
    dt = np.dtype(dtype)
    if dt.kind == "c":
        return (g + 0.5j * g).astype(dt)
    return g.astype(dt)


def field_fn(shape, dtype="f8"):
    """Callable for ``DistArray.from_global`` producing :func:`global_field`."""
    strides = np.cumprod((1, *shape[:0:-1]))[::-1]

    def f(*idx):
        lin = sum(i * s for i, s in zip(idx, strides)) + 1
        g = np.asarray(lin, dtype="f8")
        dt = np.dtype(dtype)
        return (g + 0.5j * g).astype(dt) if dt.kind == "c" else g.astype(dt)

    return f


def expected_ghosted(g, decomp, corners=True, sentinel=SENTINEL):
    """The local ghosted block after a halo exchange, from the global array."""
    halo = decomp.halo
    ref = np.pad(g, [(h, h) for h in halo], mode="wrap")
    for ax, per in enumerate(decomp.periodic):
        if not per and halo[ax]:
            idx = [slice(None)] * g.ndim
            idx[ax] = slice(0, halo[ax])
            ref[tuple(idx)] = sentinel
            idx[ax] = slice(ref.shape[ax] - halo[ax], None)
            ref[tuple(idx)] = sentinel
    box = tuple(slice(s, s + n + 2 * h) for s, n, h in zip(decomp.start, decomp.local_shape, halo))
    local = ref[box].copy()
    if not corners:
        # Ghost cells outside the interior in two or more dimensions are never sent.
        outside = np.zeros(local.shape, dtype=int)
        for ax in range(g.ndim):
            h, n = halo[ax], decomp.local_shape[ax]
            pos = np.arange(local.shape[ax])
            out = ((pos < h) | (pos >= h + n)).astype(int)
            shape = [1] * g.ndim
            shape[ax] = -1
            outside = outside + out.reshape(shape)
        local[outside >= 2] = sentinel
    return local


def run_mpi(n, args, timeout=120, env=None, cwd=None):
    """Run ``mpiexec -n n python args...`` with a hard timeout; return CompletedProcess."""
    e = dict(os.environ)
    e.setdefault("NUMBA_NUM_THREADS", "1")
    e.update(env or {})
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd, check=False)


def assert_all(comm, ok: bool, msg: str = "") -> None:
    """Collective assert: fails on every rank if it fails on any, naming the ranks.

    Lives here rather than in conftest.py: several test folders have a conftest, and
    ``import conftest`` would pick whichever was imported first.
    """
    flags = comm.allgather(bool(ok))
    bad = [r for r, f in enumerate(flags) if not f]
    assert not bad, f"failed on rank(s) {bad}: {msg}"


def draw_halo_case(data, nranks, max_halo=3, extra=(6, 3)):
    """Draw ``(shape, periodic, halo, corners)`` for a halo test on ``nranks`` ranks (hypothesis).

    Every rank gets at least ``halo`` cells per dimension; ``extra`` bounds the cells added
    per dimension for 1-2-D and for 3-D shapes (uneven splits come from those).
    """
    from hypothesis import strategies as st
    from mpi4py import MPI

    ndim = data.draw(st.integers(1, 3), label="ndim")
    halo = data.draw(st.integers(1, max_halo), label="halo")
    more = extra[0] if ndim < 3 else extra[1]
    shape = tuple(data.draw(st.integers(p * halo, p * halo + more)) for p in MPI.Compute_dims(nranks, ndim))
    periodic = tuple(data.draw(st.booleans()) for _ in range(ndim))
    corners = data.draw(st.booleans(), label="corners")
    return shape, periodic, halo, corners
