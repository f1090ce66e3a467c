"""Decomposition of the flux-transport state: ensemble groups x theta x phi blocks.

``COMM_WORLD`` is split into ``E`` ensemble groups of equal size (``comm.Split``);
group ``g`` owns a contiguous block of realizations.  Inside a group the sphere is
decomposed by a :class:`~hpcml.decomp.CartDecomp` over the index space
``(n_local_realizations, N_t, N_f - 1)`` with one rank along the realization axis,
periodic in phi, halo ``(0, H, H)``.  Only the unique longitude columns are stored;
the periodic halo exchange reproduces HipFT's ``PER`` copies exactly.

Local ghosted index ``i`` (rows) is HipFT row ``j = start_t + 1 + i - H``; local
column ``c`` is HipFT column ``k = start_p + 2 + c - H`` (wrapped into ``2..M-1``).
The polar caps are updated from sums over a whole pole row: the ranks that own a
pole row gather that row's terms along phi (``Allgatherv`` in a fixed order) and
every one of them sums the full row sequentially, in HipFT's column order, so the
result is bit-identical for every split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.apps.flux.grid import SphereGrid
from hpcml.config import ConfigError
from hpcml.decomp import CartDecomp, block_range
from hpcml.distarray import DistArray

__all__ = ["HALO", "Layout", "choose_split"]

HALO = 3  # WENO3 fluxes need 2 cells; the Lax-Friedrichs alpha spans 6 faces: 3 ghosts


def choose_split(size: int, n_real: int, ensemble: int, dims: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """Ensemble groups and (theta, phi) ranks per group for ``size`` ranks.

    ``ensemble = 0`` picks the largest divisor of ``size`` not above ``n_real``
    (realizations are embarrassingly parallel, so they are split first).
    ``dims = (0, 0)`` lets ``MPI.Compute_dims`` choose the theta x phi grid.
    """
    if ensemble < 0:
        raise ConfigError(f"decomposition.ensemble must be >= 0, got {ensemble}")
    if ensemble == 0:
        ensemble = max(e for e in range(1, size + 1) if size % e == 0 and e <= max(n_real, 1))
    if size % ensemble:
        raise ConfigError(f"decomposition.ensemble = {ensemble} does not divide the {size} ranks")
    if ensemble > n_real:
        raise ConfigError(f"decomposition.ensemble = {ensemble} is more than the {n_real} realizations")
    per = size // ensemble
    pt, pp = (int(d) for d in dims)
    if pt < 0 or pp < 0:
        raise ConfigError(f"decomposition.dims must be >= 0, got {list(dims)}")
    if pt == 0 or pp == 0:
        fixed = pt or pp
        if fixed and per % fixed:
            raise ConfigError(
                f"decomposition.dims = {[pt, pp]}: {fixed} does not divide the {per} ranks of an ensemble group"
            )
        pt, pp = MPI.Compute_dims(per, [pt, pp])
    if pt * pp != per:
        raise ConfigError(
            f"decomposition.dims = {[pt, pp]} needs {pt * pp} ranks per ensemble group, "
            f"but {size} ranks / {ensemble} groups = {per}"
        )
    return ensemble, (pt, pp)


@dataclass
class Layout:
    """Who owns what, the communicators, and local slices of the global geometry."""

    grid: SphereGrid
    n_real: int
    world: Any
    ensemble: int
    dims: tuple[int, int]

    def __post_init__(self) -> None:
        g = self.grid
        size, rank = self.world.Get_size(), self.world.Get_rank()
        per = size // self.ensemble
        self.group = rank // per
        self.group_comm = self.world.Split(self.group, rank)
        self.r_start, self.nr = block_range(self.n_real, self.ensemble, self.group)
        pt, pp = self.dims
        if g.Nt // pt < HALO or g.Np // pp < HALO:
            raise ConfigError(
                f"grid {g.Nt} x {g.Np} (unique columns) is too small for {pt} x {pp} ranks: every block "
                f"needs at least {HALO} rows and columns; use fewer ranks"
            )
        self.decomp = CartDecomp(
            (self.nr, g.Nt, g.Np),
            self.group_comm,
            dims=(1, pt, pp),
            periodic=(False, False, True),
            halo=(0, HALO, HALO),
        )
        d = self.decomp
        self.cart = d.cart
        self.ct, self.cp = d.coords[1], d.coords[2]
        self.t0, self.ny = d.start[1], d.local_shape[1]
        self.p0, self.nx = d.start[2], d.local_shape[2]
        self.NY, self.NX = self.ny + 2 * HALO, self.nx + 2 * HALO
        self.i0, self.i1 = HALO, HALO + self.ny  # owned rows (local)
        self.c0, self.c1 = HALO, HALO + self.nx  # owned cols (local)
        self.j_of_row = self.t0 + 1 + np.arange(self.NY) - HALO  # HipFT row / face index
        self.k_raw = self.p0 + 2 + np.arange(self.NX) - HALO
        self.k_of_col = g.face_col(self.k_raw)  # wrapped into 2..M-1
        self.owns_north = self.ct == 0
        self.owns_south = self.ct == pt - 1
        self.inorth = HALO if self.owns_north else -1  # local row of j = 1
        self.isouth = HALO + self.ny - 1 if self.owns_south else -1  # local row of j = N_t
        # Ranks along phi that share this theta block: they reduce pole rows together.
        self.row_comm = self.cart.Sub([False, False, True])
        counts = self.row_comm.allgather(self.nx)
        self.row_counts = np.array(counts, dtype=np.int64)
        self.row_displs = np.concatenate(([0], np.cumsum(self.row_counts)[:-1]))
        self.group_root = self.group_comm.Get_rank() == 0
        # The same blocks seen from the whole world: dims (E, pt, pp) over (realization,
        # theta, phi) split realizations exactly like the ensemble groups (block_range,
        # rank-major order), so a group block is also a world block (used for I/O).
        self.world_decomp = CartDecomp(
            (self.n_real, g.Nt, g.Np), self.world, dims=(self.ensemble, pt, pp), periodic=(False, False, True),
            halo=(0, HALO, HALO),
        )  # fmt: skip
        same = self.world_decomp.start == (self.r_start, self.t0, self.p0) and self.world_decomp.local_shape == (
            self.nr, self.ny, self.nx,
        )  # fmt: skip
        if not self.world.allreduce(same, op=MPI.LAND):
            raise RuntimeError("internal: world and ensemble-group decompositions disagree")
        self._decomps: dict[int, CartDecomp] = {self.nr: self.decomp}  # by stacked planes
        self._gathered: dict[str, np.ndarray] = {}
        self._inner: dict[int, tuple[int, int] | None] = {}

    # -- global <-> local --------------------------------------------------------------------
    def inner_rows(self, nrows: int) -> tuple[int, int] | None:
        """Local rows ``(ia, ib)`` of the owned rows with HipFT index ``2..nrows-1`` (None if none).

        Those rows are contiguous; the result is kept (asked for every step).
        """
        found = self._inner.get(nrows, False)
        if found is False:
            j = self.j_of_row
            rows = np.arange(self.i0, self.i1)
            inner = rows[(j[rows] >= 2) & (j[rows] <= nrows - 1)]
            found = self._inner[nrows] = (int(inner[0]), int(inner[-1]) + 1) if len(inner) else None
        return found

    def rows(self, arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Local (ghosted) values of a 1-based theta array valid on ``lo..hi`` (0 elsewhere)."""
        j = self.j_of_row
        ok = (j >= lo) & (j <= hi)
        out = np.zeros(self.NY)
        out[ok] = arr[j[ok]]
        return out

    def cols(self, arr: np.ndarray) -> np.ndarray:
        """Local (ghosted) values of a 1-based phi array, periodic over the unique columns."""
        return np.ascontiguousarray(arr[self.k_of_col])

    def row_table(self, table: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Local rows of a per-face coefficient table (zeros outside ``lo..hi``)."""
        j = self.j_of_row
        ok = (j >= lo) & (j <= hi)
        out = np.zeros((self.NY, table.shape[1]))
        out[ok] = table[j[ok]]
        return out

    def col_table(self, table: np.ndarray) -> np.ndarray:
        """Local columns of a per-face phi table (face M is face 2: periodic)."""
        return np.ascontiguousarray(table[self.k_of_col])

    # -- arrays ----------------------------------------------------------------------------
    def decomp_for(self, mult: int) -> CartDecomp:
        """A decomposition of ``mult`` stacked fields per realization (same blocks, one exchange)."""
        return self.decomp_of(mult * self.nr)

    def decomp_of(self, planes: int) -> CartDecomp:
        """A decomposition of ``planes`` stacked 2-D fields on this rank's block (one exchange)."""
        if planes not in self._decomps:
            g = self.grid
            self._decomps[planes] = CartDecomp(
                (planes, g.Nt, g.Np),
                self.group_comm,
                dims=(1, *self.dims),
                periodic=(False, False, True),
                halo=(0, HALO, HALO),
            )
        return self._decomps[planes]

    def zeros(self, mult: int = 1) -> DistArray:
        """A ghosted field of ``mult`` x ``nr`` realizations, zero filled."""
        return DistArray.zeros(self.decomp_for(mult), dtype="f8")

    # -- pole rows -----------------------------------------------------------------------
    def row_sum(self, terms: np.ndarray) -> np.ndarray:
        """Sum per-column pole terms ``(n, nx)`` over the whole pole row, in column order.

        Collective over the ranks of this theta block (``row_comm``); every caller
        gets the same bits whatever the phi split.
        """
        from hpcml.kernels.flux import sequential_row_sums

        if self.row_comm.Get_size() == 1:
            return sequential_row_sums(terms)
        n = terms.shape[0]
        send = np.ascontiguousarray(terms.T)  # (nx, n): concatenation over ranks = column order
        full = np.empty((self.grid.Np, n))
        self.row_comm.Allgatherv(send, [full, self.row_counts * n, self.row_displs * n, MPI.DOUBLE])
        return sequential_row_sums(np.ascontiguousarray(full.T))

    def gather_group(self, arr: np.ndarray, mult: int = 1) -> np.ndarray | None:
        """The group's global field ``(mult*nr, N_t, Np)`` on the group root (None elsewhere)."""
        da = DistArray(self.decomp_for(mult), arr)
        return da.gather(0)

    def free(self) -> None:
        """Release the communicators this layout created."""
        for d in self._decomps.values():
            d.free()
        self.world_decomp.free()
        self.row_comm.Free()
        self.group_comm.Free()
