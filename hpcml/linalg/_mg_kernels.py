"""Node-local Numba kernels of geometric multigrid (no MPI here).

A level operator is ``-Laplacian_h`` with per-dimension coefficients
``c_d = 1 / h_d^2`` and a diagonal shift that is separable: ``s_d[i_d]`` is
non-zero only in the cells next to a Dirichlet wall whose distance differs
from the grid spacing (coarse levels; see :mod:`hpcml.linalg.multigrid`), so
the diagonal of cell ``(i, j)`` is ``2 (c_0 + c_1) + s_0[i] + s_1[j]`` without
a second full-size array.  Arrays are ghosted blocks; loops run over the
owned box ``[h, h + n)`` per dimension; the caller fills the ghosts.

Transfers are table driven, one table per dimension: for each coarse cell
the ``K`` fine cells it restricts from (ghosted local indices and weights),
and for each fine cell the two coarse cells it interpolates from.  The
tensor product of the 1-D tables is the 2-D / 3-D operator, so one kernel
serves cell- and vertex-centred coarsening, walls and periodic wrap.
"""

from __future__ import annotations

from numba import njit, prange

_FM = {"reassoc", "contract"}


# ------------------------------------------------------------------ 2-D ---


@njit(parallel=True, cache=True, fastmath=_FM)
def smooth2(x, b, d, out, h0, h1, n0, n1, c0, c1, s0, s1, a, w):  # pragma: no cover - compiled
    """``d = a d + w D^-1 (b - A x)`` and ``out = x + d`` (Jacobi: ``a = 0``; Chebyshev otherwise).

    ``d`` may be ``None`` when ``a == 0`` (plain weighted Jacobi).  Rows are
    walked through 1-D slices from index 0, which lets LLVM vectorise.
    """
    cc = 2.0 * (c0 + c1)
    sj = s1[h1 : h1 + n1]
    for i in prange(h0, h0 + n0):
        xn, xs = x[i - 1, h1 : h1 + n1], x[i + 1, h1 : h1 + n1]
        xw, xc, xe = x[i, h1 - 1 : h1 + n1 - 1], x[i, h1 : h1 + n1], x[i, h1 + 1 : h1 + n1 + 1]
        bb, o = b[i, h1 : h1 + n1], out[i, h1 : h1 + n1]
        ci = cc + s0[i]
        if d is None:
            for j in range(n1):
                diag = ci + sj[j]
                ax = diag * xc[j] - c0 * (xn[j] + xs[j]) - c1 * (xw[j] + xe[j])
                o[j] = xc[j] + w * (bb[j] - ax) / diag
        else:
            dd = d[i, h1 : h1 + n1]
            for j in range(n1):
                diag = ci + sj[j]
                ax = diag * xc[j] - c0 * (xn[j] + xs[j]) - c1 * (xw[j] + xe[j])
                step = a * dd[j] + w * (bb[j] - ax) / diag
                dd[j] = step
                o[j] = xc[j] + step


@njit(parallel=True, cache=True, fastmath=_FM)
def residual2(x, b, r, h0, h1, n0, n1, g0, g1, c0, c1, s0, s1):  # pragma: no cover - compiled
    """``r = b - A x`` (``r`` with its own ghost widths ``g``); return ``sum(r^2)``."""
    cc = 2.0 * (c0 + c1)
    sj = s1[h1 : h1 + n1]
    total = 0.0
    for i in prange(n0):
        ii = i + h0
        xn, xs = x[ii - 1, h1 : h1 + n1], x[ii + 1, h1 : h1 + n1]
        xw, xc, xe = x[ii, h1 - 1 : h1 + n1 - 1], x[ii, h1 : h1 + n1], x[ii, h1 + 1 : h1 + n1 + 1]
        bb, rr = b[ii, h1 : h1 + n1], r[i + g0, g1 : g1 + n1]
        ci = cc + s0[ii]
        t = 0.0
        for j in range(n1):
            v = bb[j] - ((ci + sj[j]) * xc[j] - c0 * (xn[j] + xs[j]) - c1 * (xw[j] + xe[j]))
            rr[j] = v
            t += v * v
        total += t
    return total


@njit(parallel=True, cache=True, fastmath=_FM)
def restrict2(r, out, i_idx, i_w, j_idx, j_w, g0, g1, tmp):  # pragma: no cover - compiled
    """``out[g + I, g + J] = sum_ab i_w[I, a] j_w[J, b] r[i_idx[I, a], j_idx[J, b]]``, separably.

    First along rows into ``tmp`` (one row per fine row of ``r``, one column per
    coarse column), then along columns: ``K_i + K_j`` instead of ``K_i K_j``
    terms per coarse cell.
    """
    nc0, nc1 = i_idx.shape[0], j_idx.shape[0]
    ka, kb = i_idx.shape[1], j_idx.shape[1]
    lo, hi = i_idx.min(), i_idx.max() + 1
    for i in prange(lo, hi):
        row, t = r[i], tmp[i]
        for cj in range(nc1):
            s = 0.0
            for q in range(kb):
                s += j_w[cj, q] * row[j_idx[cj, q]]
            t[cj] = s
    for ci in prange(nc0):
        o = out[ci + g0, g1 : g1 + nc1]
        o[:] = 0.0
        for q in range(ka):
            wa, t = i_w[ci, q], tmp[i_idx[ci, q]]
            if wa != 0.0:
                for cj in range(nc1):
                    o[cj] += wa * t[cj]


@njit(parallel=True, cache=True, fastmath=_FM)
def prolong2(e, x, i_idx, i_w, j_idx, j_w, g0, g1, tmp):  # pragma: no cover - compiled
    """``x[g + i, g + j] += sum_ab i_w[i, a] j_w[j, b] e[i_idx[i, a], j_idx[j, b]]``, separably (via ``tmp``)."""
    nf0, nf1 = i_idx.shape[0], j_idx.shape[0]
    lo, hi = i_idx.min(), i_idx.max() + 1
    for i in prange(lo, hi):
        row, t = e[i], tmp[i]
        for j in range(nf1):
            t[j] = j_w[j, 0] * row[j_idx[j, 0]] + j_w[j, 1] * row[j_idx[j, 1]]
    for i in prange(nf0):
        o = x[i + g0, g1 : g1 + nf1]
        t0, t1 = tmp[i_idx[i, 0]], tmp[i_idx[i, 1]]
        w0, w1 = i_w[i, 0], i_w[i, 1]
        for j in range(nf1):
            o[j] += w0 * t0[j] + w1 * t1[j]


# ------------------------------------------------------------------ 3-D ---


@njit(parallel=True, cache=True, fastmath=_FM)
def smooth3(x, b, d, out, h0, h1, h2, n0, n1, n2, c0, c1, c2, s0, s1, s2, a, w):  # pragma: no cover
    """3-D :func:`smooth2` (innermost lines as 1-D slices, as in 2-D)."""
    cc = 2.0 * (c0 + c1 + c2)
    sk = s2[h2 : h2 + n2]
    for i in prange(h0, h0 + n0):
        for j in range(h1, h1 + n1):
            xa, xb = x[i - 1, j, h2 : h2 + n2], x[i + 1, j, h2 : h2 + n2]
            xn, xs = x[i, j - 1, h2 : h2 + n2], x[i, j + 1, h2 : h2 + n2]
            xw, xc, xe = x[i, j, h2 - 1 : h2 + n2 - 1], x[i, j, h2 : h2 + n2], x[i, j, h2 + 1 : h2 + n2 + 1]
            bb, o = b[i, j, h2 : h2 + n2], out[i, j, h2 : h2 + n2]
            cij = cc + s0[i] + s1[j]
            if d is None:
                for k in range(n2):
                    diag = cij + sk[k]
                    ax = diag * xc[k] - c0 * (xa[k] + xb[k]) - c1 * (xn[k] + xs[k]) - c2 * (xw[k] + xe[k])
                    o[k] = xc[k] + w * (bb[k] - ax) / diag
            else:
                dd = d[i, j, h2 : h2 + n2]
                for k in range(n2):
                    diag = cij + sk[k]
                    ax = diag * xc[k] - c0 * (xa[k] + xb[k]) - c1 * (xn[k] + xs[k]) - c2 * (xw[k] + xe[k])
                    step = a * dd[k] + w * (bb[k] - ax) / diag
                    dd[k] = step
                    o[k] = xc[k] + step


@njit(parallel=True, cache=True, fastmath=_FM)
def residual3(x, b, r, h0, h1, h2, n0, n1, n2, g0, g1, g2, c0, c1, c2, s0, s1, s2):  # pragma: no cover
    """3-D :func:`residual2`."""
    cc = 2.0 * (c0 + c1 + c2)
    sk = s2[h2 : h2 + n2]
    total = 0.0
    for i in prange(n0):
        ii = i + h0
        t = 0.0
        for j in range(n1):
            jj = j + h1
            xa, xb = x[ii - 1, jj, h2 : h2 + n2], x[ii + 1, jj, h2 : h2 + n2]
            xn, xs = x[ii, jj - 1, h2 : h2 + n2], x[ii, jj + 1, h2 : h2 + n2]
            xw, xc, xe = x[ii, jj, h2 - 1 : h2 + n2 - 1], x[ii, jj, h2 : h2 + n2], x[ii, jj, h2 + 1 : h2 + n2 + 1]
            bb, rr = b[ii, jj, h2 : h2 + n2], r[i + g0, j + g1, g2 : g2 + n2]
            cij = cc + s0[ii] + s1[jj]
            for k in range(n2):
                v = bb[k] - ((cij + sk[k]) * xc[k] - c0 * (xa[k] + xb[k]) - c1 * (xn[k] + xs[k]) - c2 * (xw[k] + xe[k]))
                rr[k] = v
                t += v * v
        total += t
    return total


@njit(parallel=True, cache=True, fastmath=_FM)
def restrict3(r, out, i_idx, i_w, j_idx, j_w, k_idx, k_w, g0, g1, g2):  # pragma: no cover - compiled
    """3-D :func:`restrict2`."""
    ka, kb, kc = i_idx.shape[1], j_idx.shape[1], k_idx.shape[1]
    for ci in prange(i_idx.shape[0]):
        for cj in range(j_idx.shape[0]):
            for ck in range(k_idx.shape[0]):
                s = 0.0
                for a in range(ka):
                    for b in range(kb):
                        wab = i_w[ci, a] * j_w[cj, b]
                        ia, jb = i_idx[ci, a], j_idx[cj, b]
                        for c in range(kc):
                            s += wab * k_w[ck, c] * r[ia, jb, k_idx[ck, c]]
                out[ci + g0, cj + g1, ck + g2] = s


@njit(parallel=True, cache=True, fastmath=_FM)
def prolong3(e, x, i_idx, i_w, j_idx, j_w, k_idx, k_w, g0, g1, g2):  # pragma: no cover - compiled
    """3-D :func:`prolong2`."""
    for i in prange(i_idx.shape[0]):
        for j in range(j_idx.shape[0]):
            for k in range(k_idx.shape[0]):
                s = 0.0
                for a in range(2):
                    for b in range(2):
                        wab = i_w[i, a] * j_w[j, b]
                        ia, jb = i_idx[i, a], j_idx[j, b]
                        s += wab * (k_w[k, 0] * e[ia, jb, k_idx[k, 0]] + k_w[k, 1] * e[ia, jb, k_idx[k, 1]])
                x[i + g0, j + g1, k + g2] += s
