"""Elementwise optimizers: SGD with momentum and Adam.

Both update every element from its own gradient and state only, so they give
bit-identical results on a list of parameters, on one flat buffer holding them
all (:class:`~hpcml.nn.ddp.DataParallel`), or on any slice of that buffer
(:class:`~hpcml.nn.ddp.ZeroShardedOptimizer`).  State is kept per parameter as
named *slots* (``"momentum"``; ``"m"``, ``"v"``) of the parameter's shape.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from hpcml.backend import array_module
from hpcml.nn.layers import Parameter

__all__ = ["OPTIMIZERS", "SGD", "Adam", "Optimizer", "make_optimizer"]


class Optimizer(ABC):
    """Base class: parameters, hyper-parameters, per-parameter slots and a step count."""

    slots: tuple[str, ...] = ()

    def __init__(self, params: Sequence[Parameter], lr: float) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.params = list(params)
        self.lr = float(lr)
        self.t = 0
        self.state: dict[str, list[Any]] = {s: [p.data * 0 for p in self.params] for s in self.slots}

    def zero_grad(self) -> None:
        """Set every gradient to zero."""
        for p in self.params:
            p.grad[...] = 0

    def step(self) -> None:
        """Apply one update from the current gradients."""
        self.t += 1
        for i, p in enumerate(self.params):
            self._update(i, p)

    @abstractmethod
    def _update(self, i: int, p: Parameter) -> None:
        """Update parameter ``i`` in place from its gradient (the rule of each optimizer)."""

    def hyper(self) -> dict[str, Any]:
        """Hyper-parameters (stored with checkpoints)."""
        return {"lr": self.lr}

    def state_dict(self) -> dict[str, Any]:
        """``{"t": steps, "slots": {slot: [array per parameter]}}`` (arrays are copies)."""
        return {"t": self.t, "slots": {s: [a.copy() for a in arrs] for s, arrs in self.state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (shapes must match)."""
        self.t = int(state["t"])
        for s in self.slots:
            arrs = state["slots"][s]
            if len(arrs) != len(self.params):
                raise ValueError(f"optimizer state has {len(arrs)} entries for slot {s!r}, expected {len(self.params)}")
            for dst, src in zip(self.state[s], arrs):
                if tuple(dst.shape) != tuple(src.shape):
                    raise ValueError(f"optimizer slot {s!r}: shape {tuple(src.shape)} != {tuple(dst.shape)}")
                dst[...] = src


class SGD(Optimizer):
    """SGD with (heavy-ball or Nesterov) momentum and L2 weight decay, as ``torch.optim.SGD``.

    ``g = grad + wd * p``; ``b = momentum * b + g`` (``b = g`` on the first step);
    ``p -= lr * (g + momentum * b if nesterov else b)``.
    """

    slots = ("momentum",)

    def __init__(
        self,
        params: Sequence[Parameter],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.momentum, self.weight_decay, self.nesterov = float(momentum), float(weight_decay), bool(nesterov)

    def hyper(self) -> dict[str, Any]:
        """Hyper-parameters."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay, "nesterov": self.nesterov}

    def _update(self, i: int, p: Parameter) -> None:
        g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
        if self.momentum:
            b = self.state["momentum"][i]
            if self.t == 1:
                b[...] = g
            else:
                b *= self.momentum
                b += g
            g = g + self.momentum * b if self.nesterov else b
        p.data -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and L2 weight decay, as ``torch.optim.Adam``."""

    slots = ("m", "v")

    def __init__(
        self,
        params: Sequence[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def hyper(self) -> dict[str, Any]:
        """Hyper-parameters."""
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def _update(self, i: int, p: Parameter) -> None:
        g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
        m, v = self.state["m"][i], self.state["v"][i]
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        v += (1.0 - self.beta2) * (g * g)
        c1 = 1.0 - self.beta1**self.t
        c2 = 1.0 - self.beta2**self.t
        step = self.lr / c1
        xp_sqrt = _sqrt(v)
        p.data -= step * m / (xp_sqrt / math.sqrt(c2) + self.eps)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam}


def make_optimizer(kind: str, params: Sequence[Parameter], **hyper: Any) -> Optimizer:
    """Build an optimizer by name (``"sgd"`` or ``"adam"``)."""
    try:
        cls = OPTIMIZERS[kind]
    except KeyError:
        raise ValueError(f"unknown optimizer {kind!r}; expected one of {tuple(OPTIMIZERS)}") from None
    return cls(params, **hyper)


def _sqrt(a: Any) -> Any:
    return array_module(a).sqrt(a)
