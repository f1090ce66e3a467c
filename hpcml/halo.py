"""Halo (ghost-layer) exchange plans for block-decomposed arrays.

A :class:`HaloExchange` is built once per (decomposition, dtype, array module,
memory order, method, corners) and cached on the :class:`~hpcml.decomp.CartDecomp`.
It is a small front over two parts:

* what moves -- a :class:`~hpcml.halo_layout.HaloLayout`: stages (one per
  dimension with ``corners=True``, so edges and corners are filled with ``2 * ndim``
  messages; one stage over interior extents with ``corners=False``), one message
  per peer per stage (both directions merged when they go to the same rank), and
  local copies for periodic dimensions a rank holds whole;
* how it moves -- one strategy class per method from the registry of
  :mod:`hpcml.halo_strategies`:

``pack``
    Faces packed by one compiled call per stage, persistent requests, dense faces
    sent straight from the array.  Default on CPUs.
``datatype``
    One committed MPI datatype per message over the ghosted array (zero copies on
    hpcml's side).
``staged`` / ``device``
    GPU arrays (CuPy, Numba-CUDA): pack on the device, then send through pinned
    host memory or hand the device buffer to a CUDA-aware MPI.
``auto``
    Chosen among the registered strategies that serve the array's kind: the
    ``HPCML_HALO_METHOD`` setting, else the measured model
    (``hpcml bench datatypes --measure``, :mod:`hpcml.halo_model`), else the
    strategy of highest priority.  Rank 0 of the decomposition decides and
    broadcasts: a setting, a model file or an error seen by some ranks only can
    neither split the ranks between methods nor leave some of them waiting.

All methods deliver identical bytes and interoperate on the wire.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from mpi4py import MPI

from hpcml.backend import array_module, is_contiguous, is_device_array, xp_from_name
from hpcml.halo_layout import HaloLayout
from hpcml.halo_shm import ShmStrategy  # noqa: F401 - registers the "shm" strategy
from hpcml.halo_strategies import REGISTRY, HaloStrategy, register_strategy, unregister_strategy
from hpcml.settings import rc

__all__ = [
    "HaloExchange",
    "HaloRequest",
    "HaloStrategy",
    "choose_method",
    "get_plan",
    "methods",
    "plan_for",
    "register_strategy",
    "unregister_strategy",
]


def methods() -> tuple[str, ...]:
    """``"auto"`` and the names of every registered strategy."""
    return ("auto", *REGISTRY)


def choose_method(
    on_device: bool, requested: str = "auto", layout: HaloLayout | None = None, exclude: tuple[str, ...] = ()
) -> str:
    """Resolve ``requested`` to a registered strategy name as this rank sees it (no communication).

    ``"auto"`` takes ``rc.halo_method`` (``HPCML_HALO_METHOD``) if set, else the
    measured model's choice for ``layout``'s faces (when a model file exists and
    ``layout`` is given; a usable strategy that ``refines`` it replaces it), else
    the usable strategy of highest priority for host or GPU arrays; never one named
    in ``exclude``.  Plans resolve ``"auto"`` on rank 0 only and broadcast the
    answer (:func:`resolve_method`); call this directly only to report the choice.

    Raises
    ------
    ValueError
        An unknown method, or one that does not serve this kind of array.
    """
    if requested not in methods():
        raise ValueError(f"unknown halo method {requested!r}; expected one of {methods()}")
    if requested == "auto":
        requested = rc.halo_method or "auto"
        if requested not in methods():
            raise ValueError(f"halo method setting (HPCML_HALO_METHOD) {requested!r} is not one of {methods()}")
    kind = "GPU" if on_device else "host"
    if requested != "auto":
        if REGISTRY[requested].device != on_device:
            allowed = tuple(n for n, c in REGISTRY.items() if c.device == on_device)
            raise ValueError(f"halo method {requested!r} does not apply to {kind} arrays; use one of {allowed}")
        return requested
    candidates = [n for n, c in REGISTRY.items() if c.device == on_device and c.usable() and n not in exclude]
    if not candidates:
        raise ValueError(f"no registered halo strategy serves {kind} arrays")
    measured = _model_choice(on_device, layout, candidates) if layout is not None else None
    if measured is not None:  # a usable refinement of the measured method wins (shm: pack through shared memory)
        better = [n for n in candidates if REGISTRY[n].refines == measured]
        return max(better, key=lambda n: REGISTRY[n].priority) if better else measured
    return max(candidates, key=lambda n: REGISTRY[n].priority)


def _model_choice(on_device: bool, layout: HaloLayout, candidates: list[str]) -> str | None:
    """The measured model's pick among ``candidates``, or ``None`` (no model, or it names none of them)."""
    from hpcml.halo_model import load_model, plan_faces

    try:
        model = load_model()
    except ValueError as exc:  # a broken cache file must not stop a run: say so, use the default
        warnings.warn(f"{exc}; halo method chosen without it", RuntimeWarning, stacklevel=3)
        return None
    if model is None:
        return None
    if on_device:
        from hpcml.cudaaware import cuda_aware_mpi

        biggest = max((m.nbytes for s in layout.stages for m in s.sends), default=0)
        choice = model.choose_gpu(biggest, cuda_aware_mpi())
    else:
        strided = [f.send for s in layout.stages for m in s.packed_sends for f in m.faces if not f.send.contiguous]
        choice = model.choose_cpu(plan_faces(strided))
    return choice if choice in candidates else None


def resolve_method(decomp: Any, layout: HaloLayout, on_device: bool, requested: str) -> str:
    """``requested`` as a strategy name; ``"auto"`` is decided on rank 0 and broadcast (collective).

    An explicit name is checked locally (the same argument on every rank gives the
    same answer without communication).  For ``"auto"`` every rank of
    ``decomp.cart`` takes part in one broadcast, whatever its own settings and
    files say; an error on rank 0 (a bad ``HPCML_HALO_METHOD`` there) is raised on
    every rank.  The answer is cached per decomposition.
    """
    if requested != "auto":
        return choose_method(on_device, requested)
    key = ("auto-choice", layout.dtype.str, on_device, layout.corners, layout.order, rc.halo_method)
    cache = decomp.plan_cache()
    excluded: tuple[str, ...] = ()
    while key not in cache:
        verdict: tuple[str, str] | None = None
        if decomp.cart.Get_rank() == 0:
            try:
                verdict = ("ok", choose_method(on_device, "auto", layout, excluded))
            except Exception as exc:
                verdict = ("error", f"{exc} (on rank 0, which chooses the halo method for every rank)")
        status, text = decomp.cart.bcast(verdict, root=0)
        if status != "ok":
            raise ValueError(text)
        if text not in REGISTRY:  # rank 0 knows a strategy this rank has not registered
            raise ValueError(f"rank 0 chose halo method {text!r}, which is not registered on this rank")
        if _passes_check(decomp, text):
            cache[key] = text
        else:
            excluded += (text,)
    return cache[key]


def _passes_check(decomp: Any, name: str) -> bool:
    """The strategy's :meth:`~HaloStrategy.collective_check` of this communicator, once per decomposition."""
    key = ("collective-check", name)
    cache = decomp.plan_cache()
    if key not in cache:
        cache[key] = bool(REGISTRY[name].collective_check(decomp.cart))
    return cache[key]


class HaloRequest:
    """An exchange in flight; ``wait()`` completes it (and any later stages)."""

    def __init__(self, plan: HaloExchange, data: Any, state: Any) -> None:
        self._plan = plan
        self._data = data
        self._state = state
        self._stage = 0
        self.done = not plan.strategy.nrounds
        self._reqs: list[MPI.Request] = []
        if self.done:
            plan._release(state)
        else:
            self._reqs = plan.strategy.start(0, data, state)

    def test(self) -> bool:
        """Progress without blocking; True once the whole exchange has completed."""
        strategy = self._plan.strategy
        while not self.done and MPI.Request.Testall(self._reqs) and strategy.arrived(self._stage, self._state):
            self._advance()
        return self.done

    def wait(self) -> None:
        """Block until every ghost layer is filled."""
        while not self.done:
            if self._reqs:
                MPI.Request.Waitall(self._reqs)
            self._advance()

    def _advance(self) -> None:
        plan = self._plan
        plan.strategy.finish(self._stage, self._data, self._state)
        self._stage += 1
        if self._stage < plan.strategy.nrounds:
            self._reqs = plan.strategy.start(self._stage, self._data, self._state)
        else:
            self._reqs = []
            self.done = True
            plan._release(self._state)


class HaloExchange:
    """Reusable plan that fills the ghost layers of arrays laid out by ``decomp``.

    Parameters
    ----------
    decomp
        The :class:`~hpcml.decomp.CartDecomp` the arrays belong to.
    dtype
        Element type of the arrays.
    xp
        ``numpy``, ``cupy`` or ``numba.cuda`` (a module or its name).
    method
        ``"auto"`` or a registered strategy name (:func:`methods`); ``"auto"``
        makes construction collective over ``decomp.cart`` the first time.
    corners
        Fill edge and corner ghosts too (dimension-by-dimension sweeps).  ``False``
        sends all faces at once over interior extents: enough for 5/7-point stencils.
    order
        ``"C"`` or ``"F"``: memory order of the arrays this plan serves.

    Attributes
    ----------
    method
        The strategy name in use.
    layout
        The :class:`~hpcml.halo_layout.HaloLayout` (stages, messages, local copies).
    strategy
        The :class:`~hpcml.halo_strategies.HaloStrategy` instance.
    """

    #: pooled per-exchange states (exchanges in flight at once beyond this allocate afresh)
    POOL = 4

    def __init__(
        self,
        decomp: Any,
        dtype: Any,
        xp: Any = np,
        method: str = "auto",
        corners: bool = True,
        order: str = "C",
    ) -> None:
        self.decomp = decomp
        self.dtype = np.dtype(dtype)
        self.xp = xp_from_name(xp)
        self.on_device = self.xp is not np
        self.corners = bool(corners)
        self.order = order
        self.comm = decomp.cart
        self.layout = _layout(decomp, self.dtype, order, self.corners)
        self.method = resolve_method(decomp, self.layout, self.on_device, method)
        self.strategy: HaloStrategy = REGISTRY[self.method](self.layout, self.xp)
        self._pool: list[Any] = []
        self._shape = tuple(decomp.ghosted_shape)

    # -- public API ----------------------------------------------------------------------
    def exchange(self, data: Any) -> None:
        """Fill the ghost layers of ``data`` (blocking)."""
        self._check(data)
        strategy = self.strategy
        if strategy.exchange(data):
            return
        state = self._pool.pop() if self._pool else strategy.new_state()
        for stage in range(strategy.nrounds):
            reqs = strategy.start(stage, data, state)
            if reqs:
                MPI.Request.Waitall(reqs)
            strategy.finish(stage, data, state)
        self._release(state)

    def start(self, data: Any) -> HaloRequest:
        """Begin filling the ghost layers of ``data``; call ``wait()`` on the result.

        Exchanges that are in flight together must be started, and completed, in
        the same order on every rank (messages are matched by order, as in any MPI
        code).
        """
        self._check(data)
        state = self._pool.pop() if self._pool else self.strategy.new_state()
        return HaloRequest(self, data, state)

    def adjoint(self, data: Any) -> None:
        """Apply the adjoint of :meth:`exchange` in place (blocking).

        The exchange copies owned cells into neighbours' ghosts; its adjoint sends
        every filled ghost cell back to the cell it came from, *adds* it there and
        zeroes the ghost (ghosts at a non-periodic edge, never filled, are left as
        they are).  Stages run in reverse order, so corner contributions travel back
        through the same path.  This is the backward pass of a halo-exchanging layer:
        ``<exchange(x), y> == <x, adjoint(y)>`` over the ghosted arrays of all ranks.
        """
        self._check(data)
        self.strategy.adjoint(data)

    @property
    def nbytes(self) -> int:
        """Bytes this rank sends per exchange (received bytes are the same)."""
        return self.layout.nbytes

    @property
    def copy_nbytes(self) -> int:
        """Bytes copied locally per exchange (periodic dimensions held by one rank)."""
        return self.layout.copy_nbytes

    @property
    def messages(self) -> int:
        """Point-to-point messages this rank sends per exchange."""
        return self.layout.messages

    def free(self) -> None:
        """Free MPI datatypes and persistent requests; the plan is unusable afterwards."""
        free_state = getattr(self.strategy, "free_state", None)
        for state in self._pool:
            if free_state is not None:
                free_state(state)
        self._pool.clear()
        self.strategy.free()

    def __del__(self) -> None:  # Free is local; safe to do when the plan is dropped
        try:
            if MPI.Is_initialized() and not MPI.Is_finalized():
                self.free()
        except Exception:
            pass

    # -- internals -----------------------------------------------------------------------
    def _check(self, data: Any) -> None:
        if type(data) is np.ndarray and not self.on_device:  # the hot path: one cheap test
            if data.shape == self._shape and data.dtype == self.dtype and is_contiguous(data, self.order):
                return
        if tuple(data.shape) != self._shape:
            raise ValueError(f"array shape {tuple(data.shape)} != ghosted shape {self._shape}")
        if np.dtype(data.dtype) != self.dtype:
            raise TypeError(f"array dtype {data.dtype} does not match the plan's {self.dtype}")
        if is_device_array(data) != self.on_device or (self.on_device and array_module(data) is not self.xp):
            raise TypeError(f"{type(data).__name__} is not an array of the plan's module {self.xp.__name__}")
        if not is_contiguous(data, self.order):
            raise ValueError(f"halo exchange needs a {self.order}-contiguous ghosted array")

    def _release(self, state: Any) -> None:
        if len(self._pool) < self.POOL:
            self._pool.append(state)
            return
        free_state = getattr(self.strategy, "free_state", None)
        if free_state is not None:
            free_state(state)


def _layout(decomp: Any, dtype: Any, order: str, corners: bool) -> HaloLayout:
    """The decomposition's cached :class:`HaloLayout` for these parameters."""
    key = ("layout", np.dtype(dtype).str, bool(corners), order)
    cache = decomp.plan_cache()
    if key not in cache:
        cache[key] = HaloLayout(decomp, dtype, order, corners)
    return cache[key]


def get_plan(
    decomp: Any, dtype: Any, xp: Any = None, method: str = "auto", corners: bool = True, order: str = "C"
) -> HaloExchange:
    """Return the cached plan for these parameters, building it on first use.

    With ``method="auto"`` the first call for a (dtype, array kind, corners, order)
    is collective over ``decomp.cart`` (rank 0 chooses, see :func:`resolve_method`).
    """
    xp = xp_from_name(xp)
    layout = _layout(decomp, dtype, order, corners)
    resolved = resolve_method(decomp, layout, xp is not np, method)
    key = (np.dtype(dtype).str, xp.__name__, resolved, bool(corners), order)
    cache = decomp.plan_cache()
    plan = cache.get(key)
    if plan is None:
        plan = cache[key] = HaloExchange(decomp, dtype, xp, resolved, corners, order)
    return plan


def plan_for(data: Any, decomp: Any, method: str = "auto", corners: bool = True) -> HaloExchange:
    """Plan matching an existing ghosted array (dtype, module, memory order).

    ``data`` may be a NumPy, CuPy or Numba-CUDA device array.
    """
    xp = array_module(data)
    order = "C" if is_contiguous(data, "C") else "F"
    return get_plan(decomp, data.dtype, xp, method, corners, order)
