"""Checked, resolved run parameters of the flux app (from a validated config dict).

All checks run on every rank before any communication, so bad input raises the
same :class:`~hpcml.config.ConfigError` everywhere instead of hanging a job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpcml.apps.flux.grid import DIFF_FACTOR, HUGE, KMS_TO_RSH
from hpcml.config import ConfigError

__all__ = ["Params", "per_realization"]

KINDS = ("map", "bipolar", "soccer", "gaussians", "zero")
SCHEMES = ("weno3", "upwind")
TIME_SCHEMES = ("ssprk43", "ssprk33", "euler")
DIFF_METHODS = ("rkg2", "rkl2", "euler")


def per_realization(name: str, values: Any, n: int) -> np.ndarray:
    """Expand a per-realization list: one value for all, or exactly ``n`` values."""
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{name} must be a non-empty list (one value, or one per realization), got {values!r}")
    try:
        arr = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must hold numbers, got {values!r}") from None
    if len(arr) == 1:
        return np.full(n, arr[0])
    if len(arr) != n:
        raise ConfigError(
            f"{name} has {len(arr)} values but realizations.n = {n}: give one value (for all) or exactly {n}"
        )
    return arr


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} = {value!r} is not one of {', '.join(allowed)}")
    return value


@dataclass
class Params:
    """Everything the solver needs, in code units where the solver uses them."""

    cfg: dict[str, Any]

    def __post_init__(self) -> None:
        c = self.cfg
        g, ini, tm, fl, df, src, da, out = (
            c["grid"], c["initial"], c["time"], c["flow"], c["diffusion"], c["source"], c["assimilation"], c["output"],
        )  # fmt: skip
        n = c["realizations"]["n"]
        if not 1 <= n <= 100000:
            raise ConfigError(f"realizations.n must be >= 1, got {n}")
        self.n_real = n
        self.kind = _choice("initial.kind", ini["kind"], KINDS)
        self.map_path = g["map"]
        if self.kind == "map" and not self.map_path:
            raise ConfigError('initial.kind = "map" needs grid.map (the HipFT HDF5 input map)')
        if self.map_path and self.kind not in ("map", "soccer", "gaussians"):
            raise ConfigError(f'grid.map is set but initial.kind = {self.kind!r}; use kind = "map"')
        self.res_nt, self.res_np = g["res_nt"], g["res_np"]
        if not self.map_path and (self.res_nt < 3 or self.res_np < 4):
            raise ConfigError(f"grid.res_nt >= 3 and grid.res_np >= 4 are required, got {self.res_nt} x {self.res_np}")
        self.weno_eps = g["weno_eps"]
        self.t_start, self.t_end = tm["start"], tm["end"]
        if not self.t_end > self.t_start:
            raise ConfigError(f"time.end ({self.t_end}) must be after time.start ({self.t_start})")
        if tm["dt_max"] < 0:
            raise ConfigError(f"time.dt_max must be >= 0 (0 = no limit), got {tm['dt_max']}")
        self.dt_max = tm["dt_max"] if tm["dt_max"] > 0 else HUGE
        self.dt_min = tm["dt_min"]
        # flows
        self.advance_flow = fl["advance"]
        self.weno = _choice("flow.scheme", fl["scheme"], SCHEMES) == "weno3"
        self.time_scheme = _choice("flow.time_scheme", fl["time_scheme"], TIME_SCHEMES)
        self.upwind = fl["upwind"]
        self.omega = fl["vp_rigid_omega"]
        self.vt_const = fl["vt_const"]
        if self.kind == "gaussians":
            # HipFT validation 2 overrides nonzero flows: exactly pi/2 in theta and one
            # rotation in phi over the run (the given value only switches them on).
            span = self.t_end - self.t_start
            if self.vt_const != 0:
                self.vt_const = (math.pi / 2) / span / KMS_TO_RSH
            if self.omega != 0:
                self.omega = 2 * math.pi / span / KMS_TO_RSH
        self.flow_list = fl["list"]
        self.flow_dir = fl["directory"]
        if self.flow_list and not Path(self.flow_list).is_file():
            raise ConfigError(f"flow.list file {self.flow_list!r} does not exist")
        if self.flow_dir and not self.flow_list:
            raise ConfigError("flow.directory is set but flow.list is empty (the flow files are listed there)")
        self.rigid_omega = float(fl["rigid_omega"])
        axis = fl["rigid_axis"]
        if not (isinstance(axis, list) and len(axis) == 2 and all(isinstance(v, (int, float)) for v in axis)):
            raise ConfigError(f"flow.rigid_axis must be [colatitude, longitude] in degrees, got {axis!r}")
        if not 0.0 <= axis[0] <= 180.0:
            raise ConfigError(f"flow.rigid_axis colatitude must be in [0, 180] degrees, got {axis[0]}")
        self.rigid_axis = (math.radians(axis[0]), math.radians(axis[1]))
        self.attenuate = fl["attenuate"]
        self.att_b0 = per_realization("flow.attenuate_values", fl["attenuate_values"], n)
        for key, model in (("dr_model", fl["dr_model"]), ("mf_model", fl["mf_model"])):
            if model not in (0, 1):
                raise ConfigError(f"flow.{key} must be 0 (off) or 1, got {model}")
        self.dr_model, self.mf_model = fl["dr_model"], fl["mf_model"]
        self.dr = np.stack([per_realization(f"flow.dr_{p}", fl[f"dr_{p}"], n) for p in ("p0", "p2", "p4")], axis=1)
        self.mf = np.stack([per_realization(f"flow.mf_{p}", fl[f"mf_{p}"], n) for p in ("p1", "p3", "p5")], axis=1)
        # diffusion
        self.advance_diffusion = df["advance"]
        self.diff_coef = per_realization("diffusion.coef", df["coef"], n)
        if np.any(self.diff_coef < 0):
            bad = int(np.argmax(self.diff_coef < 0))
            raise ConfigError(f"diffusion.coef must be >= 0 km^2/s; realization {bad + 1} has {self.diff_coef[bad]}")
        if df["coef_factor"] <= 0:
            raise ConfigError(f"diffusion.coef_factor must be positive, got {df['coef_factor']}")
        self.diff_factor = df["coef_factor"] or DIFF_FACTOR
        self.diff_method = _choice("diffusion.method", df["method"], DIFF_METHODS)
        if df["subcycles"] < 0:
            raise ConfigError(f"diffusion.subcycles must be >= 0 (0 = automatic), got {df['subcycles']}")
        self.subcycles = df["subcycles"]
        self.diff_map = df["map"]
        self.diff_grid = bool(df["grid_term"])
        if self.diff_map and not Path(self.diff_map).is_file():
            raise ConfigError(f"diffusion.map file {self.diff_map!r} does not exist")
        if self.advance_diffusion and not (np.any(self.diff_coef > 0) or self.diff_map or self.diff_grid):
            raise ConfigError("diffusion.advance is on but every diffusion.coef is 0 (and no diffusion.map)")
        # sources
        self.advance_source = src["advance"]
        if src["rfe_model"] not in (0, 1, 2):
            raise ConfigError(f"source.rfe_model must be 0 (off), 1 or 2, got {src['rfe_model']}")
        self.rfe_model = src["rfe_model"]
        self.source_file = src["file"]
        if self.source_file and not Path(self.source_file).is_file():
            raise ConfigError(f"source.file {self.source_file!r} does not exist")
        if self.advance_source and not (self.rfe_model or self.source_file):
            raise ConfigError("source.advance needs source.rfe_model 1 or 2, or a source.file")
        if src["lifetime"] <= 0:
            raise ConfigError(f"source.lifetime must be positive, got {src['lifetime']}")
        self.rfe_flux = per_realization("source.flux_per_hour", src["flux_per_hour"], n)
        # assimilation
        self.assimilate = da["enabled"]
        if self.assimilate and not da["list"]:
            raise ConfigError("assimilation.enabled needs assimilation.list (the HipFT map list)")
        if self.assimilate and not Path(da["list"]).is_file():
            raise ConfigError(f"assimilation.list file {da['list']!r} does not exist")
        self.da_mu_power = per_realization("assimilation.mu_power", da["mu_power"], n)
        self.da_mu_limit = per_realization("assimilation.mu_limit", da["mu_limit"], n)
        # output
        for key in ("map_cadence", "history_cadence", "checkpoint_cadence", "map_steps"):
            if out[key] < 0:
                raise ConfigError(f"output.{key} must be >= 0, got {out[key]}")
        if out["map_cadence"] > 0 and out["map_steps"] > 0:
            raise ConfigError(
                f"output.map_cadence = {out['map_cadence']} and output.map_steps = {out['map_steps']}: "
                "give maps by time or by step count, not both"
            )
        if out["hipft_first_index"] < 0:
            raise ConfigError(f"output.hipft_first_index must be >= 0, got {out['hipft_first_index']}")
        if out["hipft_flow_dir"] and not out["flows"]:
            raise ConfigError("output.hipft_flow_dir is set but output.flows is false")
        if not 0 <= out["pole_flux_lat_limit"] <= 90:
            raise ConfigError(
                f"output.pole_flux_lat_limit must be in [0, 90] degrees, got {out['pole_flux_lat_limit']}"
            )
        self.strang = c["splitting"]["strang"]
        dims = c["decomposition"]["dims"]
        if len(dims) != 2 or not all(isinstance(d, int) for d in dims):
            raise ConfigError(f"decomposition.dims must be two integers (theta, phi), got {dims!r}")
        if not (self.advance_flow or self.advance_diffusion or self.advance_source or self.assimilate):
            raise ConfigError("nothing to do: enable flow.advance, diffusion.advance, source.advance or assimilation")

    @property
    def diff_code(self) -> np.ndarray:
        """Diffusivity per realization in R_sun^2/h."""
        return self.diff_factor * self.diff_coef
