"""Initial B_r fields: HipFT input maps, validation fields, generated bipolar regions.

Every function fills the *owned* block of a ghosted ``(nr, NY, NX)`` array.
Values are evaluated on HipFT's file grid (``t_j``, ``p_k`` for ``k = 1..N_f``) and
the seam column (``k = M-1 = N_f``, the same point as ``k = 1``) receives
``(f(p_1) + f(p_{N_f})) / 2`` as in section 2.4 of the spec; the pole rows are
averaged afterwards by the solver (a reduction along the pole row).
"""

from __future__ import annotations

import math

import numpy as np

from hpcml.apps.flux.grid import MapInfo, SphereGrid
from hpcml.apps.flux.layout import Layout
from hpcml.config import ConfigError

__all__ = [
    "bipolar_map",
    "gaussian_blobs",
    "gaussian_spot",
    "load_map_block",
    "rotated",
    "seam_average",
    "soccer_ball",
    "soccer_u0",
]


def _owned_theta(lay: Layout) -> np.ndarray:
    g = lay.grid
    return g.t[lay.t0 + 1 : lay.t0 + lay.ny + 1]


def seam_average(fn, lay: Layout) -> np.ndarray:
    """Evaluate ``fn(t[:, None], p[None, :])`` on the owned block with the seam rule.

    ``fn`` gets float64 node coordinates and returns an array broadcast to
    ``(ny, nx)``.  The last unique column (the seam) is the mean of the values at
    ``p_1`` and ``p_{N_f}``.
    """
    g = lay.grid
    t = _owned_theta(lay)[:, None]
    k = np.arange(lay.p0, lay.p0 + lay.nx) + 2  # HipFT columns 2..M-1
    p = g.p[k][None, :]
    vals = np.array(np.broadcast_to(fn(t, p), (lay.ny, lay.nx)), dtype=np.float64)
    if k[-1] == g.M - 1:
        first = np.broadcast_to(fn(t, np.array([[g.p[1]]])), (lay.ny, 1))[:, 0]
        vals[:, -1] = 0.5 * (first + vals[:, -1])
    return vals


def soccer_u0(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """HipFT validation 1: ``Y_6^0 + sqrt(14/11) Y_6^5`` (real orthonormal harmonics)."""
    x = np.cos(t)
    s = np.sin(t)
    x2 = x * x
    p6 = (231.0 * x2 * x2 * x2 - 315.0 * x2 * x2 + 105.0 * x2 - 5.0) / 16.0
    y60 = math.sqrt(13.0 / (4.0 * math.pi)) * p6
    s5 = s * s * s * s * s
    y65 = -2.366619162231752 * x * s5 * np.cos(5.0 * p)
    return y60 + math.sqrt(14.0 / 11.0) * y65


def soccer_ball(out: np.ndarray, lay: Layout) -> None:
    """Fill the owned block of every realization with the soccer-ball field."""
    vals = seam_average(soccer_u0, lay)
    out[:, lay.i0 : lay.i1, lay.c0 : lay.c1] = vals[None]


def gaussian_blobs(out: np.ndarray, lay: Layout, width: float) -> None:
    """HipFT validation 2 at t = 0: two opposite blobs at colatitude pi/4, 1/sin(t) factor."""
    g = lay.grid
    rows = np.arange(lay.t0 + 1, lay.t0 + lay.ny + 1)
    s = g.st_i[rows][:, None]  # 0 on the pole rows

    def fn(t: np.ndarray, p: np.ndarray) -> np.ndarray:
        d = (t - 0.7853981633974483) ** 2
        return s * (
            -np.exp(-(d + (p - 1.5707963267948966) ** 2) / width) + np.exp(-(d + (p - 4.71238898038469) ** 2) / width)
        )

    out[:, lay.i0 : lay.i1, lay.c0 : lay.c1] = seam_average(fn, lay)[None]


def bipolar_map(out: np.ndarray, lay: Layout, regions: int, seed: int, peak: float, polar: float) -> None:
    """A generated solar-like map: tilted bipolar active regions plus a polar dipole.

    Regions follow Hale's and Joy's laws (opposite leading polarity in the two
    hemispheres, tilt ~ 0.5 x latitude) at latitudes 5-35 degrees; the layout is
    drawn from ``seed`` identically on every rank, so any split gives the same map.
    """
    rng = np.random.default_rng(seed)
    lat = np.radians(rng.uniform(5.0, 35.0, regions)) * rng.choice([-1.0, 1.0], regions)
    lon = rng.uniform(0.0, 2 * math.pi, regions)
    sep = np.radians(rng.uniform(3.0, 8.0, regions))
    size = np.radians(rng.uniform(1.5, 3.0, regions))
    amp = peak * rng.uniform(0.4, 1.0, regions)

    def fn(t: np.ndarray, p: np.ndarray) -> np.ndarray:
        f = polar * np.cos(t) * np.abs(np.cos(t)) ** 6
        for n in range(regions):
            tilt = 0.5 * abs(lat[n])
            sign = 1.0 if lat[n] > 0 else -1.0  # leading polarity flips between hemispheres
            for pol, off in ((sign, 0.5), (-sign, -0.5)):
                c_lat = lat[n] - off * sep[n] * math.sin(tilt) * (1 if lat[n] > 0 else -1)
                c_lon = lon[n] + off * sep[n] * math.cos(tilt)
                colat = math.pi / 2 - c_lat
                # great-circle distance to the spot centre
                cosd = np.cos(t) * math.cos(colat) + np.sin(t) * math.sin(colat) * np.cos(p - c_lon)
                d = np.arccos(np.clip(cosd, -1.0, 1.0))
                f = f + pol * amp[n] * np.exp(-((d / size[n]) ** 2))
        return f

    out[:, lay.i0 : lay.i1, lay.c0 : lay.c1] = seam_average(fn, lay)[None]


def load_map_block(out: np.ndarray, lay: Layout, info: MapInfo, r_start: int, n_real: int) -> bool:
    """Read this rank's hyperslab of a HipFT map (2-D: copied to every realization).

    Only the rank's rows and columns are read (plus column 1 for the seam average).
    Returns whether every value read is finite (the caller agrees on it collectively).
    """
    import h5py

    g: SphereGrid = lay.grid
    if info.n_slices not in (1, n_real):
        raise ConfigError(
            f"map {info.path!r} holds {info.n_slices} realizations but realizations.n = {n_real}; "
            "a 3-D map needs one slice per realization (or use a 2-D map)"
        )
    rows = slice(lay.t0, lay.t0 + lay.ny)
    cols = slice(lay.p0 + 1, lay.p0 + lay.nx + 1)  # file columns of unique columns k = 2..M-1
    seam = lay.p0 + lay.nx == g.Np
    with h5py.File(info.path, "r") as fh:
        ds = fh[info.dataset]
        if ds.ndim == 2:
            block = np.asarray(ds[rows, cols], dtype=np.float64)[None]
            first = np.asarray(ds[rows, 0:1], dtype=np.float64)[None] if seam else None
            block = np.broadcast_to(block, (lay.nr, lay.ny, lay.nx)).copy()
            if first is not None:
                first = np.broadcast_to(first, (lay.nr, lay.ny, 1))
        else:
            rs = slice(r_start, r_start + lay.nr)
            block = np.asarray(ds[rs, rows, cols], dtype=np.float64)
            first = np.asarray(ds[rs, rows, 0:1], dtype=np.float64) if seam else None
    finite = bool(np.all(np.isfinite(block))) and (first is None or bool(np.all(np.isfinite(first))))
    if first is not None:
        block[:, :, -1] = 0.5 * (first[:, :, 0] + block[:, :, -1])
    out[:, lay.i0 : lay.i1, lay.c0 : lay.c1] = block
    return finite


def gaussian_spot(t: np.ndarray, p: np.ndarray, colat: float = 60.0, lon: float = 45.0, width: float = 15.0,
                  amp: float = 100.0) -> np.ndarray:  # fmt: skip
    """A Gaussian of B_r in great-circle distance: ``amp exp(-(d / width)^2)`` (angles in degrees)."""
    c0, l0 = math.radians(colat), math.radians(lon)
    centre = np.array([math.sin(c0) * math.cos(l0), math.sin(c0) * math.sin(l0), math.cos(c0)])
    x = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)])
    d = np.arccos(np.clip(np.tensordot(centre, x, 1), -1.0, 1.0))
    return amp * np.exp(-((d / math.radians(width)) ** 2))


def rotated(fn, t: np.ndarray, p: np.ndarray, axis: tuple[float, float], angle: float) -> np.ndarray:
    """``fn`` carried by a rigid rotation by ``angle`` (radians) about ``axis`` (colatitude, longitude in degrees).

    The exact solution of advection by :func:`~hpcml.apps.flux.flows.rigid_rotation`:
    ``B(x) = B0(R(-angle) x)`` (Rodrigues' formula), evaluated at the points ``t`` x ``p``.
    """
    al, be = (math.radians(a) for a in axis)
    a = np.array([math.sin(al) * math.cos(be), math.sin(al) * math.sin(be), math.cos(al)])[:, None, None]
    x = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)])
    c, s = math.cos(-angle), math.sin(-angle)
    xb = x * c + np.cross(a, x, axis=0) * s + a * np.sum(a * x, axis=0) * (1.0 - c)
    return fn(np.arccos(np.clip(xb[2], -1.0, 1.0)), np.arctan2(xb[1], xb[0]))
