"""The HipFT mesh on the sphere: nodes, half meshes, WENO and diagnostic weights.

Everything here is global and one-dimensional (a few thousand doubles), so every
rank builds it in full and slices what its block needs.  Arrays are indexed with
HipFT's **1-based** indices (element 0 is padding), which keeps the formulas of
the specification readable and makes the mapping from a rank's ghosted block to
global indices explicit (see :mod:`hpcml.apps.flux.layout`).

Layout (section 2 of the spec): ``N_t`` colatitude nodes with both poles,
``N_f`` longitude nodes with a one-point overlap (``p_1 = 0``, ``p_{N_f} = 2 pi``)
and in memory ``M = N_f + 1`` columns.  Only the ``N_f - 1`` columns
``k = 2 .. M-1`` are unique; the decomposition stores exactly those and the
periodic halo exchange plays the role of HipFT's ``PER`` copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.config import ConfigError

__all__ = [
    "D2R",
    "DIFF_FACTOR",
    "KMS_TO_RSH",
    "MS_TO_RSH",
    "PI",
    "RSUN2",
    "MapInfo",
    "SphereGrid",
    "read_file_info",
    "read_map_info",
]

PI = 3.1415926535897932
TWOPI = 6.2831853071795864
HALFPI = 1.5707963267948966
D2R = 0.017453292519943295
RSUN2 = 4.84416e21  # R_sun^2 in cm^2: code flux (G R_sun^2) -> Mx
KMS_TO_RSH = 0.005172413793103448  # km/s -> R_sun/h
MS_TO_RSH = 5.172413793103448e-06  # m/s -> R_sun/h
DIFF_FACTOR = 7.43162901307967e-09  # km^2/s -> R_sun^2/h
TWOPI_INV = 0.15915494309189535
SAFETY = 0.95
TINY = float(np.finfo(np.float64).tiny)
HUGE = float(np.finfo(np.float64).max)

# Column order of a per-face WENO coefficient row (face J between cells J-1 and J), in the
# form the kernels evaluate (kernels.flux._weno_side): the coefficients of the G+ part
# (b_{J-1}, a_{J-1}, r_p = dMC_{J-1}/dP_{J-1}, eps_{J-1}/4), those of the G- part (a_J, b_J,
# r_m = dCP_J/dM_J, eps_J/4) and k = b_J + a_{J-1}, the weight sum of both q1 stencils.
WENO_COLS = ("b_m", "a_m", "r_p", "eps4_m", "a_0", "b_0", "r_m", "eps4_0", "k")


@dataclass
class MapInfo:
    """Shape and scales of a HipFT map file (read on every rank, before any collective)."""

    path: str
    dataset: str
    shape: tuple[int, ...]  # h5py shape: (N_t, N_f) or (n_slices, N_t, N_f)
    p: np.ndarray  # phi scale, N_f values, float64 from the stored precision
    t: np.ndarray  # theta scale, N_t values

    @property
    def n_slices(self) -> int:
        """Number of 2-D slices (1 for a 2-D map)."""
        return 1 if len(self.shape) == 2 else int(self.shape[0])


def read_file_info(path: str | Path, what: str = "map", ndims: tuple[int, ...] = (2, 3)) -> MapInfo:
    """Open a HipFT HDF5 file and return its data set name, shape and scales.

    The file holds one data set plus dimension scales ``dim1`` (phi) and ``dim2``
    (theta).  Like HipFT's reader, the first member is the data and the next two
    the scales (when the scales are not named ``dim1``/``dim2``).  Scales must be
    finite and strictly increasing and match the data set's shape; no range is
    required (see :func:`read_map_info` for maps, which must span the sphere).

    Raises
    ------
    ConfigError
        If the file is missing, is not HDF5, or its data and scales do not fit.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist")
    try:
        fh = h5py.File(p, "r")
    except OSError as exc:
        raise ConfigError(f"{what} file {str(p)!r} is not a readable HDF5 file: {exc}") from None
    with fh:
        names = list(fh.keys())
        if not names:
            raise ConfigError(f"{what} file {str(p)!r} is empty (no data set)")
        data_name = "Data" if "Data" in fh else names[0]
        if "dim1" in fh and "dim2" in fh:
            s1, s2 = "dim1", "dim2"
        else:
            rest = [n for n in names if n != data_name]
            if len(rest) < 2:
                raise ConfigError(f"{what} file {str(p)!r}: expected a data set and two scales, found {names}")
            s1, s2 = rest[0], rest[1]
        ds = fh[data_name]
        if not isinstance(ds, h5py.Dataset) or ds.ndim not in ndims:
            want = " or ".join(f"{n}-D" for n in ndims)
            raise ConfigError(f"{what} file {str(p)!r}: data set {data_name!r} must be {want}")
        pscale = np.asarray(fh[s1][...], dtype=np.float64).ravel()
        tscale = np.asarray(fh[s2][...], dtype=np.float64).ravel()
        shape = tuple(int(n) for n in ds.shape)
    nt, nf = shape[-2], shape[-1]
    if len(pscale) != nf or len(tscale) != nt:
        raise ConfigError(
            f"{what} file {str(p)!r}: data set is {nt} (theta) x {nf} (phi) but the scales have "
            f"{len(tscale)} theta and {len(pscale)} phi values"
        )
    if not (np.all(np.isfinite(tscale)) and np.all(np.isfinite(pscale))):
        raise ConfigError(f"{what} file {str(p)!r}: scales must be finite")
    if np.any(np.diff(tscale) <= 0) or np.any(np.diff(pscale) <= 0):
        raise ConfigError(f"{what} file {str(p)!r}: scales must be strictly increasing")
    return MapInfo(str(p), data_name, shape, pscale, tscale)


def read_map_info(path: str | Path, what: str = "map") -> MapInfo:
    """A HipFT field map (initial or assimilation map): :func:`read_file_info` plus the grid rules.

    Both poles and the 0 = 2 pi overlap column are nodes, and the grid is at least 3 x 4.

    Raises
    ------
    ConfigError
        If the file cannot be read or does not describe a grid on the whole sphere.
    """
    info = read_file_info(path, what)
    p, tscale, pscale = info.path, info.t, info.p
    nt, nf = info.shape[-2], info.shape[-1]
    if nt < 3 or nf < 4:
        raise ConfigError(f"{what} file {p!r}: grid {nt} x {nf} is too small (need >= 3 x 4)")
    if abs(tscale[0]) > 1e-5 or abs(tscale[-1] - PI) > 1e-5:
        raise ConfigError(
            f"{what} file {p!r}: theta scale must run from 0 to pi (both poles are nodes), "
            f"got {tscale[0]!r} .. {tscale[-1]!r}"
        )
    if abs(pscale[0]) > 1e-5 or abs(pscale[-1] - TWOPI) > 1e-5:
        raise ConfigError(
            f"{what} file {p!r}: phi scale must run from 0 to 2 pi (overlap column included), "
            f"got {pscale[0]!r} .. {pscale[-1]!r}"
        )
    return info


def _one_based(values: np.ndarray, extra: int = 0) -> np.ndarray:
    out = np.zeros(len(values) + 1 + extra)
    out[1 : len(values) + 1] = values
    return out


@dataclass
class SphereGrid:
    """Global HipFT geometry (1-based arrays; index 0 unused).

    Parameters
    ----------
    t
        Colatitude nodes ``t_1..t_{N_t}`` (float64; exactly as stored in a map file).
    p
        Longitude nodes ``p_1..p_{N_f}``.
    weno_eps
        HipFT's ``weno_eps``: if > 0 it replaces the cell width as the WENO epsilon.
    """

    t_nodes: np.ndarray
    p_nodes: np.ndarray
    weno_eps: float = 0.0
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        t = np.asarray(self.t_nodes, dtype=np.float64)
        p = np.asarray(self.p_nodes, dtype=np.float64)
        self.Nt = nt_ = len(t)
        self.Nf = len(p)
        self.M = self.Nf + 1
        self.nt = nt_ + 1  # theta faces
        self.Np = self.Nf - 1  # unique phi columns (k = 2..M-1)
        self._theta(t)
        self._phi(p)
        self._weno()
        self._weights()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def uniform(cls, res_nt: int, res_np: int, weno_eps: float = 0.0) -> SphereGrid:
        """Generated grid: ``t_j = (j-1) pi/(N_t-1)``, ``p_k = (k-1) 2pi/(N_f-1)`` (integer x spacing)."""
        if res_nt < 3 or res_np < 4:
            raise ConfigError(f"grid.res_nt >= 3 and grid.res_np >= 4 are required, got {res_nt} x {res_np}")
        dth = PI / (res_nt - 1)
        dph = TWOPI / (res_np - 1)
        return cls(np.arange(res_nt) * dth, np.arange(res_np) * dph, weno_eps)

    def _theta(self, tn: np.ndarray) -> None:
        n, nt = self.Nt, self.nt
        t = _one_based(tn, 1)  # t[1..Nt]
        th = np.zeros(nt + 2)
        dth = np.zeros(nt + 2)
        for j in range(2, n + 1):
            th[j] = 0.5 * (t[j] + t[j - 1])
            dth[j] = t[j] - t[j - 1]
        th[1] = th[2] - dth[2]
        th[nt] = th[n] + dth[n]
        dth[1] = dth[2]
        dth[nt] = dth[n]
        dt = np.zeros(n + 2)
        dt[1 : n + 1] = th[2 : n + 2] - th[1 : n + 1]
        st = np.zeros(n + 2)
        ct = np.zeros(n + 2)
        st[1 : n + 1] = np.sin(t[1 : n + 1])
        ct[1 : n + 1] = np.cos(t[1 : n + 1])
        st[1] = st[n] = 0.0
        ct[1] = ct[n] = 1.0
        st_i = np.zeros(n + 2)
        st_i[2:n] = 1.0 / st[2:n]
        sth = np.zeros(nt + 2)
        cth = np.zeros(nt + 2)
        sth[1 : nt + 1] = np.sin(np.abs(th[1 : nt + 1]))
        cth[1 : nt + 1] = np.cos(th[1 : nt + 1])
        self.t, self.th, self.dth, self.dt = t, th, dth, dt
        self.st, self.ct, self.st_i, self.sth, self.cth = st, ct, st_i, sth, cth
        self.dt_i = np.zeros(n + 2)
        self.dt_i[1 : n + 1] = 1.0 / dt[1 : n + 1]
        self.dth_i = np.zeros(nt + 2)
        self.dth_i[1 : nt + 1] = 1.0 / dth[1 : nt + 1]

    def _phi(self, pn: np.ndarray) -> None:
        nf, m = self.Nf, self.M
        p = np.zeros(m + 2)
        p[1 : nf + 1] = pn
        p[m] = p[2] + TWOPI
        ph = np.zeros(m + 2)
        dph = np.zeros(m + 2)
        for k in range(2, m + 1):
            ph[k] = 0.5 * (p[k] + p[k - 1])
            dph[k] = p[k] - p[k - 1]
        ph[1] = ph[nf] - TWOPI
        dph[1] = dph[nf]
        dp = np.zeros(m + 2)
        dp[1:m] = ph[2 : m + 1] - ph[1:m]
        dp[m] = dp[2]
        self.p, self.ph, self.dph, self.dp = p, ph, dph, dp
        self.dp_i = np.zeros(m + 2)
        self.dp_i[1 : m + 1] = 1.0 / dp[1 : m + 1]
        self.dph_i = np.zeros(m + 2)
        self.dph_i[1 : m + 1] = 1.0 / dph[1 : m + 1]

    @staticmethod
    def _weno_1d(h: np.ndarray, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Non-uniform WENO3 coefficients for cells ``lo..hi`` (1-based) of widths ``h``."""
        out = {k: np.zeros(len(h)) for k in ("a", "b", "dM", "dCP", "dP", "dMC")}
        for m in range(lo, hi + 1):
            hm, h0, hp = h[m - 1], h[m], h[m + 1]
            big = hm + h0 + hp
            out["a"][m] = h0 / (h0 + hp)
            out["b"][m] = h0 / (hm + h0)
            out["dM"][m] = hm / big
            out["dCP"][m] = (h0 + hp) / big
            out["dP"][m] = hp / big
            out["dMC"][m] = (hm + h0) / big
        return out

    @staticmethod
    def _weno_row(c: dict[str, np.ndarray], eps: np.ndarray, jm: int, j0: int) -> tuple[float, ...]:
        """The :data:`WENO_COLS` row of the face between cells ``jm`` and ``j0``.

        Section 4.4's weights ``w0/(w0+w1)`` with ``w = d/(eps+beta)^2`` are formed as
        ``s1/(s1 + r*s0)`` with ``s = (eps/4 + beta/4)^2`` (``r = d1/d0``; the factor 16
        is exact and cancels) and ``q1 = k*c + bo*(oth - c)``: the same values with six
        multiplications fewer per face half, which the advection kernel is bound by.
        """
        return (
            c["b"][jm], c["a"][jm], c["dMC"][jm] / c["dP"][jm], 0.25 * eps[jm],
            c["a"][j0], c["b"][j0], c["dCP"][j0] / c["dM"][j0], 0.25 * eps[j0],
            c["b"][j0] + c["a"][jm],
        )  # fmt: skip

    def _weno(self) -> None:
        n, m = self.Nt, self.M
        ncol = len(WENO_COLS)
        # theta: coefficients for m = 2..nt-2 (= 2..N_t-1), epsilon = cell width.
        c = self._weno_1d(self.dt, 2, n - 1)
        eps_t = self.dt.copy() if self.weno_eps <= 0 else np.full_like(self.dt, self.weno_eps)
        wt = np.zeros((n + 2, ncol))
        for big_j in range(3, n):
            wt[big_j] = self._weno_row(c, eps_t, big_j - 1, big_j)
        # phi: coefficients for m = 2..M-1, then PER; epsilon_1 = dp_1 (not a PER copy).
        c = self._weno_1d(self.dp, 2, m - 1)
        for arr in c.values():
            arr[1] = arr[m - 1]
            arr[m] = arr[2]
        eps_p = self.dp.copy() if self.weno_eps <= 0 else np.full_like(self.dp, self.weno_eps)
        wp = np.zeros((m + 2, ncol))
        for big_k in range(2, m):
            wp[big_k] = self._weno_row(c, eps_p, big_k - 1, big_k)
        self.weno_t, self.weno_p = wt, wp

    def _weights(self) -> None:
        n, nf, m = self.Nt, self.Nf, self.M
        t, dt, dth, dph, dp = self.t, self.dt, self.dth, self.dph, self.dp
        wt = np.zeros(n + 2)
        wt[2:n] = np.sin(t[2:n]) * dt[2:n]
        tn, ts = 0.5 * (t[1] + t[2]), 0.5 * (t[n - 1] + t[n])
        wt[1] = 0.25 * math.sin(tn) * dth[2]
        wt[n] = 0.25 * math.sin(ts) * dth[n]
        sdip = np.zeros(n + 2)
        cdip = np.zeros(n + 2)
        sdip[1 : n + 1] = np.sin(t[1 : n + 1])
        cdip[1 : n + 1] = np.cos(t[1 : n + 1])
        sdip[1], cdip[1] = math.sin(tn), math.cos(tn)
        sdip[n], cdip[n] = math.sin(ts), math.cos(ts)
        self.w_t, self.sdip, self.cdip = wt, sdip, cdip
        # Per unique column (k = 2..M-1); column M-1 (= N_f) is the physical point of
        # column 1 too, so it carries both trapezoid halves (dph_1 = dph_{N_f}).
        half = 0.5 * dph[nf]
        wp = np.zeros(m + 2)
        wp[2 : m - 1] = dp[2 : m - 1]
        wp[m - 1] = half + 0.5 * dph[1]
        cw = np.zeros(m + 2)
        sw = np.zeros(m + 2)
        cw[2 : m - 1] = np.cos(self.p[2 : m - 1]) * dp[2 : m - 1]
        sw[2 : m - 1] = np.sin(self.p[2 : m - 1]) * dp[2 : m - 1]
        cw[m - 1] = math.cos(self.p[1]) * 0.5 * dph[1] + math.cos(self.p[nf]) * half
        sw[m - 1] = math.sin(self.p[1]) * 0.5 * dph[1] + math.sin(self.p[nf]) * half
        self.w_p, self.cos_w, self.sin_w = wp, cw, sw
        # The min/max and validation sums run over k = 1..N_f-1: the seam point is
        # represented by column 1, i.e. at p_1 (not p_{N_f}).
        prep = self.p.copy()
        prep[m - 1] = self.p[1]
        self.p_rep = prep

    # -- convenience ----------------------------------------------------------------------

    def face_col(self, k: np.ndarray | int) -> Any:
        """Map any phi face index to its representative in ``2..M-1`` (face M is face 2)."""
        return (np.asarray(k) - 2) % self.Np + 2

    def describe(self) -> dict[str, Any]:
        """Small summary for logs and output attributes."""
        return {"n_theta": self.Nt, "n_phi": self.Nf, "unique_phi": self.Np}
