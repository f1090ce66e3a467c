"""hpcml.stepping: the overlapped diffusion step against serial NumPy on the gathered field."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcml import CartDecomp, DistArray
from hpcml.stepping import diffusion_step
from hpcml.testing import assert_all


def _serial_step(g: np.ndarray, coefs: tuple[float, ...]) -> np.ndarray:
    out = g.copy()
    for d, c in enumerate(coefs):
        out += c * (np.roll(g, 1, axis=d) - 2 * g + np.roll(g, -1, axis=d))
    return out


@pytest.mark.mpi
@settings(max_examples=10)
@given(ndim=st.sampled_from([2, 3]), extra=st.integers(0, 5), steps=st.integers(1, 3), seed=st.integers(0, 99))
def test_diffusion_step_matches_serial_numpy(comm, ndim, extra, steps, seed):
    shape = tuple(2 * comm.size + extra + d for d in range(ndim))  # uneven splits
    d = CartDecomp(shape, comm, periodic=True, halo=1)
    g = np.random.default_rng(seed).standard_normal(shape)
    u = DistArray.from_global(d, g if comm.rank == 0 else None)
    v = u.zeros_like()
    coefs = tuple(0.2 / ndim / (k + 1) for k in range(ndim))
    ref = g
    for _ in range(steps):
        diffusion_step(u, v, coefs)
        u, v = v, u
        ref = _serial_step(ref, coefs)
    full = u.gather()
    ok = full is None or np.allclose(full, ref, rtol=1e-13, atol=1e-13)
    assert_all(comm, bool(ok), f"shape={shape} steps={steps}")
    d.free()


def test_diffusion_step_needs_one_halo():
    from mpi4py import MPI

    d = CartDecomp((8, 8), MPI.COMM_SELF, periodic=True, halo=(1, 2))
    u = DistArray.zeros(d)
    with pytest.raises(ValueError, match="one halo width"):
        diffusion_step(u, u.zeros_like(), 0.1)
    d.free()
