"""2-D HipFT input files on their own grids (diffusivity, static source): reading and interpolation.

HipFT interpolates such a file bilinearly from its scales onto the points it needs
(``interp2d``), with 0 outside the scales.  :func:`interp2d` does exactly that, in
HipFT's arithmetic order, for any file size (HipFT 1.19.3 itself needs square files,
see ``tests/data/hipft-extra/NOTICE``).  :func:`read_rows` reads only the file rows
that bracket the colatitudes a rank needs, so no rank holds a global-size array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hpcml.apps.flux.grid import MapInfo, read_file_info
from hpcml.config import ConfigError

__all__ = ["Field2D", "interp2d", "interval", "read_field"]


def interval(scale: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HipFT's ``interp``: for each value the first ``i`` with ``x_i <= v <= x_{i+1}`` and its weight.

    Returns ``(i, a, inside)`` (0-based ``i``); ``inside`` is False where the value lies
    outside ``[x_0, x_{n-1}]`` (HipFT returns 0 there).  A one-point scale matches only
    its own value.
    """
    v = np.asarray(values, dtype=np.float64)
    n = len(scale)
    inside = (v >= scale[0]) & (v <= scale[-1])
    if n == 1:
        return np.zeros(v.shape, dtype=np.int64), np.zeros(v.shape), inside
    i = np.clip(np.searchsorted(scale, v, side="left") - 1, 0, n - 2)
    a = (v - scale[i]) / (scale[i + 1] - scale[i])
    return i, np.where(inside, a, 0.0), inside


def interp2d(fi: np.ndarray, t_scale: np.ndarray, p_scale: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``fi`` (theta x phi on the scales) at the points ``t`` x ``p``.

    ``fi`` may hold only some rows of a file: ``t_scale`` is then the matching part of
    the theta scale.  Values outside the scales are 0, as in HipFT.
    """
    ii, ax, tin = interval(t_scale, t)
    jj, ay, pin = interval(p_scale, p)
    ii1 = np.minimum(ii + 1, len(t_scale) - 1)
    jj1 = np.minimum(jj + 1, len(p_scale) - 1)
    ax = ax[:, None]
    ay = ay[None, :]
    f00 = fi[ii[:, None], jj[None, :]]
    f01 = fi[ii[:, None], jj1[None, :]]
    f10 = fi[ii1[:, None], jj[None, :]]
    f11 = fi[ii1[:, None], jj1[None, :]]
    out = (1.0 - ax) * ((1.0 - ay) * f00 + ay * f01) + ax * ((1.0 - ay) * f10 + ay * f11)
    return np.where(tin[:, None] & pin[None, :], out, 0.0)


class Field2D:
    """A 2-D HipFT input file: its scales, and values at any points (reading only the rows needed)."""

    def __init__(self, path: str | Path, what: str, nonnegative: bool = False) -> None:
        self.info: MapInfo = read_file_info(path, what, ndims=(2,))
        self.what = what
        self.nonnegative = nonnegative

    def read_rows(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The file rows bracketing the colatitudes ``t`` and their theta scale (one contiguous read)."""
        import h5py

        ts = self.info.t
        i, _, inside = interval(ts, t)
        if not np.any(inside):
            return np.zeros((1, len(self.info.p))), ts[:1]
        lo = int(i[inside].min())
        hi = int(min(i[inside].max() + 2, len(ts)))
        with h5py.File(self.info.path, "r") as fh:
            rows = np.asarray(fh[self.info.dataset][lo:hi, :], dtype=np.float64)
        if not np.all(np.isfinite(rows)):
            raise ConfigError(f"{self.what} file {self.info.path!r} contains non-finite values")
        if self.nonnegative and np.any(rows < 0):
            raise ConfigError(f"{self.what} file {self.info.path!r} contains negative values")
        return rows, ts[lo:hi]

    def at(self, t: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Values at the grid ``t`` x ``p`` (HipFT's bilinear interpolation, 0 outside the scales)."""
        rows, ts = self.read_rows(t)
        return interp2d(rows, ts, self.info.p, t, p)


def read_field(path: str | Path, what: str, nonnegative: bool = False) -> Field2D:
    """Open and check a 2-D HipFT input file (every rank, before any collective)."""
    return Field2D(path, what, nonnegative)
