"""Helpers for testing distributed code built on hpcml (used by hpcml's own tests).

Everything distributed is checked against a serial reference built from the
global array; these are the pieces such tests share:

* :func:`global_field`, :func:`field_fn` -- a deterministic global array with
  unique values (a misplaced cell cannot go unnoticed), and the callable that
  makes every rank's block of it for :meth:`hpcml.DistArray.from_global`;
* :func:`expected_ghosted` -- the ghosted block a rank must hold after a halo
  exchange, from ``np.pad(mode="wrap")`` of the global array;
* :func:`assert_all` -- a collective assert: fails on every rank when it fails on
  any, so one rank's failure cannot leave the others waiting in a collective;
* :func:`halo_case` -- a hypothesis strategy for halo-exchange cases (shapes with
  uneven splits, halo widths, periodicity, corners) valid on a rank count;
* :func:`run_mpi` -- run a script under this interpreter's ``mpiexec`` with a hard
  timeout (a deadlock fails the test instead of hanging it).

Importing this module imports neither MPI nor hypothesis; functions that need
them import them when called.

>>> from hpcml.testing import assert_all, expected_ghosted, field_fn, global_field
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MPIEXEC",
    "SENTINEL",
    "assert_all",
    "expected_ghosted",
    "field_fn",
    "global_field",
    "halo_case",
    "run_mpi",
]

#: the launcher next to this interpreter (the venv's ``mpiexec``)
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
#: value of ghost cells an exchange must not write (non-periodic edges, corners with ``corners=False``)
SENTINEL = -7


def global_field(shape: Sequence[int], dtype: Any = "f8") -> np.ndarray:
    """Deterministic global array with unique values ``1, 2, ...`` in C order (complex: ``+ 0.5j`` times that)."""
    g = np.arange(1, int(np.prod(shape)) + 1, dtype="f8").reshape(tuple(shape))
    dt = np.dtype(dtype)
    if dt.kind == "c":
        return (g + 0.5j * g).astype(dt)
    return g.astype(dt)


def field_fn(shape: Sequence[int], dtype: Any = "f8") -> Callable[..., np.ndarray]:
    """Callable for :meth:`hpcml.DistArray.from_global` giving :func:`global_field` without a global array."""
    strides = np.cumprod((1, *tuple(shape)[:0:-1]))[::-1]
    dt = np.dtype(dtype)

    def f(*idx: np.ndarray) -> np.ndarray:
        lin = sum(i * s for i, s in zip(idx, strides)) + 1
        g = np.asarray(lin, dtype="f8")
        return (g + 0.5j * g).astype(dt) if dt.kind == "c" else g.astype(dt)

    return f


def expected_ghosted(g: np.ndarray, decomp: Any, corners: bool = True, sentinel: Any = SENTINEL) -> np.ndarray:
    """The ghosted block this rank of ``decomp`` holds after a halo exchange of global array ``g``.

    Periodic dimensions wrap (``np.pad(mode="wrap")``); ghosts at a non-periodic edge
    keep ``sentinel``, and with ``corners=False`` so do ghosts outside the interior in
    two or more dimensions (the exchange never writes them).
    """
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
        outside = np.zeros(local.shape, dtype=int)
        for ax in range(g.ndim):
            h, n = halo[ax], decomp.local_shape[ax]
            pos = np.arange(local.shape[ax])
            shape = [1] * g.ndim
            shape[ax] = -1
            outside = outside + ((pos < h) | (pos >= h + n)).astype(int).reshape(shape)
        local[outside >= 2] = sentinel
    return local


def assert_all(comm: Any, ok: bool, msg: str = "") -> None:
    """Collective assert over ``comm``: raises ``AssertionError`` on every rank if ``ok`` is false on any.

    The message names the failing ranks.  Every rank must call it (it is an ``allgather``).
    """
    flags = comm.allgather(bool(ok))
    bad = [r for r, f in enumerate(flags) if not f]
    assert not bad, f"failed on rank(s) {bad}: {msg}"


def halo_case(nranks: int, max_halo: int = 3, extra: tuple[int, int] = (6, 3)) -> Any:
    """Hypothesis strategy of ``(shape, periodic, halo, corners)`` valid on ``nranks`` ranks.

    1-3 dimensions; every dimension has at least ``halo`` cells per rank along it for
    ``MPI.Compute_dims``'s grid (so a valid process grid exists) plus up to ``extra[0]``
    more cells (1-D, 2-D) or ``extra[1]`` (3-D), which makes uneven splits.
    """
    from hypothesis import strategies as st
    from mpi4py import MPI

    @st.composite
    def case(draw: Any) -> tuple[tuple[int, ...], tuple[bool, ...], int, bool]:
        ndim = draw(st.integers(1, 3))
        halo = draw(st.integers(1, max_halo))
        more = extra[0] if ndim < 3 else extra[1]
        shape = tuple(draw(st.integers(p * halo, p * halo + more)) for p in MPI.Compute_dims(nranks, ndim))
        periodic = tuple(draw(st.booleans()) for _ in range(ndim))
        return shape, periodic, halo, draw(st.booleans())

    return case()


def run_mpi(
    n: int,
    args: Sequence[str],
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    unset: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``mpiexec -n n python args...`` (this interpreter, one Numba thread per rank) with a hard timeout.

    ``unset`` names variables removed from this process's environment, and ``env``
    adds to what is left.  Raises ``subprocess.TimeoutExpired`` when the job outlives ``timeout`` seconds.
    """
    e = dict(os.environ)
    e.setdefault("NUMBA_NUM_THREADS", "1")
    for name in unset:
        e.pop(name, None)
    e.update(env or {})
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e, cwd=cwd, check=False)
