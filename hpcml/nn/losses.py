"""Losses normalised by a *global* element count.

A rank sees one tile of some of the samples.  Dividing its squared error by the
number of elements of the whole (global, all replicas, all micro-batches)
batch makes the per-rank gradients *add up* to the gradient of the global mean,
so gradient synchronisation is a plain sum over ranks — exact for uneven splits
and gradient accumulation, where averaging per-replica means would not be.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

__all__ = ["global_mse", "mse_loss"]


def mse_loss(pred: Any, target: Any, count: int | None = None) -> tuple[float, Any]:
    """Local part of the mean squared error and its gradient.

    Parameters
    ----------
    pred, target
        Arrays of the same shape (this rank's tiles of this rank's samples).
    count
        Number of elements the mean runs over (global); ``pred.size`` if ``None``
        (a single process).

    Returns
    -------
    (float, array)
        ``sum((pred - target)**2) / count`` — add it up over ranks for the loss —
        and ``2 (pred - target) / count``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"mse_loss: prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    n = pred.size if count is None else int(count)
    if n <= 0:
        raise ValueError(f"mse_loss: count must be positive, got {n}")
    diff = pred - target
    local = float((diff * diff).sum()) / n
    return local, diff * (2.0 / n)


def global_mse(pred: Any, target: Any, comm: MPI.Comm, count: int) -> tuple[float, Any]:
    """:func:`mse_loss` with the loss summed over ``comm`` (blocking, one double)."""
    local, grad = mse_loss(pred, target, count)
    return comm.allreduce(local, op=MPI.SUM), grad
