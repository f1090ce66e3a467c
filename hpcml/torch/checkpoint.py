"""Checkpoints of torch models, optimizers and schedulers through :mod:`hpcml.io.checkpoint`.

A torch ``state_dict`` is a tree of dicts (string or integer keys), lists,
tuples, tensors and numbers.  :func:`encode` turns it into what an hpcml
checkpoint holds — nothing is pickled: every tensor becomes a NumPy array
named by its path in the tree (``conv1.weight``, ``state.0.exp_avg``), and the
rest of the tree is kept as JSON text in ``__tree__`` with a reference in
place of each tensor (its name, dtype and shape).  :func:`decode` inverts it.

Under data and spatial parallelism every rank holds the full model and the
same optimizer state, so the state is replicated: it is written from rank 0,
loads on every rank of any ``data x spatial`` grid and any rank count, and the
run continues with the same loss series.  Files are written to a temporary name
and renamed; the newest ``keep`` are kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from hpcml.nn import storage
from hpcml.nn.grid import TrainGrid

__all__ = ["decode", "encode", "load_checkpoint", "save_checkpoint"]

_TREE = "__tree__"
_NUMPY_DTYPES = {torch.bfloat16: torch.float32}  # dtypes NumPy lacks, stored widened


def encode(tree: Any) -> dict[str, Any]:
    """``{"__tree__": JSON text, "<path>": array, ...}`` for a torch state tree."""
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            name = path or "tensor"
            if name in arrays or name == _TREE or "/" in name:
                raise ValueError(f"cannot store tensor at {name!r}: name taken or contains '/'")
            t = node.detach().cpu()
            arrays[name] = t.to(_NUMPY_DTYPES.get(t.dtype, t.dtype)).numpy().copy()
            return {"__tensor__": name, "dtype": str(t.dtype).removeprefix("torch.")}
        if isinstance(node, Mapping):
            items = [(k, walk(v, f"{path}.{k}" if path else str(k))) for k, v in node.items()]
            if all(isinstance(k, str) and not k.startswith("__") for k, _ in items):
                return dict(items)
            return {"__dict__": [[k, v] for k, v in items]}
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, np.generic):
            return node.item()
        raise TypeError(f"cannot checkpoint {type(node).__name__} at {path or 'the root'!r} (nothing is pickled)")

    skeleton = walk(tree, "")
    return {_TREE: json.dumps(skeleton), **arrays}


def decode(stored: Mapping[str, Any]) -> Any:
    """The torch state tree :func:`encode` stored (tensors on the CPU)."""
    arrays = stored

    def build(node: Any) -> Any:
        if isinstance(node, list):
            return [build(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "__tensor__" in node:
            t = torch.from_numpy(np.array(arrays[node["__tensor__"]]))
            return t.to(getattr(torch, node["dtype"]))
        if "__tuple__" in node:
            return tuple(build(v) for v in node["__tuple__"])
        if "__dict__" in node:
            return {k: build(v) for k, v in node["__dict__"]}
        return {k: build(v) for k, v in node.items()}

    return build(json.loads(stored[_TREE]))


def _module(model: torch.nn.Module) -> torch.nn.Module:
    """The wrapped module of a DDP model (checkpoints hold the plain model's names)."""
    return getattr(model, "module", model)


def save_checkpoint(
    path: str | os.PathLike[str],
    step: int,
    grid: TrainGrid,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    extra: Mapping[str, Any] | None = None,
    config: Any = None,
    keep: int = 3,
) -> Any:
    """Write checkpoint ``step`` into directory ``path`` (collective over ``grid.comm``).

    ``model`` (or its DDP wrapper), ``optimizer`` and ``scheduler`` are stored
    by their ``state_dict``; ``extra`` is a mapping of arrays, numbers and
    strings (e.g. the epoch, the position in it, the loss history).  Values are
    rank 0's.  Returns the checkpoint file's path.
    """
    state: dict[str, Any] = {}
    if model is not None:
        state["model"] = encode(_module(model).state_dict())
    if optimizer is not None:
        state["optimizer"] = encode(optimizer.state_dict())
    if scheduler is not None:
        state["scheduler"] = encode(scheduler.state_dict())
    if extra:
        state["extra"] = dict(extra)
    return storage.save_checkpoint(path, state, step, grid.comm, config=config, keep=keep)


def has_checkpoint(path: str | os.PathLike[str] | None, grid: TrainGrid) -> bool:
    """Whether directory ``path`` holds a checkpoint (rank 0 looks, every rank agrees)."""
    return storage.has_checkpoint(path, grid.comm)


def load_checkpoint(
    path: str | os.PathLike[str],
    grid: TrainGrid,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> Any:
    """Load the newest good checkpoint in ``path`` into the given objects (collective; any grid).

    Returns the restored state (``.step``, ``.path``; ``["extra"]`` as saved).

    Raises
    ------
    hpcml.io.CheckpointError
        When no checkpoint loads.
    KeyError
        When an object is given whose state the checkpoint does not hold.
    """
    state = storage.load_checkpoint(path, grid.comm)
    for key, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if key not in state:
            raise KeyError(f"checkpoint {state.path} holds no {key} state (it has {sorted(state)})")
        target = _module(obj) if key == "model" else obj
        target.load_state_dict(decode(state[key]))
    return state
