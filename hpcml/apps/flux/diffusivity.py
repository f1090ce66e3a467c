"""Diffusivity that varies over the sphere: a map file and HipFT's grid-based term (section 6.1).

HipFT's diffusivity on the half-half mesh ``(th_j, ph_k)`` is
``D = factor * (D_r + D_file + D_grid)``: a per-realization constant plus a part
that is the same for every realization.  This module builds that common part,
``E = factor * (D_file + D_grid)``, where the operator needs it:

* ``phi_face[i, c]`` = ``(E[j, k] + E[j+1, k]) / 2`` on the west phi face of cell
  ``(j, k)`` (the east face is ``phi_face[i, c+1]``);
* ``theta_face[i, c]`` = ``(E[j, k] + E[j, k+1]) / 2`` on the north theta face (the
  south face is ``theta_face[i+1, c]``);
* ``pole_north[c]`` = ``E[1, k] + E[2, k]`` and ``pole_south[c]`` = ``E[N_t, k] + E[nt, k]``,
  the pole-cap sums' coefficients,

so a five-point coefficient is ``(factor * D_r + face value) * geometry``.  The file is
interpolated as HipFT does (bilinear, 0 outside its scales), then made periodic
(column 1 = column ``N_f``, column ``M`` = column 2) and given ghost rows beyond the
poles that make each pole's face values average to the row's mean; the grid term
is ``dth_j^2 + (dph_k sth_j)^2``.  Only the points of the rank's block are computed
(the pole means need the two rows next to the poles, 1-D).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from hpcml.apps.flux.grid import TWOPI_INV, SphereGrid
from hpcml.apps.flux.inputs import Field2D
from hpcml.apps.flux.layout import Layout

__all__ = ["VariableDiffusivity"]


class VariableDiffusivity:
    """The realization-independent diffusivity of one rank's block, on faces (code units).

    Parameters
    ----------
    grid, lay
        The global grid and this rank's layout.
    field
        The diffusivity file (km^2/s on its own grid), or None.
    use_grid
        Add HipFT's grid-based term ``dth^2 + (dph sin th)^2``.
    factor
        ``diffusion_coef_factor`` (km^2/s -> R_sun^2/h by default).
    """

    def __init__(self, grid: SphereGrid, lay: Layout, field: Field2D | None, use_grid: bool, factor: float) -> None:
        g = grid
        self.g, self.lay, self.field, self.use_grid, self.factor = g, lay, field, use_grid, factor
        nt = g.nt
        if field is not None:
            # mean of the file's values on faces 2 and N_t (for the ghost rows beyond the poles)
            ks = np.arange(2, g.Nf + 1)
            rows = self._file_at(np.array([2, g.Nt]), ks)
            w = g.dph[ks]
            self.n_mean = math.fsum((rows[0] * w).tolist()) * TWOPI_INV
            self.s_mean = math.fsum((rows[1] * w).tolist()) * TWOPI_INV
        # face values on the block's rows j (and j+1) and columns k (and k+1), raw HipFT indices
        j = lay.j_of_row
        k = lay.k_raw
        jrow = np.clip(np.concatenate((j, [j[-1] + 1])), 1, nt)  # face rows of the block (+1 below)
        kcol = np.concatenate((k, [k[-1] + 1]))
        e = self._total(jrow, kcol)  # (NY + 1, NX + 1): E at (th_j, ph_k)
        ok_t = (j >= 2) & (j <= g.Nt - 1)  # rows whose cells use the five-point operator
        self.phi_face = np.where(ok_t[:, None], 0.5 * (e[:-1, :-1] + e[1:, :-1]), 0.0)
        self.theta_face = np.where(((j >= 2) & (j <= g.Nt))[:, None], 0.5 * (e[:-1, :-1] + e[:-1, 1:]), 0.0)
        self.pole_north = np.zeros(lay.NX)
        self.pole_south = np.zeros(lay.NX)
        if lay.owns_north:
            self.pole_north = self._total(np.array([1, 2]), k).sum(axis=0)
        if lay.owns_south:
            self.pole_south = self._total(np.array([g.Nt, nt]), k).sum(axis=0)

    def on(self, dev: Any) -> SimpleNamespace:
        """The face arrays the stage kernel reads, on ``dev`` (plus the CPU kernel's scratch rows)."""
        from hpcml.kernels.flux import diff_scratch

        return SimpleNamespace(
            phi_face=dev.put(self.phi_face),
            theta_face=dev.put(self.theta_face),
            scratch=None if dev.on_device else diff_scratch(self.lay.nx),
        )

    # -- HipFT's D_file and D_grid at raw indices ------------------------------------------------
    def _wrap_cols(self, k: np.ndarray) -> np.ndarray:
        """Periodicity of the file part: column 1 is column N_f, column M is column 2."""
        g = self.g
        return (np.asarray(k) - 2) % (g.Nf - 1) + 2  # into 2..N_f

    def _file_at(self, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        g = self.g
        return self.field.at(g.th[j], g.ph[self._wrap_cols(k)])

    def _file(self, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        """``D_file`` at face rows ``j`` (1..nt, ghost rows by the pole rule) and columns ``k``."""
        g = self.g
        jj = np.clip(j, 2, g.Nt)
        vals = self._file_at(jj, k)
        out = vals.copy()
        out[j <= 1] = 2.0 * self.n_mean - vals[j <= 1]
        out[j >= g.nt] = 2.0 * self.s_mean - vals[j >= g.nt]
        return out

    def _grid_term(self, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        g = self.g
        kk = np.where((k >= 1) & (k <= g.M), k, self._wrap_cols(k))
        return g.dth[j][:, None] ** 2 + (g.dph[kk][None, :] * g.sth[j][:, None]) ** 2

    def _total(self, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        """``factor * (D_file + D_grid)`` at face rows ``j`` x columns ``k`` (raw indices)."""
        out = np.zeros((len(j), len(k)))
        if self.field is not None:
            out = out + self._file(j, k)
        if self.use_grid:
            out = out + self._grid_term(j, k)
        return self.factor * out
