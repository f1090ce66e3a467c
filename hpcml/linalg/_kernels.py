"""Fused node-local Numba kernels of the distributed solvers (no MPI here).

Why these exist next to :mod:`hpcml.kernels`: CG is memory bound, and fusing its
vector updates with the reductions that follow them saves whole passes over
the vectors (for preconditioned CG 13 vector sweeps per iteration instead of
about 20 with separate AXPY / DOT / pointwise-multiply calls).  The kernels
work on ghosted arrays through *runs*: the owned cells of a C-ordered ghosted
block are contiguous runs of the flattened ``data`` (one run per interior row of
the last axis; one run for a 1-D vector).  Every vector of one solve shares one
layout, so a kernel loops over ``runs`` and never touches a ghost cell, which
keeps reductions exact and leaves the ghosts to the halo exchange.

All reductions accumulate in float64.  ``dinv`` (the inverse diagonal of a
Jacobi preconditioner) may be ``None``: Numba compiles a separate
specialisation in which the ``dinv is None`` branches are pruned.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# reassociation lets LLVM vectorise the reductions; contraction allows FMA.
_FM = {"reassoc", "contract"}

#: Longest run handed to one thread: a 1-D vector is one run, and it must
#: still spread over the Numba threads.
RUN_CHUNK = 1 << 15


def interior_runs(ghosted_shape: tuple[int, ...], halo: tuple[int, ...], chunk: int = RUN_CHUNK) -> np.ndarray:
    """``(nruns, 2)`` int64 array of ``(flat start, length)`` covering the owned cells.

    ``ghosted_shape`` is the C-ordered local block including ``halo`` ghost
    layers per side; runs longer than ``chunk`` are split so that threads share
    the work.
    """
    shape = tuple(int(s) for s in ghosted_shape)
    inner = [range(h, s - h) for s, h in zip(shape[:-1], halo[:-1])]
    last_lo, last_n = halo[-1], shape[-1] - 2 * halo[-1]
    if last_n <= 0 or any(len(r) == 0 for r in inner):
        return np.zeros((0, 2), dtype=np.int64)
    strides = np.cumprod((1, *shape[:0:-1]))[::-1]
    # flat offset of the first owned cell of every interior row
    starts = np.full(1, last_lo, dtype=np.int64)
    for r, st in zip(inner, strides[:-1]):
        starts = (starts[:, None] + np.asarray(r, dtype=np.int64)[None, :] * int(st)).ravel()
    pieces = -(-last_n // chunk)
    offs = np.arange(pieces, dtype=np.int64) * chunk
    lens = np.minimum(chunk, last_n - offs)
    runs = np.empty((starts.size * pieces, 2), dtype=np.int64)
    runs[:, 0] = (starts[:, None] + offs[None, :]).ravel()
    runs[:, 1] = np.tile(lens, starts.size)
    return runs


# ---------------------------------------------------------------- reductions ---


@njit(parallel=True, cache=True, fastmath=_FM)
def dot_runs(runs, a, b):  # pragma: no cover - compiled
    """``sum(a * b)`` over the runs."""
    s = 0.0
    for k in prange(runs.shape[0]):
        o, n = runs[k, 0], runs[k, 1]
        av, bv = a[o : o + n], b[o : o + n]
        t = 0.0
        for i in range(n):
            t += np.float64(av[i]) * np.float64(bv[i])
        s += t
    return s


@njit(parallel=True, cache=True)
def count_nonfinite_runs(runs, a):  # pragma: no cover - compiled
    """Number of NaN / inf entries over the runs."""
    bad = 0
    for k in prange(runs.shape[0]):
        o, n = runs[k, 0], runs[k, 1]
        av = a[o : o + n]
        c = 0
        for i in range(n):
            if not np.isfinite(av[i]):
                c += 1
        bad += c
    return bad


# -------------------------------------------------------------- CG updates ---


@njit(parallel=True, cache=True, fastmath=_FM)
def residual_runs(runs, b, ax, r, dinv):  # pragma: no cover - compiled
    """``r = b - ax``; return ``(r.z, r.r)`` with ``z = dinv * r`` (``z = r`` without ``dinv``)."""
    rz = 0.0
    rr = 0.0
    for k in prange(runs.shape[0]):
        o, n = runs[k, 0], runs[k, 1]
        bv, av, rv = b[o : o + n], ax[o : o + n], r[o : o + n]
        t_rz = 0.0
        t_rr = 0.0
        if dinv is None:
            for i in range(n):
                v = bv[i] - av[i]
                rv[i] = v
                t_rr += np.float64(v) * np.float64(v)
            t_rz = t_rr
        else:
            dv = dinv[o : o + n]
            for i in range(n):
                v = bv[i] - av[i]
                rv[i] = v
                t_rr += np.float64(v) * np.float64(v)
                t_rz += np.float64(v) * np.float64(v * dv[i])
        rz += t_rz
        rr += t_rr
    return rz, rr


@njit(parallel=True, cache=True, fastmath=_FM)
def precondition_runs(runs, r, z, dinv):  # pragma: no cover - compiled
    """``z = dinv * r`` (``z = r`` without ``dinv``) over the runs."""
    for k in prange(runs.shape[0]):
        o, n = runs[k, 0], runs[k, 1]
        rv, zv = r[o : o + n], z[o : o + n]
        if dinv is None:
            for i in range(n):
                zv[i] = rv[i]
        else:
            dv = dinv[o : o + n]
            for i in range(n):
                zv[i] = dv[i] * rv[i]


@njit(parallel=True, cache=True, fastmath=_FM)
def cg_update_runs(runs, x, p, r, q, dinv, alpha):  # pragma: no cover - compiled
    """``x += alpha p``, ``r -= alpha q``; return ``(r.z, r.r)`` of the new residual."""
    rz = 0.0
    rr = 0.0
    for k in prange(runs.shape[0]):
        o, n = runs[k, 0], runs[k, 1]
        xv, pv, rv, qv = x[o : o + n], p[o : o + n], r[o : o + n], q[o : o + n]
        t_rz = 0.0
        t_rr = 0.0
        if dinv is None:
            for i in range(n):
                xv[i] += alpha * pv[i]
                v = rv[i] - alpha * qv[i]
                rv[i] = v
                t_rr += np.float64(v) * np.float64(v)
            t_rz = t_rr
        else:
            dv = dinv[o : o + n]
            for i in range(n):
                xv[i] += alpha * pv[i]
                v = rv[i] - alpha * qv[i]
                rv[i] = v
                t_rr += np.float64(v) * np.float64(v)
                t_rz += np.float64(v) * np.float64(v * dv[i])
        rz += t_rz
        rr += t_rr
    return rz, rr


@njit(parallel=True, cache=True, fastmath=_FM)
def cg_direction_runs(runs, p, r, dinv, beta):  # pragma: no cover - compiled
    """``p = dinv * r + beta p`` (``z`` recomputed, never stored)."""
    for k in prange(runs.shape[0]):
        o, n = runs[k, 0], runs[k, 1]
        pv, rv = p[o : o + n], r[o : o + n]
        if dinv is None:
            for i in range(n):
                pv[i] = rv[i] + beta * pv[i]
        else:
            dv = dinv[o : o + n]
            for i in range(n):
                pv[i] = dv[i] * rv[i] + beta * pv[i]


@njit(parallel=True, cache=True, fastmath=_FM)
def pipecg_update_runs(runs, x, r, u, w, m, nv, z, q, s, p, dinv, alpha, beta):  # pragma: no cover - compiled
    """One fused sweep of pipelined CG (Ghysels & Vanroose 2014, preconditioned).

    ``z = n + beta z; q = m + beta q; s = w + beta s; p = u + beta p;``
    ``x += alpha p; r -= alpha s; u -= alpha q; w -= alpha z; m = dinv w``;
    returns the partial ``(r.u, w.u, r.r)`` of the updated vectors.
    """
    g = 0.0
    d = 0.0
    rr = 0.0
    for k in prange(runs.shape[0]):
        o, n = runs[k, 0], runs[k, 1]
        xv, rv, uv, wv, mv = x[o : o + n], r[o : o + n], u[o : o + n], w[o : o + n], m[o : o + n]
        nn, zv, qv, sv, pv = nv[o : o + n], z[o : o + n], q[o : o + n], s[o : o + n], p[o : o + n]
        tg = 0.0
        td = 0.0
        tr = 0.0
        for i in range(n):
            zi = nn[i] + beta * zv[i]
            qi = mv[i] + beta * qv[i]
            si = wv[i] + beta * sv[i]
            pi = uv[i] + beta * pv[i]
            zv[i] = zi
            qv[i] = qi
            sv[i] = si
            pv[i] = pi
            xv[i] += alpha * pi
            ri = rv[i] - alpha * si
            ui = uv[i] - alpha * qi
            wi = wv[i] - alpha * zi
            rv[i] = ri
            uv[i] = ui
            wv[i] = wi
            if dinv is None:
                mv[i] = wi
            else:
                mv[i] = dinv[o + i] * wi
            tg += np.float64(ri) * np.float64(ui)
            td += np.float64(wi) * np.float64(ui)
            tr += np.float64(ri) * np.float64(ri)
        g += tg
        d += td
        rr += tr
    return g, d, rr


# ----------------------------------------------------- matrix-free Poisson ---
# A = -Laplacian (SPD with Dirichlet ghosts held at zero).  Each kernel writes
# ``out = A u`` on one index box of the ghosted block and returns sum(u * out)
# over the box, the p.Ap of CG at no extra memory traffic.


@njit(parallel=True, cache=True, fastmath=_FM)
def neg_lap2_dot(u, out, i0, i1, j0, j1, cy, cx):  # pragma: no cover - compiled
    """``out = -lap(u)`` (5-point) on rows ``i0:i1``, columns ``j0:j1``; return ``sum(u*out)``."""
    cc = 2.0 * (cy + cx)
    s = 0.0
    for i in prange(i0, i1):
        un, us = u[i - 1, j0:j1], u[i + 1, j0:j1]
        uw, uc, ue = u[i, j0 - 1 : j1 - 1], u[i, j0:j1], u[i, j0 + 1 : j1 + 1]
        o = out[i, j0:j1]
        t = 0.0
        for j in range(j1 - j0):
            v = cc * uc[j] - cy * (un[j] + us[j]) - cx * (uw[j] + ue[j])
            o[j] = v
            t += np.float64(uc[j]) * np.float64(v)
        s += t
    return s


@njit(parallel=True, cache=True, fastmath=_FM)
def neg_lap3_dot(u, out, i0, i1, j0, j1, k0, k1, cz, cy, cx):  # pragma: no cover - compiled
    """``out = -lap(u)`` (7-point) on an index box; return ``sum(u*out)`` over it."""
    cc = 2.0 * (cz + cy + cx)
    s = 0.0
    for i in prange(i0, i1):
        t = 0.0
        for j in range(j0, j1):
            ua, ub = u[i - 1, j, k0:k1], u[i + 1, j, k0:k1]
            un, us = u[i, j - 1, k0:k1], u[i, j + 1, k0:k1]
            uw, uc, ue = u[i, j, k0 - 1 : k1 - 1], u[i, j, k0:k1], u[i, j, k0 + 1 : k1 + 1]
            o = out[i, j, k0:k1]
            for k in range(k1 - k0):
                v = cc * uc[k] - cz * (ua[k] + ub[k]) - cy * (un[k] + us[k]) - cx * (uw[k] + ue[k])
                o[k] = v
                t += np.float64(uc[k]) * np.float64(v)
        s += t
    return s


# --------------------------------------------------------------------- CSR ---


@njit(cache=True, fastmath=_FM)
def csr_rows_add(rows, indptr, indices, data, g, y, x):  # pragma: no cover - compiled
    """``y[rows[i]] += (A_o g)_i`` for the compressed off-diagonal rows; return ``sum(x[rows] * added)``.

    ``x`` may be ``None`` (no dot).  Serial: these are the few rows that touch
    other ranks' columns.
    """
    s = 0.0
    for i in range(rows.shape[0]):
        acc = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            acc += data[k] * g[np.uint64(indices[k])]
        row = rows[i]
        y[row] += acc
        if x is not None:
            s += np.float64(x[row]) * np.float64(acc)
    return s


@njit(cache=True)
def gather_into(src, idx, out):  # pragma: no cover - compiled
    """``out[i] = src[idx[i]]`` (packing the entries other ranks need).

    Serial on purpose: the ghost entries are a surface-sized set, for which
    waking the Numba thread pool costs more than the copy.
    """
    for i in range(idx.shape[0]):
        out[i] = src[idx[i]]
