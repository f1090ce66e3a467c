"""Finite-difference stencils on arrays that carry ghost layers.

Conventions (shared with :mod:`hpcml.distarray` and the halo exchange):

* ``u`` carries ``halo`` ghost layers on every side of every axis, so
  ``u.shape[d] == interior_shape[d] + 2*halo``.  The stencils have radius 1
  and read only the innermost ghost layer.
* Results are written to the interior cells of ``out`` (same ghosted shape as
  ``u``, must not overlap it); ``out``'s ghost cells are never touched.
* ``spacing`` is one float or one per axis (``h_d``).
* ``region`` splits the interior so that halo exchange can overlap work:
  ``"interior"`` are the interior cells at distance >= 1 from the interior's
  edge (their stencil reads no ghost cell: compute them while the halos are in
  flight); ``"boundary"`` are the remaining interior cells (a frame one cell
  wide: compute them after the exchange); ``"all"`` is their union.  The two
  parts never overlap; :func:`region_boxes` lists them as index boxes.

Operators:

* 5-point (2-D) / 7-point (3-D) Laplacian:
  ``sum_d (u[i+e_d] - 2 u[i] + u[i-e_d]) / h_d^2``.
* 9-point (2-D, equal spacing): the isotropic compact Laplacian
  ``(1/(6 h^2)) [[1, 4, 1], [4, -20, 4], [1, 4, 1]]`` (reads corner ghosts).
* Explicit diffusion (heat) step: ``out = u + sum_d c_d (u[i+e_d] - 2 u[i] + u[i-e_d])``
  with ``c_d = alpha dt / h_d^2`` (the 5/7-point operator, fused into one pass).
* Jacobi step for ``-lap(u) = f``:
  ``out = (sum_d (u[i+e_d] + u[i-e_d]) / h_d^2 + f[i]) / (sum_d 2 / h_d^2)``.

CPU kernels are Numba loops parallel over the first axis that walk whole rows
through unit-stride views (so LLVM vectorises them) and make no temporaries;
GPU / simulator kernels are Numba-CUDA, one thread per cell.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import cuda, njit, prange
from numba.np.ufunc import parallel as numba_parallel

from hpcml.backend import resolve_backend

from . import _tuning
from ._common import FLOAT_DTYPES, FM_CONTRACT, check_same_dtype, check_writeable, launch, spacing_tuple
from ._intrinsics import address, prefer_256_bit_vectors, prefetch, stream_store

__all__ = ["REGIONS", "describe_variant", "diffusion_step", "jacobi_step", "laplacian", "region_boxes"]

REGIONS = ("all", "interior", "boundary")

Box = tuple[tuple[int, ...], tuple[int, ...]]

# ---------------------------------------------------------------- Numba CPU ---
# Each row is read through views shifted by -1/0/+1 that start at index 0, so
# the inner loop is a plain unit-stride loop without wraparound checks.


@njit(cache=True)
def _rows2(u, i, j0, j1):  # pragma: no cover - compiled
    # north, south, west, centre, east rows of cells (i, j0:j1)
    return u[i - 1, j0:j1], u[i + 1, j0:j1], u[i, j0 - 1 : j1 - 1], u[i, j0:j1], u[i, j0 + 1 : j1 + 1]


@njit(cache=True, inline="always")
def _rows3(uf, b, plane, row, n):  # pragma: no cover - compiled
    # The 7 rows of n cells starting at flat index b of a C-ordered 3-D array seen as 1-D
    # ``uf``: axis-0 pair, axis-1 pair, west, centre, east.  Slices of the flat array cost
    # less per row than 3-D indexing (no per-axis wraparound and bounds arithmetic); with
    # rows of a few hundred cells that overhead was a fifth of the sweep.
    return (
        uf[b - plane : b - plane + n],
        uf[b + plane : b + plane + n],
        uf[b - row : b - row + n],
        uf[b + row : b + row + n],
        uf[b - 1 : b - 1 + n],
        uf[b : b + n],
        uf[b + 1 : b + 1 + n],
    )


@njit(cache=True, inline="always")
def _stream_span(o, stream):  # pragma: no cover - compiled
    # (a, b): a row sweep writes o[:a] and o[b:] with plain stores and o[a:b] with
    # streaming stores - the whole 64-byte lines from the first 64-byte aligned
    # element (see _intrinsics.stream_store).  Without streaming, when the elements are
    # not adjacent (a view with a step), or when they are not aligned to their size (a
    # buffer viewed at an odd offset, where no element starts a line), (n, n).
    n = o.size
    addr = address(o)
    if not stream or o.strides[0] != o.itemsize or addr % o.itemsize:
        return n, n
    a = min(n, ((-addr) % 64) // o.itemsize)
    return a, a + ((n - a) * o.itemsize // 64) * (64 // o.itemsize)


@njit(parallel=True, cache=True, fastmath=FM_CONTRACT)
def _lap5_cpu(u, out, i0, i1, j0, j1, cx, cy, cc, stream):  # pragma: no cover - compiled
    for i in prange(i0, i1):
        un, us, uw, uc, ue = _rows2(u, i, j0, j1)
        o = out[i, j0:j1]
        a, b = _stream_span(o, stream)
        for j in range(a):
            o[j] = cx * (un[j] + us[j]) + cy * (uw[j] + ue[j]) + cc * uc[j]
        # the rest through views starting at a: indices from 0 keep the loads contiguous
        un, us, uw, uc, ue, o = un[a:], us[a:], uw[a:], uc[a:], ue[a:], o[a:]
        for j in range(b - a):
            stream_store(o, j, cx * (un[j] + us[j]) + cy * (uw[j] + ue[j]) + cc * uc[j])
        for j in range(b - a, o.size):
            o[j] = cx * (un[j] + us[j]) + cy * (uw[j] + ue[j]) + cc * uc[j]


@njit(parallel=True, cache=True, fastmath=FM_CONTRACT)
def _lap9_cpu(u, out, i0, i1, j0, j1, ce, ck, cc, stream):  # pragma: no cover - compiled
    # Without streaming stores, two rows per work item: rows i and i+1 share the 6 loads
    # of their two middle input rows (12 loads for 2 cells instead of 18; in cache 1.25x
    # faster, same bits).  Streaming stores need each output row's own 64-byte alignment,
    # so with them every work item is one row.
    per = 1 if stream else 2
    for p in prange((i1 - i0 + per - 1) // per):
        prefer_256_bit_vectors()  # six of the nine rows are shifted (see _intrinsics.prefer_256_bit_vectors)
        i = i0 + per * p
        if per == 2 and i + 1 < i1:
            r0w, r0c, r0e = u[i - 1, j0 - 1 : j1 - 1], u[i - 1, j0:j1], u[i - 1, j0 + 1 : j1 + 1]
            r1w, r1c, r1e = u[i, j0 - 1 : j1 - 1], u[i, j0:j1], u[i, j0 + 1 : j1 + 1]
            r2w, r2c, r2e = u[i + 1, j0 - 1 : j1 - 1], u[i + 1, j0:j1], u[i + 1, j0 + 1 : j1 + 1]
            r3w, r3c, r3e = u[i + 2, j0 - 1 : j1 - 1], u[i + 2, j0:j1], u[i + 2, j0 + 1 : j1 + 1]
            o1 = out[i, j0:j1]
            o2 = out[i + 1, j0:j1]
            for j in range(j1 - j0):
                w1, c1, e1 = r1w[j], r1c[j], r1e[j]
                w2, c2, e2 = r2w[j], r2c[j], r2e[j]
                o1[j] = ce * (r0c[j] + c2 + w1 + e1) + ck * (r0w[j] + r0e[j] + w2 + e2) + cc * c1
                o2[j] = ce * (c1 + r3c[j] + w2 + e2) + ck * (w1 + e1 + r3w[j] + r3e[j]) + cc * c2
        else:
            nn, ss, ww, uc, ee = _rows2(u, i, j0, j1)
            nw, ne = u[i - 1, j0 - 1 : j1 - 1], u[i - 1, j0 + 1 : j1 + 1]
            sw, se = u[i + 1, j0 - 1 : j1 - 1], u[i + 1, j0 + 1 : j1 + 1]
            o = out[i, j0:j1]
            a, b = _stream_span(o, stream)
            for j in range(a):
                o[j] = ce * (nn[j] + ss[j] + ww[j] + ee[j]) + ck * (nw[j] + ne[j] + sw[j] + se[j]) + cc * uc[j]
            nn, ss, ww, uc, ee, o = nn[a:], ss[a:], ww[a:], uc[a:], ee[a:], o[a:]
            nw, ne, sw, se = nw[a:], ne[a:], sw[a:], se[a:]
            for j in range(b - a):
                v = ce * (nn[j] + ss[j] + ww[j] + ee[j]) + ck * (nw[j] + ne[j] + sw[j] + se[j]) + cc * uc[j]
                stream_store(o, j, v)
            for j in range(b - a, o.size):
                o[j] = ce * (nn[j] + ss[j] + ww[j] + ee[j]) + ck * (nw[j] + ne[j] + sw[j] + se[j]) + cc * uc[j]


@njit(parallel=True, cache=True, fastmath=FM_CONTRACT)
def _jac2_cpu(u, f, out, i0, i1, j0, j1, cx, cy, inv, stream):  # pragma: no cover - compiled
    for i in prange(i0, i1):
        un, us, uw, _, ue = _rows2(u, i, j0, j1)
        fc = f[i, j0:j1]
        o = out[i, j0:j1]
        a, b = _stream_span(o, stream)
        for j in range(a):
            o[j] = (cx * (un[j] + us[j]) + cy * (uw[j] + ue[j]) + fc[j]) * inv
        un, us, uw, ue, fc, o = un[a:], us[a:], uw[a:], ue[a:], fc[a:], o[a:]
        for j in range(b - a):
            stream_store(o, j, (cx * (un[j] + us[j]) + cy * (uw[j] + ue[j]) + fc[j]) * inv)
        for j in range(b - a, o.size):
            o[j] = (cx * (un[j] + us[j]) + cy * (uw[j] + ue[j]) + fc[j]) * inv


@njit(cache=True, inline="always")
def _tile(w, i0, i1, j0, j1, tj, nchunk):  # pragma: no cover - compiled
    # Work item w of a blocked 3-D sweep: its i range and its j tile (see _tiles_3d).
    ja = j0 + (w // nchunk) * tj
    c = w % nchunk
    ni = i1 - i0
    return i0 + c * ni // nchunk, i0 + (c + 1) * ni // nchunk, ja, min(j1, ja + tj)


@njit(cache=True, inline="always")
def _next_row(i, j, ja, jb, ny, row, k0):  # pragma: no cover - compiled
    # Flat index of the row a blocked 3-D sweep visits after row (i, j): the next j of the
    # tile, or the tile's first j on the next i.
    if j + 1 < jb:
        return (i * ny + j + 1) * row + k0
    return ((i + 1) * ny + ja) * row + k0


@njit(cache=True, inline="always")
def _prefetch_row(af, b, n):  # pragma: no cover - compiled
    # Every cache line of af[b : b + n] (when it lies inside af).
    if b >= 0 and b + n <= af.size:
        for q in range(0, n, max(1, 64 // af.itemsize)):
            prefetch(af, b + q)
        prefetch(af, b + n - 1)


@njit(cache=True, inline="always")
def _cell3(jacobi, ua, ub, un, us, uw, ue, g, cx, cy, cz, c4):  # pragma: no cover - compiled
    # One cell of a 3-D sweep from its six neighbours and g: the 7-point Laplacian
    # (g the cell itself, c4 its weight) or the Jacobi update (g the right-hand side,
    # c4 the inverse diagonal).
    s = cx * (ua + ub) + cy * (un + us) + cz * (uw + ue)
    if jacobi:
        return (s + g) * c4
    return s + c4 * g


def _sweep3_variant(jacobi: bool, stream: bool) -> Any:
    """The compiled 3-D sweep: Jacobi (``jacobi``) or 7-point, streaming stores (``stream``) or plain.

    ``jacobi`` and ``stream`` are constants of each variant rather than arguments
    (closure constants, which Numba folds and caches per value).  With the three loops
    of a streamed row (plain head, streamed middle, plain tail) merely present in the
    function, LLVM compiled the plain row loop 1.7-2x slower in cache (48^3 and 96^3
    blocks, 2 threads: 1.1-1.4 against 2.0-2.9 Gcell/s) and 1.3x slower at 320^3; a
    branch at run time did not help.  The 2-D sweeps showed no such effect and keep
    ``stream`` as an argument.
    """

    @njit(parallel=True, cache=True, fastmath=FM_CONTRACT)
    def sweep(u, g, out, i0, i1, j0, j1, k0, k1, cx, cy, cz, c4, tj, nchunk, pf):  # pragma: no cover - compiled
        # Spatially blocked: work items are (j tile, i chunk); each sweeps its i range
        # with the j rows of one tile, so the three planes it reads stay cached (see
        # _tiles_3d).  With ``pf`` the row of plane i+1 the next step reads is
        # prefetched (and g's row, for Jacobi): it is the only one that comes from
        # memory (see _tile_candidates for where that helps).  Streamed rows are
        # written as the 2-D sweeps write them (_stream_span).
        plane, row, n = u.shape[1] * u.shape[2], u.shape[2], k1 - k0
        for w in prange(((j1 - j0 + tj - 1) // tj) * nchunk):
            prefer_256_bit_vectors()
            ia, ib, ja, jb = _tile(w, i0, i1, j0, j1, tj, nchunk)
            uf = u.reshape(-1)
            gf = g.reshape(-1)
            of = out.reshape(-1)
            for i in range(ia, ib):
                for j in range(ja, jb):
                    b = (i * u.shape[1] + j) * row + k0
                    if pf:
                        nb = _next_row(i, j, ja, jb, u.shape[1], row, k0)
                        _prefetch_row(uf, nb + plane, n)
                        if jacobi:
                            _prefetch_row(gf, nb, n)
                    ua, ub, un, us, uw, _, ue = _rows3(uf, b, plane, row, n)
                    gc = gf[b : b + n]
                    o = of[b : b + n]
                    if not stream:
                        for k in range(n):
                            o[k] = _cell3(jacobi, ua[k], ub[k], un[k], us[k], uw[k], ue[k], gc[k], cx, cy, cz, c4)
                        continue
                    a, e = _stream_span(o, True)
                    for k in range(a):
                        o[k] = _cell3(jacobi, ua[k], ub[k], un[k], us[k], uw[k], ue[k], gc[k], cx, cy, cz, c4)
                    ua, ub, un, us, uw, ue, gc, o = ua[a:], ub[a:], un[a:], us[a:], uw[a:], ue[a:], gc[a:], o[a:]
                    for k in range(e - a):
                        v = _cell3(jacobi, ua[k], ub[k], un[k], us[k], uw[k], ue[k], gc[k], cx, cy, cz, c4)
                        stream_store(o, k, v)
                    for k in range(e - a, o.size):
                        o[k] = _cell3(jacobi, ua[k], ub[k], un[k], us[k], uw[k], ue[k], gc[k], cx, cy, cz, c4)

    return sweep


#: the compiled 3-D sweeps by (jacobi, stream)
_SWEEP3 = {(jacobi, stream): _sweep3_variant(jacobi, stream) for jacobi in (False, True) for stream in (False, True)}


def _lap7_cpu(u, out, i0, i1, j0, j1, k0, k1, cx, cy, cz, cc, tj, nchunk, stream, pf):
    # The 3-D sweeps take the 2-D sweeps' arguments (stream last but one): _sweep calls
    # every CPU kernel alike.  The centre row is u's own (g = u).
    _SWEEP3[False, bool(stream)](u, u, out, i0, i1, j0, j1, k0, k1, cx, cy, cz, cc, tj, nchunk, pf)


def _jac3_cpu(u, f, out, i0, i1, j0, j1, k0, k1, cx, cy, cz, inv, tj, nchunk, stream, pf):
    _SWEEP3[True, bool(stream)](u, f, out, i0, i1, j0, j1, k0, k1, cx, cy, cz, inv, tj, nchunk, pf)


#: 2-D stencils' numbers in the row-segment sweeps (a closure constant of each)
_KIND2 = {"lap5": 0, "lap9": 1, "jac2": 2}


@njit(cache=True, inline="always")
def _cell2(kind, un, us, uw, ue, uc, nw, ne, sw, se, g, c1, c2, c3):  # pragma: no cover - compiled
    # One cell of a 2-D sweep, term for term as the box sweeps write it: 5-point
    # (kind 0), 9-point (1; nw..se its corners) or Jacobi (2; g the right-hand side).
    if kind == 1:
        return c1 * (un + us + uw + ue) + c2 * (nw + ne + sw + se) + c3 * uc
    if kind == 2:
        return (c1 * (un + us) + c2 * (uw + ue) + g) * c3
    return c1 * (un + us) + c2 * (uw + ue) + c3 * uc


def _segments2_variant(kind: int) -> Any:
    """The compiled 2-D sweep over a table of row segments ``(i, j0, j1, step)`` (see :func:`_segments_of`).

    For regions of several small boxes (the one-cell frame of ``region="boundary"``):
    one call and one parallel launch instead of one per box, each of which cost about
    2 us besides its cells.  ``kind`` (:data:`_KIND2`) selects the formula; ``g`` is
    ``f`` for Jacobi and ``u`` otherwise.  A segment of step 1 is a run of cells swept
    through row views; a larger step names single cells (a row's two frame cells),
    computed one by one without building views.  Plain stores: the rows are short or
    cached.  The formulas are the box sweeps', term for term, so the bits agree.
    """

    @njit(parallel=True, cache=True, fastmath=FM_CONTRACT)
    def sweep(u, g, out, segs, c1, c2, c3):  # pragma: no cover - compiled
        for s in prange(segs.shape[0]):
            i, j0, j1, step = segs[s, 0], segs[s, 1], segs[s, 2], segs[s, 3]
            if step != 1:
                for j in range(j0, j1, step):
                    out[i, j] = _cell2(
                        kind, u[i - 1, j], u[i + 1, j], u[i, j - 1], u[i, j + 1], u[i, j],
                        u[i - 1, j - 1], u[i - 1, j + 1], u[i + 1, j - 1], u[i + 1, j + 1], g[i, j], c1, c2, c3,
                    )  # fmt: skip
                continue
            un, us, uw, uc, ue = _rows2(u, i, j0, j1)
            nw, ne = u[i - 1, j0 - 1 : j1 - 1], u[i - 1, j0 + 1 : j1 + 1]
            sw, se = u[i + 1, j0 - 1 : j1 - 1], u[i + 1, j0 + 1 : j1 + 1]
            gc = g[i, j0:j1]
            o = out[i, j0:j1]
            for j in range(o.size):
                o[j] = _cell2(kind, un[j], us[j], uw[j], ue[j], uc[j], nw[j], ne[j], sw[j], se[j], gc[j], c1, c2, c3)

    return sweep


def _segments3_variant(jacobi: bool) -> Any:
    """The compiled 3-D sweep over row segments ``(i, j, k0, k1, step)``; see :func:`_segments2_variant`."""

    @njit(parallel=True, cache=True, fastmath=FM_CONTRACT)
    def sweep(u, g, out, segs, c1, c2, c3, c4):  # pragma: no cover - compiled
        plane, row = u.shape[1] * u.shape[2], u.shape[2]
        uf = u.reshape(-1)
        gf = g.reshape(-1)
        of = out.reshape(-1)
        for s in prange(segs.shape[0]):
            b = (segs[s, 0] * u.shape[1] + segs[s, 1]) * row
            k0, k1, step = segs[s, 2], segs[s, 3], segs[s, 4]
            if step != 1:
                for k in range(b + k0, b + k1, step):
                    of[k] = _cell3(
                        jacobi, uf[k - plane], uf[k + plane], uf[k - row], uf[k + row], uf[k - 1], uf[k + 1], gf[k],
                        c1, c2, c3, c4,
                    )  # fmt: skip
                continue
            b += k0
            n = k1 - k0
            ua, ub, un, us, uw, _, ue = _rows3(uf, b, plane, row, n)
            gc = gf[b : b + n]
            o = of[b : b + n]
            for k in range(n):
                o[k] = _cell3(jacobi, ua[k], ub[k], un[k], us[k], uw[k], ue[k], gc[k], c1, c2, c3, c4)

    return sweep


#: the compiled row-segment sweeps by stencil name
_SEGMENTS = {
    **{name: _segments2_variant(kind) for name, kind in _KIND2.items()},
    "lap7": _segments3_variant(False),
    "jac3": _segments3_variant(True),
}


def _segments_cpu(name: str) -> Any:
    """``run(*work, segs, *coefs)`` for stencil ``name``'s row-segment sweep (``work`` as for the box kernels)."""
    sweep = _SEGMENTS[name]
    if name.startswith("jac"):
        return sweep  # (u, f, out, segs, *coefs) as it is
    return lambda u, out, segs, *coefs: sweep(u, u, out, segs, *coefs)


def _segments_of(boxes: Sequence[Box]) -> np.ndarray:
    """Every row of ``boxes`` as lines of an int64 table ``(i, [j,] start, stop, step)``.

    A box's rows are runs of step 1.  Single cells of one row (the frame's slabs on the
    last axis put one cell at each end of every middle row) are merged into one line
    whose step reaches from the first to the next: half the lines, and no views built
    for a cell (a 64^3 frame has 7688 such cells).
    """
    parts = []
    for lo, hi in boxes:
        lead = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo[:-1], hi[:-1])), indexing="ij"), -1)
        lead = lead.reshape(-1, len(lo) - 1)
        ends = np.broadcast_to(np.array([lo[-1], hi[-1], 1]), (lead.shape[0], 3))
        parts.append(np.hstack([lead, ends]))
    table = np.vstack(parts).astype(np.int64)
    single = table[:, -2] - table[:, -3] == 1
    runs, cells = table[~single], table[single]
    if len(cells):
        order = np.lexsort((cells[:, -3], *cells[:, :-3].T[::-1]))
        cells = cells[order]
        merged = []
        q = 0
        while q < len(cells):
            if q + 1 < len(cells) and np.array_equal(cells[q, :-3], cells[q + 1, :-3]):
                a, b = cells[q, -3], cells[q + 1, -3]
                merged.append([*cells[q, :-3], a, b + 1, b - a])
                q += 2
            else:
                merged.append(list(cells[q]))
                q += 1
        runs = np.vstack([runs, np.array(merged, dtype=np.int64).reshape(-1, table.shape[1])])
    return np.ascontiguousarray(runs, dtype=np.int64)


def _cache_sizes(sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> dict[int, int]:
    """Bytes of each data-cache level per CPU (the level's size over the CPUs sharing it).

    Read from Linux's sysfs; empty where that is not readable.
    """
    sizes: dict[int, int] = {}
    try:
        for index in sorted(Path(sysfs).glob("index*")):
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            if kind not in ("Unified", "Data"):
                continue
            text = (index / "size").read_text().strip().upper()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            size = int(text.rstrip("KMG")) * mult
            shared = 0
            for part in (index / "shared_cpu_list").read_text().strip().split(","):
                lo, _, hi = part.partition("-")
                shared += int(hi or lo) - int(lo) + 1
            sizes[level] = size // max(1, shared)
    except (OSError, ValueError):
        return {}
    return sizes


def _cache_budget(sysfs: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """Bytes of cache one thread's working set of a 3-D sweep may fill by default.

    The core's L2 plus half of its share of the L3 (:func:`_cache_sizes`); 256 KiB
    where sysfs does not tell.  With the next row prefetched (see :func:`_sweep3_variant`)
    planes served from an AMD L3 cost little, while tiles cut to fit the L2 alone
    re-read the tile edges and make the sweep short and choppy: on a Zen 5 VM (1 MiB
    L2, 32 MiB L3 for 2 cores) a 320^3 7-point sweep ran at 0.75 of the STREAM triad
    with L2-sized tiles and at 0.8-1.1 without tiles.  On an Intel Xeon VM the
    opposite held (see :func:`_tile_candidates`), so large sweeps time both.
    """
    sizes = _cache_sizes(sysfs)
    if 2 not in sizes:
        return 256 << 10
    return sizes[2] + sizes.get(3, 0) // 2


#: bytes of cache one thread's working set of a 3-D sweep may fill (tiles stay correct
#: for any value, only speed changes; tests set it small to force many tiles)
CACHE_BUDGET = _cache_budget()

#: the core's L2 in bytes (256 KiB where sysfs does not tell): a sixth of it is the smaller
#: tile budget a large 3-D sweep also times (see _tile_candidates)
L2_BYTES = _cache_sizes().get(2, 256 << 10)


def _tiles_3d(box: Box, itemsize: int, arrays: int, budget: int | None = None) -> tuple[int, int]:
    """``(tj, nchunk)`` for a 3-D sweep over ``box``: j-tile height and i chunks per tile.

    A sweep along i reuses planes i-1 and i for the next i only if three planes'
    rows of the current tile (plus the other arrays' rows) are still cached
    (``budget`` bytes, ``CACHE_BUDGET`` by default).  Tiles are as tall as the
    budget allows (the whole j range when a plane already fits: no blocking); with
    too few tiles to share among the threads, each tile's i range is cut into one
    chunk per thread.
    """
    (i0, j0, k0), (i1, j1, k1) = box
    row = (k1 - k0 + 2) * itemsize
    tj = max(4, (CACHE_BUDGET if budget is None else budget) // ((3 + arrays) * row))
    nj = j1 - j0
    tj = min(tj, nj)
    ntiles = -(-nj // tj)
    threads = numba.get_num_threads()
    if ntiles >= 4 * threads:
        # a tile count the threads share evenly (13 tiles on 2 threads wait for the 7th)
        ntiles = -(-ntiles // threads) * threads
        tj = -(-nj // ntiles)
        return tj, 1
    return tj, max(1, min(threads, i1 - i0))


def _tile_candidates(box: Box, itemsize: int, arrays: int) -> list[tuple[int, int, bool, bool]]:
    """The variants a large 3-D sweep times: ``(tj, nchunk, stream, pf)``, the default first.

    ``CACHE_BUDGET``'s blocking and one for a sixth of the L2, each with plain and
    with streaming stores, each with and without the software prefetch of the next
    row.  320^3 7-point sweeps, as a fraction of the STREAM triad: on the Zen 3 and
    Zen 5 VMs the untiled sweep (``CACHE_BUDGET``) was as fast as or faster than any
    tile budget from 256 KiB to 8.5 MiB; on an Intel Xeon VM (2 MiB L2, a slow
    shared L3) the untiled sweep ran at 0.61-0.82, 256-384 KiB tiles (about 30 rows)
    at 0.77-1.07, and with streaming stores as well at 0.89-0.93 where plain ones
    gave 0.80-0.85 in the same rounds.  L2-sized tiles were never the fastest.  On a
    Zen 4 VM (1 MiB L2, 32 MiB L3) the prefetch cost a fifth: 2 threads, untiled,
    plain stores, 1.38 Gcell/s with it and 1.75 without, the fastest of 40 variants
    (tiles from 16 rows up, either store, either vector width, with or without the
    prefetch); with tiles the prefetch changed the speed by less than 8 % either way.
    """
    out: list[tuple[int, int, bool, bool]] = []
    for budget in (CACHE_BUDGET, L2_BYTES // 6):
        tiles = _tiles_3d(box, itemsize, arrays, budget)
        for stream in (False, True):
            for pf in (True, False):
                if (*tiles, stream, pf) not in out:
                    out.append((*tiles, stream, pf))
    return out


# --------------------------------------------------------------- Numba-CUDA ---
# One thread per cell of the box; the last axis runs along threadIdx.x so that
# a warp reads consecutive addresses.


@functools.cache
def _cuda_kernels() -> dict[str, Any]:
    @cuda.jit(device=True)
    def axes2(u, i, j, cx, cy):  # pragma: no cover - device code
        return cx * (u[i - 1, j] + u[i + 1, j]) + cy * (u[i, j - 1] + u[i, j + 1])

    @cuda.jit(device=True)
    def axes3(u, i, j, k, cx, cy, cz):  # pragma: no cover - device code
        return (
            cx * (u[i - 1, j, k] + u[i + 1, j, k])
            + cy * (u[i, j - 1, k] + u[i, j + 1, k])
            + cz * (u[i, j, k - 1] + u[i, j, k + 1])
        )

    @cuda.jit
    def lap5_k(u, out, i0, i1, j0, j1, cx, cy, cc):  # pragma: no cover - device code
        j, i = cuda.grid(2)
        i += i0
        j += j0
        if i < i1 and j < j1:
            out[i, j] = axes2(u, i, j, cx, cy) + cc * u[i, j]

    @cuda.jit
    def lap9_k(u, out, i0, i1, j0, j1, ce, ck, cc):  # pragma: no cover - device code
        j, i = cuda.grid(2)
        i += i0
        j += j0
        if i < i1 and j < j1:
            corners = u[i - 1, j - 1] + u[i - 1, j + 1] + u[i + 1, j - 1] + u[i + 1, j + 1]
            out[i, j] = axes2(u, i, j, ce, ce) + ck * corners + cc * u[i, j]

    @cuda.jit
    def jac2_k(u, f, out, i0, i1, j0, j1, cx, cy, inv):  # pragma: no cover - device code
        j, i = cuda.grid(2)
        i += i0
        j += j0
        if i < i1 and j < j1:
            out[i, j] = (axes2(u, i, j, cx, cy) + f[i, j]) * inv

    @cuda.jit
    def lap7_k(u, out, i0, i1, j0, j1, k0, k1, cx, cy, cz, cc):  # pragma: no cover - device code
        k, j, i = cuda.grid(3)
        i += i0
        j += j0
        k += k0
        if i < i1 and j < j1 and k < k1:
            out[i, j, k] = axes3(u, i, j, k, cx, cy, cz) + cc * u[i, j, k]

    @cuda.jit
    def jac3_k(u, f, out, i0, i1, j0, j1, k0, k1, cx, cy, cz, inv):  # pragma: no cover - device code
        k, j, i = cuda.grid(3)
        i += i0
        j += j0
        k += k0
        if i < i1 and j < j1 and k < k1:
            out[i, j, k] = (axes3(u, i, j, k, cx, cy, cz) + f[i, j, k]) * inv

    return {"lap5": lap5_k, "lap9": lap9_k, "lap7": lap7_k, "jac2": jac2_k, "jac3": jac3_k}


_CUDA_BLOCK_2D = (32, 8)
_CUDA_BLOCK_3D = (32, 4, 2)


def _cuda_run(name: str, backend: str, box: Box, arrays: tuple[Any, ...], coefs: tuple[Any, ...]) -> None:
    lo, hi = box
    ext = [h - lo_ for lo_, h in zip(lo, hi)][::-1]  # grid x = last axis
    block = _CUDA_BLOCK_2D if len(lo) == 2 else _CUDA_BLOCK_3D
    grid = tuple(-(-e // b) for e, b in zip(ext, block))
    bounds = tuple(itertools.chain.from_iterable(zip(lo, hi)))
    launch(_cuda_kernels()[name], grid, block, backend, *arrays, *bounds, *coefs)


# ------------------------------------------------------------------ public ---


def region_boxes(shape: tuple[int, ...], halo: int = 1, region: str = "all") -> list[Box]:
    """Index boxes ``(lo, hi)`` (half-open, ghosted indices) covering ``region``.

    ``"all"`` is one box (the interior), ``"interior"`` one box (the interior
    shrunk by one cell per side, empty when the interior is thinner than 3),
    ``"boundary"`` up to ``2*ndim`` disjoint slabs forming the one-cell frame.
    Empty boxes are left out, so the list may be empty.
    """
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    return list(_boxes(tuple(int(s) for s in shape), int(halo), region))


def _boxes_of(shape: tuple[int, ...], halo: int, region: str) -> tuple[Box, ...]:
    """:func:`region_boxes` of an array's shape, as the remembered tuple."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    return _boxes(shape, halo, region)


@functools.lru_cache(maxsize=256)
def _boxes(shape: tuple[int, ...], halo: int, region: str) -> tuple[Box, ...]:
    """:func:`region_boxes` for a known region, remembered: a time loop asks for the same boxes every step."""
    return tuple(_region_boxes(shape, halo, region))


def _region_boxes(shape: tuple[int, ...], halo: int, region: str) -> list[Box]:
    nd = len(shape)
    lo = [halo] * nd
    hi = [s - halo for s in shape]
    if any(h <= lo_ for lo_, h in zip(lo, hi)):
        return []
    if region == "all":
        return [(tuple(lo), tuple(hi))]
    ilo = [lo_ + 1 for lo_ in lo]
    ihi = [h - 1 for h in hi]
    if region == "interior":
        return [(tuple(ilo), tuple(ihi))] if all(h > lo_ for lo_, h in zip(ilo, ihi)) else []
    boxes: list[Box] = []
    # A frame cell belongs to the slab of the first axis on which it lies at
    # the edge: axes before d are restricted to the shrunk range, axes after d
    # span the whole interior.  That makes the slabs disjoint.
    for d in range(nd):
        for edge in sorted({lo[d], hi[d] - 1}):
            blo = [ilo[e] if e < d else lo[e] for e in range(nd)]
            bhi = [ihi[e] if e < d else hi[e] for e in range(nd)]
            blo[d], bhi[d] = edge, edge + 1
            if all(h > lo_ for lo_, h in zip(blo, bhi)):
                boxes.append((tuple(blo), tuple(bhi)))
    return boxes


def _sweep(
    name: str,
    kernel: Any,
    backend: str,
    arrays: tuple[Any, ...],
    boxes: Sequence[Box],
    coefs: tuple[Any, ...],
    remember: tuple[Any, bool] | None = None,
) -> None:
    """Run stencil ``name`` over every box; ``arrays`` is ``(u, out)`` or ``(u, f, out)``.

    GPU and simulator: one CUDA launch per box.  CPU: ``kernel`` per box, or one
    row-segment sweep for a region of several boxes too small to time (:func:`_cpu_plan`); 3-D sweeps
    get their blocking ``(tj, nchunk)`` (2-D sweeps keep three rows in cache without
    help: a row of 8192 doubles is 64 KiB) and index the arrays as flat C-ordered
    memory, so strided views (a sub-block of a larger array) are copied to contiguous
    arrays once for all boxes, and ``out`` is copied back.  Every CPU sweep takes
    a ``stream`` flag (streaming stores of ``out``), a 3-D one a ``pf`` flag too (the
    software prefetch of the next row).  Which blocking, whether to stream and whether
    to prefetch is timed on a large sweep's first call per layout (:mod:`._tuning`): the
    fastest differed between the CPUs measured, and every variant writes the same bits.

    ``remember``: ``(call key, transposed)`` of the public call (:func:`_call_key`);
    when no copy was needed, the kernel calls are recorded under that key for the
    next call with the same signature (:func:`_run_remembered`).
    """
    if backend != "cpu":
        for box in boxes:
            _cuda_run(name, backend, box, arrays, coefs)
        return
    work = arrays
    if arrays[0].ndim == 3 and not all(a.flags.c_contiguous for a in arrays):
        work = tuple(np.ascontiguousarray(a) for a in arrays)
    calls = tuple(
        (run, (*bounds, *coefs), key, cands, nbytes)
        for run, bounds, key, cands, nbytes in _cpu_plan(name, kernel, work, boxes)
    )
    _run_calls(calls, work)
    if work[-1] is not arrays[-1]:
        arrays[-1][...] = work[-1]
    if remember is not None and work is arrays:  # (calls on copies are not remembered)
        if len(_CALLS) >= 512:  # many signatures: start afresh rather than grow
            _CALLS.clear()
        try:
            _CALLS[remember[0]] = (remember[1], calls)
        except TypeError:  # unhashable parameters (a list of coefficients): not remembered
            pass


def _run_calls(calls: tuple[tuple[Any, ...], ...], arrays: tuple[np.ndarray, ...]) -> None:
    """Make the kernel calls of a plan: ``(kernel, arguments after the arrays, tuning key, candidates, bytes)``."""
    for run, args, key, candidates, nbytes in calls:
        if len(candidates) == 1:  # nothing to choose: no timing, no bookkeeping
            run(*arrays, *args, *candidates[0])
        else:
            _tuning.run_tuned(key, candidates, lambda c, k=run, a=args: k(*arrays, *a, *c), nbytes)


#: per signature of a stencil call on NumPy arrays (:func:`_call_key`): whether the
#: arrays were transposed (:func:`_c_order`) and the kernel calls made (:func:`_sweep`)
_CALLS: dict[tuple[Any, ...], tuple[bool, tuple[tuple[Any, ...], ...]]] = {}


def _threads_now() -> int:
    """The calling thread's Numba thread count, as ``numba.get_num_threads()`` returns it.

    Once Numba's threads are running, its private counter is read directly: the public
    function checks the launch under a lock first, which took 1 us of a 7 us call.
    """
    count = getattr(numba_parallel, "_get_num_threads", None)  # set when the threads start
    return numba.get_num_threads() if count is None else count()


def _call_key(name: str, u: Any, out: Any, f: Any, params: Any, halo: Any, region: Any, backend: Any) -> Any:
    """The signature of a stencil call on NumPy arrays, or ``None`` when it must take the full path.

    Everything a call derives before its kernels run (checks, coefficients, layout,
    boxes, plan) follows from the stencil, its parameters as given, the arrays' shapes,
    strides and dtypes, the output's alignment, halo, region and the thread count; a
    time loop makes the same call every step, and on a small block deriving all that
    took twice as long as the sweep.  What can change between two calls with one
    signature (the output made read-only, the arrays overlapping) is checked on every
    call (:func:`_run_remembered`).
    """
    if backend not in (None, "cpu") or type(u) is not np.ndarray or type(out) is not np.ndarray:
        return None
    fk = None
    if f is not None:
        if type(f) is not np.ndarray:
            return None
        fk = (f.shape, f.strides, f.dtype)
    aligned = out.flags.aligned
    return (
        name,
        params,
        halo,
        type(halo),  # True == 1, but halo=True is refused
        region,
        u.shape,
        u.strides,
        u.dtype,
        out.shape,
        out.strides,
        out.dtype,
        aligned,
        fk,
        _threads_now(),
    )


def _run_remembered(key: Any, u: np.ndarray, out: np.ndarray, f: np.ndarray | None) -> bool:
    """Run the kernel calls recorded for ``key``; ``False`` when there are none (or the call needs the full checks)."""
    try:
        entry = _CALLS.get(key)
    except TypeError:  # unhashable parameters (a list of coefficients): the full path
        return False
    if entry is None or not out.flags.writeable or np.may_share_memory(u, out):
        return False
    transposed, calls = entry
    arrays = (u, out) if f is None else (u, f, out)
    _run_calls(calls, tuple(a.T for a in arrays) if transposed else arrays)
    return True


#: per CPU sweep layout, what :func:`_cpu_plan` derived from it
_PLANS: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}


def _cpu_plan(name: str, kernel: Any, work: tuple[np.ndarray, ...], boxes: Sequence[Box]) -> list[tuple[Any, ...]]:
    """Per call to make: the kernel, its bounds, the tuning key, the candidates and the bytes it writes.

    One call per box of ``kernel`` (the box sweep), except for a region of several
    boxes none of which is large enough to be timed (:data:`._tuning.MIN_BYTES`), such
    as the frame of ``region="boundary"``: that is one call of the row-segment sweep
    (:func:`_segments2_variant`) over a table of the boxes' rows.  Derived once per
    layout (stencil, shapes, strides, dtype, alignment, boxes, thread count) and
    remembered: a time loop sweeps the same layout every step, and on a small block
    deriving it took longer than the sweep (64x128 cells: 20 us against 5).
    """
    threads = _threads_now()
    out = work[-1]
    strides = tuple(a.strides for a in work)
    layout = (name, work[0].shape, strides, work[0].dtype.str, out.flags.aligned, tuple(boxes), threads)
    plan = _PLANS.get(layout)
    if plan is not None:
        return plan
    itemsize = work[0].dtype.itemsize
    streamable = out.strides[-1] == itemsize and out.flags.aligned
    plan = []
    sizes = [itemsize * math.prod(h - lo for lo, h in zip(*box)) for box in boxes]
    if len(boxes) > 1 and max(sizes) < _tuning.MIN_BYTES:
        key = (name, "segments", work[0].shape, strides, work[0].dtype.str, tuple(boxes), threads)
        plan.append((_segments_cpu(name), (_segments_of(boxes),), key, [()], sum(sizes)))
        boxes, sizes = (), []
    for box, nbytes in zip(boxes, sizes):
        if work[0].ndim == 3:
            candidates: list[tuple[Any, ...]] = list(_tile_candidates(box, itemsize, len(work) - 1))
        elif streamable:
            candidates = [(False,), (True,)]  # plain stores first, then streaming stores
        else:
            candidates = [(False,)]  # rows that never stream (see _stream_span): nothing to time
        key = (name, work[0].shape, strides, work[0].dtype.str, box, threads)
        plan.append((kernel, tuple(itertools.chain.from_iterable(zip(*box))), key, candidates, nbytes))
    if len(_PLANS) >= 512:  # many layouts (a sweep over shapes): start afresh rather than grow
        _PLANS.clear()
    _PLANS[layout] = plan
    return plan


def describe_variant(key: tuple[Any, ...], choice: tuple[Any, ...]) -> str:
    """A short phrase for the variant :mod:`._tuning` chose for a sweep's ``key`` (for reports).

    ``key`` is :func:`_sweep`'s ``(name, shape, strides, dtype, box, threads)``; ``choice``
    is ``(stream,)`` for a 2-D sweep and ``(tj, nchunk, stream, pf)`` for a 3-D one.
    """
    if len(choice) == 1:
        return "streaming stores" if choice[0] else "plain stores"
    (_, j0, _), (_, j1, _) = key[4]
    tj, nchunk, stream, pf = choice
    tiles = "untiled" if tj >= j1 - j0 else f"{tj}-row tiles"
    return (
        tiles
        + (f" x {nchunk} i-chunks" if nchunk > 1 else "")
        + (", streaming stores" if stream else ", plain stores")
        + ("" if pf else ", no prefetch")
    )


def _check_grid(u: Any, out: Any, f: Any, halo: int, backend: str | None) -> tuple[str, np.dtype]:
    """The backend and dtype of a stencil call, or the error its arguments deserve."""
    if _valid_host_grid(u, out, f, halo, backend):  # the common case, accepted in a few tests
        return "cpu", u.dtype
    return _check_grid_fully(u, out, f, halo, backend)


def _check_grid_fully(u: Any, out: Any, f: Any, halo: int, backend: str | None) -> tuple[str, np.dtype]:
    """Every check of :func:`_check_grid`, one at a time, each with its own message."""
    b = resolve_backend(u, out, f, backend=backend)
    if u.ndim not in (2, 3):
        raise ValueError(f"stencils take 2-D or 3-D arrays, got shape {tuple(u.shape)}")
    dt = check_same_dtype(u=u, out=out, f=f)
    for name, a in (("out", out), ("f", f)):
        if a is not None and a.shape != u.shape:
            raise ValueError(f"{name} has shape {tuple(a.shape)}, u has {tuple(u.shape)} (same ghosted shape needed)")
    if isinstance(halo, bool) or not isinstance(halo, (int, np.integer)) or halo < 1:
        raise ValueError(f"halo must be an integer >= 1, got {halo!r}")
    if any(s < 2 * halo for s in u.shape):
        raise ValueError(f"u has shape {tuple(u.shape)}: smaller than 2*halo = {2 * halo} on some axis")
    check_writeable("out", out)
    if b == "cpu" and np.may_share_memory(u, out):
        raise ValueError("out must not overlap u (the stencil would read values it already wrote)")
    if b != "cpu" and out is u:
        raise ValueError("out must not be u")
    return b, dt


def _valid_host_grid(u: Any, out: Any, f: Any, halo: Any, backend: str | None) -> bool:
    """Whether NumPy arrays pass every check of :func:`_check_grid_fully` (``False``: let it say what is wrong).

    Validating a call took longer than a small sweep (6 us against 5 for 64x128 cells);
    this accepts the usual arguments in one expression, and anything else goes through
    the full checks (``tests/kernels/test_stencil.py`` checks that both agree).
    """
    if backend not in (None, "cpu") or type(u) is not np.ndarray or type(out) is not np.ndarray:
        return False
    dt, shape = u.dtype, u.shape
    if f is not None and (type(f) is not np.ndarray or f.dtype != dt or f.shape != shape):
        return False
    return (
        dt in FLOAT_DTYPES
        and out.dtype == dt
        and out.shape == shape
        and len(shape) in (2, 3)
        and type(halo) is int
        and 1 <= halo
        and min(shape) >= 2 * halo
        and out.flags.writeable
        and not np.may_share_memory(u, out)
    )


def _typed(dt: np.dtype, values: Any) -> tuple[Any, ...]:
    """Coefficients in the arrays' precision: float32 scalars for float32 sweeps.

    float64 ones go as Python floats, which Numba types as float64 too and which are
    quicker to pass than NumPy scalars.
    """
    return tuple(map(float, values)) if dt == np.float64 else tuple(dt.type(c) for c in values)


def _c_order(u: Any, out: Any, f: Any, hs: tuple[float, ...]) -> tuple[Any, Any, Any, tuple[float, ...]]:
    """Present F-ordered grids as their C-ordered transposes.

    The operators are symmetric under reversing the axes (with the spacings
    reversed), so this costs nothing and lets the kernels always run along the
    unit stride - and compile one layout fewer.
    """
    arrays = [a for a in (u, out, f) if a is not None]
    if all(a.flags.f_contiguous and not a.flags.c_contiguous for a in arrays):
        return u.T, out.T, (None if f is None else f.T), hs[::-1]
    return u, out, f, hs


def laplacian(
    u: Any,
    out: Any,
    spacing: float | tuple[float, ...] = 1.0,
    *,
    points: int | None = None,
    halo: int = 1,
    region: str = "all",
    backend: str | None = None,
) -> Any:
    """Write the discrete Laplacian of ``u`` into the interior of ``out``; return ``out``.

    Parameters
    ----------
    u : array, 2-D or 3-D, float32/float64, with ``halo`` ghost layers
        Its innermost ghost layer (and, for 9 points, the corner ghosts) must
        hold valid values for the interior cells next to it.
    out : array, same shape and dtype as ``u``, not overlapping it
        Only the interior cells of ``region`` are written.
    spacing : float or tuple of floats
        Grid spacing ``h_d`` per axis (all > 0).
    points : {None, 5, 9} in 2-D, {None, 7} in 3-D
        ``None`` is the ``2*ndim + 1`` point stencil.  9 points require equal
        spacing on both axes.
    halo : int >= 1
        Ghost layers on every side.
    region : {"all", "interior", "boundary"}
        See the module docstring: ``"interior"`` needs no ghost values.
    backend : {None, "cpu", "gpu", "sim"}

    Raises
    ------
    TypeError
        Mixed devices or dtypes.
    ValueError
        Bad shapes, spacing, points, halo or region; ``out`` overlapping ``u``.
    """
    key = _call_key("laplacian", u, out, None, (spacing, points), halo, region, backend)
    if key is not None and _run_remembered(key, u, out, None):
        return out
    b, dt = _check_grid(u, out, None, halo, backend)
    nd = u.ndim
    hs = spacing_tuple(spacing, nd)
    npts = 2 * nd + 1 if points is None else points
    if npts not in ((5, 9) if nd == 2 else (7,)):
        raise ValueError(f"points={points!r} is not available in {nd}-D (2-D: 5 or 9, 3-D: 7)")
    if npts == 9 and hs[0] != hs[1]:
        raise ValueError(f"the 9-point stencil needs equal spacing, got {hs}")
    result = out
    u, out, _, hs = _c_order(u, out, None, hs)
    if npts == 9:
        c = 1.0 / (6.0 * hs[0] * hs[0])
        name, coefs = "lap9", (4.0 * c, c, -20.0 * c)
    else:
        inv = [1.0 / (h * h) for h in hs]
        name, coefs = ("lap5" if nd == 2 else "lap7"), (*inv, -2.0 * sum(inv))
    coefs = _typed(dt, coefs)
    cpu = {"lap5": _lap5_cpu, "lap9": _lap9_cpu, "lap7": _lap7_cpu}[name]
    remember = None if key is None else (key, out is not result)
    _sweep(name, cpu, b, (u, out), _boxes_of(u.shape, halo, region), coefs, remember)
    return result


def jacobi_step(
    u: Any,
    f: Any,
    out: Any,
    spacing: float | tuple[float, ...] = 1.0,
    *,
    halo: int = 1,
    region: str = "all",
    backend: str | None = None,
) -> Any:
    """One Jacobi sweep for ``-lap(u) = f``, written into the interior of ``out``; return ``out``.

    ``out[i] = (sum_d (u[i+e_d] + u[i-e_d]) / h_d^2 + f[i]) / (sum_d 2 / h_d^2)``
    with the 5-point (2-D) or 7-point (3-D) Laplacian.

    Parameters
    ----------
    u : array, 2-D or 3-D, float32/float64, with ``halo`` ghost layers
    f : array, same ghosted shape and dtype (its ghost values are ignored)
    out : array, same shape and dtype, not overlapping ``u``; ghosts untouched
    spacing : float or tuple of floats
    halo : int >= 1
    region : {"all", "interior", "boundary"}
    backend : {None, "cpu", "gpu", "sim"}

    Raises
    ------
    TypeError
        Mixed devices or dtypes.
    ValueError
        Bad shapes, spacing, halo or region; ``out`` overlapping ``u``.
    """
    key = _call_key("jacobi", u, out, f, spacing, halo, region, backend)
    if key is not None and _run_remembered(key, u, out, f):
        return out
    b, dt = _check_grid(u, out, f, halo, backend)
    nd = u.ndim
    result = out
    u, out, f, hs = _c_order(u, out, f, spacing_tuple(spacing, nd))
    inv = [1.0 / (h * h) for h in hs]
    coefs = _typed(dt, (*inv, 1.0 / (2.0 * sum(inv))))
    name = "jac2" if nd == 2 else "jac3"
    cpu = _jac2_cpu if nd == 2 else _jac3_cpu
    remember = None if key is None else (key, out is not result)
    _sweep(name, cpu, b, (u, f, out), _boxes_of(u.shape, halo, region), coefs, remember)
    return result


def diffusion_step(
    u: Any,
    out: Any,
    coefs: float | tuple[float, ...],
    *,
    halo: int = 1,
    region: str = "all",
    backend: str | None = None,
) -> Any:
    """One explicit Euler step of ``du/dt = alpha lap(u)``, written into the interior of ``out``; return ``out``.

    ``out[i] = u[i] + sum_d c_d (u[i+e_d] - 2 u[i] + u[i-e_d])`` with the 5-point
    (2-D) or 7-point (3-D) operator, computed in one pass as
    ``(1 - 2 sum_d c_d) u[i] + sum_d c_d (u[i+e_d] + u[i-e_d])``.

    Parameters
    ----------
    u : array, 2-D or 3-D, float32/float64, with ``halo`` ghost layers
    out : array, same shape and dtype, not overlapping ``u``; ghosts untouched
    coefs : float or tuple of floats
        ``c_d = alpha dt / h_d^2`` per axis (one value for all axes).  Stable for
        ``sum_d c_d <= 1/2``; not checked here (the caller owns the time step).
    halo : int >= 1
    region : {"all", "interior", "boundary"}
        As for :func:`laplacian`: ``"interior"`` reads no ghost, so it overlaps a
        halo exchange.
    backend : {None, "cpu", "gpu", "sim"}

    Raises
    ------
    TypeError
        Mixed devices or dtypes.
    ValueError
        Bad shapes, coefficients, halo or region; ``out`` overlapping ``u``.
    """
    key = _call_key("diffusion", u, out, None, coefs, halo, region, backend)
    if key is not None and _run_remembered(key, u, out, None):
        return out
    b, dt = _check_grid(u, out, None, halo, backend)
    nd = u.ndim
    scalar = isinstance(coefs, (float, int)) or (not isinstance(coefs, (tuple, list)) and np.ndim(coefs) == 0)
    cs = (float(coefs),) * nd if scalar else tuple(map(float, coefs))
    if len(cs) != nd or not all(math.isfinite(c) and c >= 0 for c in cs):
        raise ValueError(f"coefs must be {nd} finite values >= 0, got {coefs!r}")
    result = out
    u, out, _, cs = _c_order(u, out, None, cs)
    name = "lap5" if nd == 2 else "lap7"
    cpu = _lap5_cpu if nd == 2 else _lap7_cpu
    weights = _typed(dt, (*cs, 1.0 - 2.0 * sum(cs)))
    remember = None if key is None else (key, out is not result)
    _sweep(name, cpu, b, (u, out), _boxes_of(u.shape, halo, region), weights, remember)
    return result
