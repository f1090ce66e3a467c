"""Explicit time steps on :class:`~hpcml.distarray.DistArray` fields, overlapping the halo exchange.

A step starts the face exchange (``corners=False``: one stage), updates the cells
whose stencil reads no ghost while the messages travel, waits, then updates the
one-cell frame next to the ghosts.  The arithmetic is the node kernel's
(:func:`hpcml.kernels.diffusion_step`); this module only orders it around the
exchange, so apps and data generators share one step instead of each writing it.
"""

from __future__ import annotations

from hpcml.distarray import DistArray
from hpcml.kernels import stencil

__all__ = ["diffusion_step"]


def diffusion_step(u: DistArray, out: DistArray, coefs: float | tuple[float, ...], method: str = "auto") -> None:
    """``out = u + sum_d c_d (u[i+e_d] - 2 u[i] + u[i-e_d])`` on the owned cells (collective).

    Parameters
    ----------
    u, out
        Fields on the same decomposition (2-D or 3-D, one halo width >= 1 on every
        axis); ``u``'s ghosts are refreshed, ``out``'s are left alone.
    coefs
        ``c_d = alpha dt / h_d^2`` per axis.
    method
        Halo-exchange method (:func:`hpcml.halo.methods`).
    """
    halo = set(u.decomp.halo)
    if len(halo) != 1 or 0 in halo:
        raise ValueError(f"diffusion_step needs one halo width >= 1 on every axis, got {u.decomp.halo}")
    h = halo.pop()
    req = u.start_exchange(method=method, corners=False)
    stencil.diffusion_step(u.data, out.data, coefs, halo=h, region="interior")
    req.wait()
    stencil.diffusion_step(u.data, out.data, coefs, halo=h, region="boundary")
