"""What the flux solver's components share: the fixed context and the evolving state.

* :class:`FluxContext` -- fixed for a run: the checked parameters, the grid, this rank's
  layout, the device, the block's geometry (on the host and on the device), the
  communicator and the halo method.  Every component receives it and reads what it
  uses; nothing in it changes after setup.
* :class:`FluxState` -- what evolves: the field and its work arrays, the clock (time,
  step, time step and its flags) and the output counters.  :meth:`FluxState.state` and
  :meth:`FluxState.restore` are its part of a checkpoint; the components that carry
  state of their own (flow files, sources, assimilation) have ``state()``/``restore()``
  too, and the checkpoint code only calls these.

Components take the context at construction and the state (or a field) when they act,
so no component holds another or the solver, and they can be built in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FluxContext", "FluxState"]


@dataclass
class FluxContext:
    """Fixed for a run: parameters, grid, layout, device, geometry, communicator."""

    cfg: dict[str, Any]
    prm: Any  # hpcml.apps.flux.params.Params
    grid: Any  # hpcml.apps.flux.grid.SphereGrid
    lay: Any  # hpcml.apps.flux.layout.Layout
    dev: Any  # hpcml.apps.flux.device.Device
    world: Any  # the communicator of every rank of the run
    halo_method: str
    geo: dict[str, np.ndarray]  # the block's slices of the global 1-D geometry (host)
    dgeo: dict[str, Any]  # the same arrays on the device (the same objects on the CPU)
    exchanges: int = 0  # halo exchanges so far (the performance model counts them)

    @property
    def rank0(self) -> bool:
        """World rank 0 (writes histories and logs)."""
        return self.world.Get_rank() == 0

    def new_field(self, planes: int | None = None) -> Any:
        """A zero ghosted field of ``planes`` stacked 2-D fields (default: one per realization) on the device."""
        return self.dev.field(self.lay.decomp_of(self.lay.nr if planes is None else planes))

    def exchange(self, fld: Any) -> None:
        """Fill the halo of ``fld`` (faces only: every stencil here is axis-aligned)."""
        self.exchanges += 1
        self.dev.exchange(fld, self.halo_method)


@dataclass
class FluxState:
    """What evolves: the field, its work arrays, the clock and the output counters.

    ``f`` is the field (a ghosted ``(nr, NY, NX)`` block on the device); ``work`` and
    ``ybuf`` are same-shaped scratch fields that integrators swap with ``f``.
    """

    ctx: FluxContext = field(repr=False)
    f: Any
    work: list[Any]
    ybuf: Any
    time: float
    step: int = 0
    dt: float = 0.0
    dt_flag: bool = True  # recompute the time step at the next step
    dt_adv_used: float = 0.0
    hist_rows: int = 0
    next_map_time: float | None = None
    next_ckpt_time: float | None = None
    maps_written: int = 0
    map_step: int = -1  # step of the last initial/cadence map (restarts rewrite it)

    # -- the field ----------------------------------------------------------------------------
    def swap_field(self, fld: Any) -> None:
        """Make ``fld`` the field; the old field takes ``fld``'s place among the work arrays."""
        for i, w in enumerate(self.work):
            if w is fld:
                self.work[i] = self.f
                self.f = fld
                return
        if self.ybuf is fld:
            self.ybuf, self.f = self.f, fld
            return
        raise ValueError("swap_field: not a work array")

    def host_data(self) -> np.ndarray:
        """The field's ghosted block on the host (the array itself on the CPU, a copy from a GPU)."""
        return self.ctx.dev.get(self.f.data)

    def set_host_data(self, data: np.ndarray) -> None:
        """Replace the field's ghosted block with host values, then refresh the halo."""
        dev = self.ctx.dev
        if dev.on_device:
            self.f.data = dev.put(data)
        elif data is not self.f.data:
            self.f.data[...] = data
        self.ctx.exchange(self.f)

    # -- checkpoints ---------------------------------------------------------------------------
    _SCALARS = ("time", "step", "dt", "hist_rows", "next_map_time", "next_ckpt_time", "maps_written", "map_step")

    def state(self) -> dict[str, Any]:
        """The clock and counters (the field is checkpointed apart, as a distributed array)."""
        out: dict[str, Any] = {}
        for k in self._SCALARS:
            v = getattr(self, k)
            out[k] = -1.0 if v is None else (int(v) if isinstance(v, int) else float(v))
        return out

    def restore(self, st: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s record: the next step recomputes the time step."""
        for k in self._SCALARS:
            v = st.get(k, -1)
            if k in ("next_map_time", "next_ckpt_time"):
                setattr(self, k, None if float(v) < 0 else float(v))
            elif k in ("step", "hist_rows", "maps_written", "map_step"):
                setattr(self, k, int(v))
            else:
                setattr(self, k, float(v))
        self.dt_flag = True
