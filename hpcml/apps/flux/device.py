"""Where the flux solver's fields live and which kernels run on them: ``cpu``, ``gpu`` or ``sim``.

One small class per place, behind :data:`DEVICES`:

* :class:`CpuDevice` -- NumPy fields, the Numba CPU kernels of :mod:`hpcml.kernels.flux`,
  halos through :class:`~hpcml.distarray.DistArray` (``datatype``/``pack``);
* :class:`CudaDevice` -- fields on the GPU (CuPy arrays; Numba-CUDA device arrays in
  Numba's CUDA simulator, ``sim``), the Numba-CUDA kernels of
  :mod:`hpcml.kernels.flux_cuda`, halos through the ``staged``/``device`` paths.

The solver's components call the operations here and never touch a field's memory
directly, so the same time loop runs on either.  Setup (initial field, pole
averages, flux balance), assimilation and output work on host copies
(:meth:`Device.get` / :meth:`Device.put`): they happen at setup or at output
cadence, not every stage.  A reduction's result that the time loop needs on the
host (a CFL rate, the practical-limit maximum) is one scalar copied back.

:func:`resolve_device` turns ``[run] backend`` (or ``HPCML_BACKEND``) into a device:
``auto`` is the GPU when CuPy sees one, else the CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcml.config import ConfigError

__all__ = [
    "DEVICES", "CpuDevice", "CudaDevice", "Device", "DeviceField", "backend_name", "resolve_device",
]  # fmt: skip

_HUGE = float(np.finfo(np.float64).max)


@dataclass
class DeviceField:
    """A ghosted field on a device: its decomposition and the device array (like a DistArray)."""

    decomp: Any
    data: Any


def numpy_scaled_add(y: np.ndarray, a: float, x: np.ndarray | None, b: float) -> None:
    """``y = a*y + b*x`` as NumPy statements (``y *= a``, ``y = b*x``, ``y += x``); the CPU fallback and reference."""
    if b == 0.0:
        y *= a
    elif a == 0.0:
        np.multiply(x, b, out=y)
    elif a == 1.0 and b == 1.0:
        y += x
    else:
        y *= a
        y += b * x


class Device(ABC):
    """Memory, halo exchange and kernel launches for one kind of array."""

    name: str = ""
    on_device: bool = False

    # -- memory --------------------------------------------------------------------------------
    @abstractmethod
    def put(self, host: np.ndarray) -> Any:
        """A device array holding ``host`` (the array itself on the CPU)."""

    @abstractmethod
    def get(self, arr: Any) -> np.ndarray:
        """A host copy of ``arr`` (the array itself on the CPU)."""

    @abstractmethod
    def field(self, decomp: Any) -> Any:
        """A zero ghosted field of ``decomp``'s local shape."""

    @abstractmethod
    def exchange(self, fld: Any, method: str) -> None:
        """Fill the face halos of ``fld`` (no corners: every stencil is axis-aligned)."""

    def phi_wrap(self, fld: Any) -> int:
        """The phi halo width a stage kernel fills itself for ``fld`` (a block alone in phi), else 0.

        Only the CPU kernels do (see ``kernels.flux.diff_stage``); a caller whose kernel
        filled the halo skips :meth:`exchange`.
        """
        return 0

    @abstractmethod
    def copy_into(self, dst: Any, src: Any) -> None:
        """``dst[...] = src`` (same device)."""

    # -- element-wise ------------------------------------------------------------------------------
    @abstractmethod
    def scaled_add(self, y: Any, a: float, x: Any, b: float) -> None:
        """``y = a*y + b*x`` on the whole array (``x`` not read when ``b == 0``)."""

    # -- kernels (same arguments as hpcml.kernels.flux unless said otherwise) ------------------
    @abstractmethod
    def advect_stage(self, *args: Any, wrap: int = 0) -> None:
        """:func:`hpcml.kernels.flux.advect_stage` (cap values as arrays on the device).

        ``args`` end with the row chunks and the scratch; ``wrap > 0`` (only from
        :meth:`phi_wrap`): the kernel fills the phi halo too.
        """

    def advect_step(self, *args: Any) -> bool:
        """Every stage of an advection step in one call (:func:`hpcml.kernels.flux.advect_step`).

        Only for a block that holds whole realizations (:meth:`phi_wrap` > 0, both
        poles).  Returns False where this device has no such kernel: the caller then
        runs the stages one by one.
        """
        return False

    @abstractmethod
    def pole_terms(self, kind: str, *args: Any) -> None:
        """``adv_pole_terms`` or ``diff_pole_terms`` into a terms array on the device."""

    @abstractmethod
    def cap_sums(self, terms: Any, na: int, fac_a: float, sign_a: float, out_a: Any, fac_b: float, sign_b: float,
                 out_b: Any) -> None:  # fmt: skip
        """Row sums of ``terms`` in column order into the cap arrays (see ``kernels.flux.cap_sums``)."""

    @abstractmethod
    def diff_stage(self, var: Any, *args: Any, wrap: int = 0) -> None:
        """The fused diffusion stage; ``var`` is a :class:`VariableDiffusivity` (device copies) or None.

        ``wrap > 0`` (only from :meth:`phi_wrap`): the kernel fills the phi halo too.
        """

    def diff_sts_stages(self, *args: Any) -> bool:
        """Stages ``2..s`` of a super-step in one call (:func:`hpcml.kernels.flux.diff_sts_stages`).

        Only for a block that holds whole realizations (:meth:`phi_wrap` > 0, both poles)
        with a uniform diffusivity.  Returns False where this device has no such kernel:
        the caller then runs the stages one by one.
        """
        return False

    @abstractmethod
    def flows(self, fl: Any, f: Any, attenuate: bool, bounds: tuple[int, ...], wrap: int = 0) -> None:
        """Fill ``fl.vt``/``fl.vp`` from the profiles (+ base flows), attenuated with the field ``f``.

        ``wrap``: :meth:`phi_wrap` of the flows (the kernel fills their phi halo; 0 here).
        """

    @abstractmethod
    def lf_alpha(self, *args: Any, wrap: int = 0) -> None:
        """:func:`hpcml.kernels.flux.lf_alpha` (``wrap`` as in :meth:`flows`)."""

    @abstractmethod
    def cfl_kappa(self, *args: Any) -> float:
        """The block's largest advective rate (host float)."""

    def lf_alpha_kappa(self, lf_args: tuple[Any, ...], cfl_args: tuple[Any, ...], wrap: int = 0) -> float:
        """:meth:`lf_alpha` with ``lf_args``, then :meth:`cfl_kappa` with ``cfl_args`` (rows among the owned ones)."""
        self.lf_alpha(*lf_args, wrap=wrap)
        return self.cfl_kappa(*cfl_args)

    @abstractmethod
    def ptl_max(self, *args: Any) -> float:
        """The block's largest ``|y|`` where ``|x| > 1e-14`` (host float, -1 if none)."""

    @abstractmethod
    def ptl_tau(self, *args: Any) -> float:
        """The block's smallest practical-limit candidate (host float)."""

    @abstractmethod
    def source_add(self, f: Any, static: Any, fr1: Any, fr2: Any, alpha: float, dt: float, box: tuple) -> None:
        """``f += dt * (static + (1 - alpha) fr1 + alpha fr2)`` on the owned box (None parts left out)."""


class CpuDevice(Device):
    """NumPy fields and the Numba CPU kernels."""

    name = "cpu"
    on_device = False

    def put(self, host: np.ndarray) -> np.ndarray:
        """The host array itself."""
        return host

    def get(self, arr: np.ndarray) -> np.ndarray:
        """The host array itself."""
        return arr

    def field(self, decomp: Any) -> Any:
        """A zero :class:`~hpcml.distarray.DistArray`."""
        from hpcml.distarray import DistArray

        return DistArray.zeros(decomp, dtype="f8")

    def exchange(self, fld: Any, method: str) -> None:
        """``DistArray.exchange_halos`` (faces only); a block alone in its group: the periodic copy itself.

        A group of one rank has no neighbour in theta and is its own neighbour in phi, so
        its exchange is two slice copies of the owned rows (the same bytes the halo plan
        moves, without its per-call bookkeeping: a step makes about 15 exchanges).
        """
        if not _periodic_self_copy(fld):
            fld.exchange_halos(method=method, corners=False)

    def phi_wrap(self, fld: Any) -> int:
        """The phi halo width when ``fld``'s block is alone in its group (periodic in phi), else 0."""
        d = fld.decomp
        return int(d.halo[2]) if d.size == 1 and d.periodic[2] else 0

    def copy_into(self, dst: np.ndarray, src: np.ndarray) -> None:
        """NumPy copy."""
        np.copyto(dst, src)

    def scaled_add(self, y: np.ndarray, a: float, x: np.ndarray, b: float) -> None:
        """:func:`hpcml.kernels.flux.scaled_add` on the flat arrays (NumPy where one is not contiguous).

        The compiled loop runs on every Numba thread and needs no temporary for ``a*y + b*x``.
        """
        if y.flags.c_contiguous and (x is None or x.flags.c_contiguous):
            from hpcml.kernels.flux import scaled_add

            yf = y.reshape(-1)
            scaled_add(yf, float(a), yf if x is None else x.reshape(-1), float(b))
        else:
            numpy_scaled_add(y, a, x, b)

    def advect_stage(self, *args: Any, wrap: int = 0) -> None:
        """The Numba kernel (chunked rows, per-thread scratch; ``wrap``: see :meth:`phi_wrap`)."""
        from hpcml.kernels.flux import advect_stage

        *head, nch, scratch = args
        advect_stage(*head, wrap, nch, scratch)

    def advect_step(self, *args: Any) -> bool:
        """The Numba kernel (see :meth:`Device.advect_step`)."""
        from hpcml.kernels.flux import advect_step

        advect_step(*args)
        return True

    def pole_terms(self, kind: str, *args: Any) -> None:
        """``adv_pole_terms`` / ``diff_pole_terms``."""
        from hpcml.kernels import flux

        getattr(flux, f"{kind}_pole_terms")(*args)

    def cap_sums(self, *args: Any) -> None:
        """:func:`hpcml.kernels.flux.cap_sums`."""
        from hpcml.kernels.flux import cap_sums

        cap_sums(*args)

    def diff_stage(self, var: Any, *args: Any, wrap: int = 0) -> None:
        """``diff_stage`` or ``diff_stage_var`` (``wrap``: see :meth:`phi_wrap`)."""
        from hpcml.kernels.flux import diff_stage, diff_stage_var

        (x, xm2, u0, y0, out, dcoef, s2, c2, c4, b1, b5, *rest) = args
        if var is None:
            diff_stage(*args, wrap)
        else:
            diff_stage_var(x, xm2, u0, y0, out, dcoef, var.phi_face, var.theta_face, s2, c2, c4, b1, b5, *rest,
                           wrap, var.scratch)  # fmt: skip

    def diff_sts_stages(self, *args: Any) -> bool:
        """The Numba kernel, its work shared among this process's Numba threads.

        Realizations that do not divide evenly among the threads are split by rows
        (see the kernel).  Before, the kernel gave each thread whole realizations and
        was declined when that left a thread idle too long (then each stage was a
        Python round trip).  One 9-stage call on 2 threads, best of 30 alternating with
        whole realizations only (``shares=1``): 5 x 180 x 360 (1cr) 1.13 -> 0.94 ms,
        1 x 512 x 1024 (diffuse_dipole) 3.49 -> 1.64 ms, 4 x 180 x 360 unchanged.
        """
        from numba import get_num_threads

        from hpcml.kernels.flux import diff_sts_stages

        diff_sts_stages(*args, get_num_threads())
        return True

    def flows(self, fl: Any, f: Any, attenuate: bool, bounds: tuple[int, ...], wrap: int = 0) -> None:
        """The Numba fill (``exp(-2 |f| / B0)`` once per cell inside it, SIMD; the phi halo if ``wrap``)."""
        from hpcml.kernels.flux import flow_fill

        flow_fill(fl.vt, fl.vp, fl.vt_prof, fl.vp_prof, fl.vt_base, fl.vp_base, fl.has_base, f, fl.inv_b0, fl.th,
                  attenuate, *bounds, wrap)  # fmt: skip

    def lf_alpha(self, *args: Any, wrap: int = 0) -> None:
        """The Numba kernel."""
        from hpcml.kernels.flux import lf_alpha

        lf_alpha(*args, wrap)

    def cfl_kappa(self, *args: Any) -> float:
        """The Numba kernel."""
        from hpcml.kernels.flux import cfl_kappa

        return float(cfl_kappa(*args))

    def lf_alpha_kappa(self, lf_args: tuple[Any, ...], cfl_args: tuple[Any, ...], wrap: int = 0) -> float:
        """Both in one sweep over the velocity rows (:func:`hpcml.kernels.flux.lf_alpha_kappa`)."""
        from hpcml.kernels.flux import lf_alpha_kappa

        dt_i, st_i, dp_i, ia, ib = cfl_args[2:7]  # the velocities and columns are lf_args'
        return float(lf_alpha_kappa(*lf_args, wrap, dt_i, st_i, dp_i, ia, ib))

    def ptl_max(self, *args: Any) -> float:
        """The Numba kernel."""
        from hpcml.kernels.flux import ptl_max

        return float(ptl_max(*args))

    def ptl_tau(self, *args: Any) -> float:
        """The Numba kernel."""
        from hpcml.kernels.flux import ptl_tau

        return float(ptl_tau(*args))

    def source_add(self, f: Any, static: Any, fr1: Any, fr2: Any, alpha: float, dt: float, box: tuple) -> None:
        """NumPy on the owned box, in HipFT's order (file, then the emergence's interpolation)."""
        i0, i1, c0, c1 = box
        own = (slice(None), slice(i0, i1), slice(c0, c1))
        src = np.zeros(f[own].shape)
        if static is not None:
            src = src + static[None, i0:i1, c0:c1]
        if fr1 is not None:
            src = src + ((1.0 - alpha) * fr1[own] + alpha * fr2[own])
        f[own] += dt * src


class CudaDevice(Device):
    """Fields on a GPU (CuPy), or Numba-CUDA device arrays in the CUDA simulator (``sim``)."""

    on_device = True

    def __init__(self, name: str) -> None:
        from hpcml.kernels import flux_cuda

        self.name = name
        self.k = flux_cuda
        self._one = self.put(np.zeros(1))
        self._dummy2 = self.put(np.zeros((1, 1)))
        self._dummy3 = self.put(np.zeros((1, 1, 1)))

    def put(self, host: np.ndarray) -> Any:
        """``cupy.asarray`` on a GPU, ``numba.cuda.to_device`` in the simulator."""
        host = np.ascontiguousarray(host)
        if self.name == "gpu":
            import cupy

            return cupy.asarray(host)
        from numba import cuda

        return cuda.to_device(host)

    def get(self, arr: Any) -> np.ndarray:
        """A host copy."""
        if hasattr(arr, "copy_to_host"):
            return arr.copy_to_host()
        import cupy

        return cupy.asnumpy(arr)

    def field(self, decomp: Any) -> DeviceField:
        """A zero field on the device."""
        return DeviceField(decomp, self.put(np.zeros(decomp.ghosted_shape)))

    def exchange(self, fld: Any, method: str) -> None:
        """The device halo plan (``staged`` or ``device``; ``auto`` picks); alone in its group: two copies.

        A block alone in its group on a GPU (CuPy) copies its periodic phi halo with two
        device slice assignments, like :meth:`CpuDevice.exchange`; the simulator keeps the
        plan, so CI exercises it.
        """
        from hpcml.halo import plan_for

        if self.name == "gpu" and _periodic_self_copy(fld):
            return
        m = method if method in ("staged", "device") else "auto"
        plan_for(fld.data, fld.decomp, method=m, corners=False).exchange(fld.data)

    def copy_into(self, dst: Any, src: Any) -> None:
        """A device copy (``dst = 0*dst + 1*src``)."""
        self.k.scaled_add(self.name, dst, 0.0, src, 1.0)

    def scaled_add(self, y: Any, a: float, x: Any, b: float) -> None:
        """One element-wise kernel."""
        self.k.scaled_add(self.name, y, a, y if x is None else x, b)

    def advect_stage(self, *args: Any, wrap: int = 0) -> None:
        """One thread per cell (its four faces' fluxes and the stage; ``wrap`` is always 0 here)."""
        *head, _nch, _scratch = args
        self.k.advect_stage(self.name, *head)

    def pole_terms(self, kind: str, *args: Any) -> None:
        """One thread per owned column."""
        getattr(self.k, f"{kind}_pole_terms")(self.name, *args)

    def cap_sums(self, *args: Any) -> None:
        """One thread per row of the terms."""
        self.k.cap_sums(self.name, *args)

    def diff_stage(self, var: Any, *args: Any, wrap: int = 0) -> None:
        """One thread per cell; a varying diffusivity reads its face arrays (``wrap`` is always 0 here)."""
        (x, xm2, u0, y0, out, dcoef, s2, c2, c4, b1, b5, *rest) = args
        pf = var.phi_face if var is not None else self._dummy2
        tf = var.theta_face if var is not None else self._dummy2
        self.k.diff_stage(self.name, x, xm2, u0, y0, out, dcoef, pf, tf, var is not None, s2, c2, c4, b1, b5, *rest)

    def flows(self, fl: Any, f: Any, attenuate: bool, bounds: tuple[int, ...], wrap: int = 0) -> None:
        """Profiles, base flows and ``tanh`` attenuation in one kernel (``wrap`` is always 0 here)."""
        self.k.att_flow_fill(self.name, fl.vt, fl.vp, fl.vt_prof, fl.vp_prof, fl.vt_base, fl.vp_base, fl.has_base, f,
                             fl.inv_b0, attenuate, *bounds)  # fmt: skip

    def lf_alpha(self, *args: Any, wrap: int = 0) -> None:
        """One thread per cell (``wrap`` is always 0 here)."""
        self.k.lf_alpha(self.name, *args)

    def _reduce(self, launch: Any, init: float, *args: Any) -> float:
        out = self.put(np.array([init]))
        launch(self.name, *args, out)
        return float(self.get(out)[0])

    def cfl_kappa(self, *args: Any) -> float:
        """Atomic max over the block, one scalar back."""
        return self._reduce(self.k.cfl_kappa, 0.0, *args)

    def ptl_max(self, *args: Any) -> float:
        """Atomic max over the block, one scalar back."""
        return self._reduce(self.k.ptl_max, -1.0, *args)

    def ptl_tau(self, *args: Any) -> float:
        """Atomic min over the block, one scalar back."""
        return self._reduce(self.k.ptl_tau, _HUGE, *args)

    def source_add(self, f: Any, static: Any, fr1: Any, fr2: Any, alpha: float, dt: float, box: tuple) -> None:
        """One kernel over the owned box."""
        self.k.source_add(
            self.name, f, self._dummy2 if static is None else static, static is not None,
            self._dummy3 if fr1 is None else fr1, self._dummy3 if fr2 is None else fr2, fr1 is not None, alpha, dt,
            *box,
        )  # fmt: skip


def _periodic_self_copy(fld: Any) -> bool:
    """Fill the phi halo of a block alone in its group by slice copies; False if it has neighbours."""
    d = fld.decomp
    if d.size != 1 or not d.periodic[2]:
        return False
    h, nx = d.halo[2], d.local_shape[2]
    x = fld.data
    if isinstance(x, np.ndarray):
        from hpcml.kernels.flux import periodic_phi_fill

        periodic_phi_fill(x, d.halo[1], d.halo[1] + d.local_shape[1], h, nx)
        return True
    rows = slice(d.halo[1], d.halo[1] + d.local_shape[1])
    x[:, rows, :h] = x[:, rows, nx : nx + h]
    x[:, rows, nx + h :] = x[:, rows, h : 2 * h]
    return True


DEVICES: dict[str, type[Device]] = {"cpu": CpuDevice, "gpu": CudaDevice, "sim": CudaDevice}


def backend_name(config: dict[str, Any]) -> str:
    """``[run] backend`` of a flux config; ``auto`` there defers to ``HPCML_BACKEND`` (``hpcml.settings.rc``)."""
    from hpcml.settings import rc

    name = str(config.get("run", {}).get("backend", "auto")).strip().lower()
    return rc.backend if name == "auto" else name


def resolve_device(requested: str) -> Device:
    """The device for ``[run] backend`` (``auto|cpu|gpu|sim``), checked before anything runs.

    Raises
    ------
    ConfigError
        For an unknown name, ``gpu`` without a usable CuPy and CUDA device, or ``sim``
        without ``NUMBA_ENABLE_CUDASIM=1``.
    """
    from hpcml.backend import gpu_count, simulator_enabled

    name = str(requested).strip().lower()
    if name == "auto":
        name = "gpu" if gpu_count() > 0 else "cpu"
    if name not in DEVICES:
        raise ConfigError(f"run.backend = {requested!r} is not one of auto, {', '.join(DEVICES)}")
    if name == "gpu" and gpu_count() == 0:
        raise ConfigError("run.backend = 'gpu' but CuPy sees no CUDA device (pip install 'hpcml[gpu]' on a GPU node)")
    if name == "sim" and not simulator_enabled():
        raise ConfigError("run.backend = 'sim' needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")
    return DEVICES[name](name) if name != "cpu" else CpuDevice()
