"""Training data made by hpcml's own solver, stored in HDF5, read tile by tile.

:func:`generate_heat_pairs` draws random smooth periodic fields ``u_0``, advances
each ``steps_ahead`` explicit Euler steps of the heat equation with the heat
app's distributed 5-point step (:mod:`hpcml.apps.heat`) and writes the pairs as
two field series, ``u_in`` and ``u_out`` (snapshot ``s`` = sample ``s``), to one
HDF5 file through :class:`hpcml.io.Output`.  No downloads: a surrogate learns
``u_0 -> u_k``, i.e. ``k`` steps of the solver in one network evaluation.

:class:`TileDataset` holds this rank's tile of every sample (channels-last,
``(n, *local_shape, C)``) — the same decomposition the solver and the
network use — and hands out batches by global sample index.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray
from hpcml.nn import storage
from hpcml.nn.grid import TrainGrid
from hpcml.stepping import diffusion_step

__all__ = ["TileDataset", "generate_heat_pairs", "random_field"]


def random_field(shape: Sequence[int], seed: int, sample: int, modes: int = 4) -> Any:
    """A function of the global index: a random smooth periodic field of unit RMS.

    Sum of Fourier modes with wave numbers ``|k_d| <= modes`` and amplitudes
    falling like ``1/(1+|k|^2)``, coefficients from ``numpy.random.default_rng((seed, sample))``
    — the same on every rank and for any decomposition.
    """
    rng = np.random.default_rng((int(seed), int(sample)))
    nd = len(shape)
    ks = [k for k in np.ndindex(*(2 * modes + 1,) * nd) if any(k)]
    waves = np.array(ks) - modes
    amp = rng.standard_normal(len(waves)) / (1.0 + (waves**2).sum(axis=1))
    phase = rng.uniform(0, 2 * np.pi, len(waves))
    norm = math.sqrt(0.5 * float((amp**2).sum()))

    def f(*idx: np.ndarray) -> np.ndarray:
        out = 0.0
        for w, a, p in zip(waves, amp, phase):
            arg = sum(2 * np.pi * int(w[d]) * (idx[d] + 0.5) / shape[d] for d in range(nd)) + p
            out = out + a * np.cos(arg)
        return np.asarray(out / norm)

    return f


def generate_heat_pairs(
    path: str | os.PathLike[str],
    comm: MPI.Comm,
    shape: Sequence[int] = (64, 64),
    samples: int = 64,
    steps_ahead: int = 20,
    alpha: float = 1.0,
    cfl: float = 0.2,
    modes: int = 4,
    seed: int = 0,
    config: Any = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Write ``samples`` pairs ``(u_0, u_k)`` of the periodic 2-D heat equation to ``path`` (collective).

    The dataset is complete or absent: it is written to a temporary file next to
    ``path`` (one consolidated HDF5 file) that replaces ``path`` only once every
    sample is in it, so a job killed or stopped meanwhile leaves the previous
    dataset (if any) as it was and no partial one that a later run would take
    for the whole.  ``stop`` (a collective poll such as
    :class:`hpcml.runtime.StopPoll`, called once per solver step) ends the
    generation early: the temporary file is removed and ``"stopped"`` is true.

    Returns a small description (``samples``, ``shape``, ``dt``, ``steps_ahead``, ``stopped``).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"the heat generator is 2-D, got shape {shape}")
    if not 0 < cfl <= 0.25:
        raise ValueError(f"cfl must be in (0, 0.25], got {cfl}")
    final = Path(path)
    partial = final.with_name(f"{final.stem}.partial{final.suffix or '.h5'}")
    d = CartDecomp(shape, comm, periodic=True, halo=1)
    hy, hx = 1.0 / shape[0], 1.0 / shape[1]
    dt = cfl * min(hy, hx) ** 2 / alpha
    cy, cx = alpha * dt / hy**2, alpha * dt / hx**2
    stopped = False
    out = storage.open_output(partial, comm, config, mode="w", xdmf=False, flush_every=0, consolidate=True)
    try:
        for s in range(int(samples)):
            u = DistArray.from_global(d, random_field(shape, seed, s, modes), dtype="f8")
            out.write("u_in", u, step=s, axis="sample", long_name="initial field", attrs={"time": 0.0})
            un = u.zeros_like()
            for _ in range(int(steps_ahead)):
                diffusion_step(u, un, (cy, cx))
                u, un = un, u
                if stop is not None and stop():
                    stopped = True
                    break
            if stopped:
                break
            later = {"time": steps_ahead * dt}
            out.write("u_out", u, step=s, axis="sample", long_name="field steps_ahead steps later", attrs=later)
            if stop is not None and int(steps_ahead) == 0 and stop():
                stopped = True
                break
    finally:
        out.close()
        d.free()
    if comm.Get_rank() == 0:
        if stopped:
            partial.unlink(missing_ok=True)
        else:
            os.replace(partial, final)  # atomic: the complete dataset or the previous one
            old_parts = final.with_suffix(".d")  # the data files of a dataset written unconsolidated before
            if old_parts.is_dir():
                shutil.rmtree(old_parts, ignore_errors=True)
    comm.Barrier()
    return {
        "samples": int(samples),
        "shape": list(shape),
        "dt": dt,
        "steps_ahead": int(steps_ahead),
        "stopped": stopped,
    }


class TileDataset:
    """Tiles of ``n`` samples held by this rank: inputs ``(n, *local_shape, Cin)``, targets ``(n, *local_shape, Cout)``.

    Every spatial rank of every replica holds its tile of *all* samples, so any
    replica can take any sample when the shuffled order changes each epoch.
    """

    def __init__(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        if inputs.shape[0] != targets.shape[0] or inputs.shape[1:-1] != targets.shape[1:-1]:
            raise ValueError(f"inputs {inputs.shape} and targets {targets.shape} do not match")
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of the samples ``indices`` (copies, in that order)."""
        idx = np.asarray(indices, dtype=np.intp)
        return self.inputs[idx], self.targets[idx]

    @classmethod
    def from_global(cls, grid: TrainGrid, inputs: np.ndarray, targets: np.ndarray) -> TileDataset:
        """Cut this rank's tiles out of global arrays ``(n, *shape, C)`` held on every rank."""
        sl = (slice(None), *grid.decomp.slices, slice(None))
        return cls(np.ascontiguousarray(inputs[sl]), np.ascontiguousarray(targets[sl]))

    @classmethod
    def from_hdf5(
        cls,
        grid: TrainGrid,
        path: str | os.PathLike[str],
        input_name: str = "u_in",
        target_name: str = "u_out",
        dtype: Any = "float64",
    ) -> TileDataset:
        """Read every sample's tile of two field series (collective within each replica)."""
        n = storage.series_length(path, input_name, grid.comm)
        m = storage.series_length(path, target_name, grid.comm)
        if n != m:
            raise ValueError(f"{path}: {input_name} has {n} snapshots, {target_name} has {m}")
        x = storage.read_tiles(path, input_name, grid.decomp, range(n))
        y = storage.read_tiles(path, target_name, grid.decomp, range(n))
        return cls(x[..., None].astype(dtype), y[..., None].astype(dtype))
