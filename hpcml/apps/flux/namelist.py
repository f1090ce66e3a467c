"""HipFT ``hipft.in`` namelists -> full ``flux`` configs.

:func:`config_from_hipft` reads ``&hipft_input_parameters`` with ``f90nml`` and
maps every option of HipFT 1.19 onto the ``flux`` schema.  Options that are not
HipFT options, values of the wrong Fortran type and invalid values raise a
:class:`~hpcml.config.ConfigError` naming them.  Relative input file names are
resolved against the namelist's folder, as HipFT resolves them against its working
directory; HipFT's output folders are relative to ``output.directory``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hpcml.config import ConfigError, default_config

__all__ = ["HIPFT_DEFAULTS", "check_types", "config_from_hipft", "option_kind", "read_namelist"]

_HUGE = float("inf")
MAX_REALIZATIONS = 2000

# Every option of &hipft_input_parameters (HipFT 1.14 - 1.19) with its default.
HIPFT_DEFAULTS: dict[str, Any] = {
    "verbose": 0, "res_nt": 0, "res_np": 0, "n_realizations": 1,
    "initial_map_filename": "", "initial_map_flux_balance": False, "initial_map_mult_fac": 1.0,
    "validation_run": 0, "validation_run_width": 0.03,
    "time_start": 0.0, "time_end": 1.0, "dt_min": 1e-15, "dt_max": _HUGE,
    "output_map_idx_start": 1, "output_map_directory": "output_maps", "output_map_root_filename": "hipft_brmap",
    "output_map_idx_cadence": 0, "output_map_time_cadence": 0.0, "output_map_2d": True,
    "output_map_flux_balance": False, "output_flows": False, "output_flows_directory": "output_flows",
    "output_history_time_cadence": 0.0, "output_single_precision": True,
    "strang_splitting": False, "pole_flux_lat_limit": 30.0,
    "advance_flow": False, "flow_vp_rigid_omega": 0.0, "flow_rigid_omega": 0.0, "flow_vt_const": 0.0,
    "flow_attenuate": False, "flow_attenuate_value": 500.0, "flow_attenuate_values": None,
    "flow_dr_model": 0, "flow_dr_coef_p0_value": 46.0, "flow_dr_coef_p2_value": -262.0,
    "flow_dr_coef_p4_value": -379.0, "flow_dr_coef_p0_values": None, "flow_dr_coef_p2_values": None,
    "flow_dr_coef_p4_values": None,
    "flow_mf_model": 0, "flow_mf_coef_p1_value": 22.0, "flow_mf_coef_p3_value": 11.0,
    "flow_mf_coef_p5_value": -28.0, "flow_mf_coef_p1_values": None, "flow_mf_coef_p3_values": None,
    "flow_mf_coef_p5_values": None,
    "use_flow_from_files": False, "flow_list_filename": "", "flow_root_dir": ".",
    "flow_num_method": 4, "weno_eps": 0.0, "upwind": 1.0,
    "advance_diffusion": False, "diffusion_coef_filename": "", "diffusion_coef_grid": False,
    "diffusion_coef_factor": 7.43162901307967e-09, "diffusion_num_method": 3, "diffusion_subcycles": 0,
    "diffusion_coef_constant": 0.0, "diffusion_coef_constants": None,
    "assimilate_data": False, "assimilate_data_balance_flux": False, "assimilate_data_map_list_filename": "",
    "assimilate_data_map_root_dir": ".", "assimilate_data_custom_from_mu": False,
    "assimilate_data_mu_power": 4.0, "assimilate_data_mu_powers": None,
    "assimilate_data_lat_limit": 0.0, "assimilate_data_lat_limits": None,
    "assimilate_data_mu_limit": 0.1, "assimilate_data_mu_limits": None,
    "assimilate_data_add": False, "assimilate_data_mult_fac": 1.0,
    "advance_source": False, "source_from_file": False, "source_filename": "",
    "source_rfe_model": 0, "source_rfe_total_unsigned_flux_per_hour": 0.0,
    "source_rfe_total_unsigned_flux_per_hours": None, "source_rfe_lifetime": 0.3, "source_rfe_seed": -9999,
}  # fmt: skip


def read_namelist(path: str | Path) -> dict[str, Any]:
    """The ``&hipft_input_parameters`` group of ``path`` (lower-case names)."""
    import f90nml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"HipFT namelist {str(p)!r} does not exist")
    try:
        nml = f90nml.read(str(p))
    except Exception as exc:  # f90nml raises several types on malformed input
        raise ConfigError(f"{p}: cannot parse the namelist: {exc}") from None
    groups = {k.lower(): v for k, v in nml.items()}
    if "hipft_input_parameters" not in groups:
        raise ConfigError(f"{p}: no &hipft_input_parameters group (found {', '.join(groups) or 'none'})")
    grp = groups["hipft_input_parameters"]
    if isinstance(grp, list):
        raise ConfigError(f"{p}: &hipft_input_parameters appears more than once")
    out = {}
    starts = {k.lower(): v for k, v in getattr(grp, "start_index", {}).items()}
    for key, value in grp.items():
        name = key.lower()
        first = (starts.get(name) or [1])[0] or 1
        if first > 1:  # "x(3) = 9." sets element 3 only: earlier ones are unset
            value = [None] * (first - 1) + (value if isinstance(value, list) else [value])  # noqa: PLW2901
        out[name] = value
    return out


_KINDS = {bool: "logical", int: "integer", float: "real", str: "string", type(None): "real list"}
_SPELL = {
    "logical": "a logical (.true. or .false., without quotes)",
    "integer": "an integer",
    "real": "a real number",
    "string": "a string in quotes",
    "real list": "a real number or a list of real numbers",
}


def option_kind(name: str) -> str:
    """Fortran type of a HipFT option: ``logical``, ``integer``, ``real``, ``string`` or ``real list``."""
    return _KINDS[type(HIPFT_DEFAULTS[name])]


def _type_ok(kind: str, value: Any) -> bool:
    def real(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if kind == "logical":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "real":
        return real(value)
    if kind == "string":
        return isinstance(value, str)
    items = value if isinstance(value, list) else [value]
    return all(v is None or real(v) for v in items)


def check_types(nml: dict[str, Any], where: str | Path) -> None:
    """Check the Fortran type of every option read from a namelist (before anything runs).

    HipFT's Fortran reader refuses a value of the wrong type; f90nml does not (it
    returns ``"false"`` in quotes as a string, whose truth value in Python is True,
    and ``2.7`` for an integer option).  Every offending option is named with what
    it must be, in one :class:`~hpcml.config.ConfigError`.

    Raises
    ------
    ConfigError
        If any option's value does not have the option's type.
    """
    bad = []
    for name, value in nml.items():
        if name not in HIPFT_DEFAULTS:
            continue
        kind = option_kind(name)
        if isinstance(value, list) and kind != "real list":
            bad.append(f"{name} = {value!r} must be {_SPELL[kind]}, not a list")
        elif not _type_ok(kind, value):
            bad.append(f"{name} = {value!r} must be {_SPELL[kind]}")
    if bad:
        raise ConfigError(f"{where}: " + "; ".join(bad))


def _per_real(nml: dict[str, Any], list_name: str, scalar: float, n: int, floor: float = 0.0) -> list[float]:
    """HipFT's per-realization rule: unset entries, or entries below ``floor``, take the scalar."""
    raw = nml.get(list_name)
    if raw is None:
        return [float(scalar)] * n
    vals = raw if isinstance(raw, list) else [raw]
    if len(vals) > n:
        raise ConfigError(f"{list_name} has {len(vals)} values but n_realizations = {n}")
    out = []
    for i in range(n):
        v = vals[i] if i < len(vals) else None
        out.append(float(scalar) if v is None or float(v) < floor else float(v))
    return out


def _get(nml: dict[str, Any], name: str) -> Any:
    return nml.get(name, HIPFT_DEFAULTS[name])


def config_from_hipft(path: str | Path) -> dict[str, Any]:
    """A complete ``flux`` configuration equivalent to the HipFT namelist ``path``.

    Raises
    ------
    ConfigError
        For unknown options, values of the wrong type, or invalid values.
    """
    p = Path(path).resolve()
    nml = read_namelist(p)
    unknown = sorted(k for k in nml if k not in HIPFT_DEFAULTS)
    if unknown:
        raise ConfigError(f"{p}: unknown HipFT option(s): {', '.join(unknown)}")
    check_types(nml, p)
    base = p.parent

    def resolve(name: str) -> str:
        v = str(_get(nml, name) or "").strip()
        return str((base / v).resolve()) if v else ""

    n = int(_get(nml, "n_realizations"))
    if not 1 <= n <= MAX_REALIZATIONS:
        raise ConfigError(f"{p}: n_realizations must be 1..{MAX_REALIZATIONS}, got {n}")
    cfg = default_config("flux")
    val = int(_get(nml, "validation_run"))
    if val not in (0, 1, 2):
        raise ConfigError(f"{p}: validation_run must be 0, 1 or 2, got {val}")
    map_path = resolve("initial_map_filename")
    kind = {1: "soccer", 2: "gaussians"}.get(val, "map" if map_path else None)
    if kind is None:
        raise ConfigError(f"{p}: no initial_map_filename and validation_run = 0: nothing to start from")
    cfg["grid"].update(res_nt=int(_get(nml, "res_nt")), res_np=int(_get(nml, "res_np")), map=map_path,
                       weno_eps=float(_get(nml, "weno_eps")))  # fmt: skip
    cfg["initial"].update(
        kind=kind,
        flux_balance=bool(_get(nml, "initial_map_flux_balance")),
        mult_fac=float(_get(nml, "initial_map_mult_fac")),
        gaussian_width=float(_get(nml, "validation_run_width")),
    )
    dt_max = float(_get(nml, "dt_max"))
    cfg["time"].update(
        start=float(_get(nml, "time_start")),
        end=float(_get(nml, "time_end")),
        dt_max=0.0 if not math.isfinite(dt_max) or dt_max >= 1e300 else dt_max,
        dt_min=float(_get(nml, "dt_min")),
    )
    cfg["realizations"]["n"] = n
    method = int(_get(nml, "flow_num_method"))
    schemes = {1: ("euler", "upwind"), 2: ("ssprk33", "upwind"), 3: ("ssprk33", "weno3"), 4: ("ssprk43", "weno3")}
    if method not in schemes:
        raise ConfigError(f"{p}: flow_num_method must be 1..4, got {method}")
    big = -100000.0
    fl = cfg["flow"]
    fl.update(
        advance=bool(_get(nml, "advance_flow")),
        time_scheme=schemes[method][0],
        scheme=schemes[method][1],
        upwind=float(_get(nml, "upwind")),
        vp_rigid_omega=float(_get(nml, "flow_vp_rigid_omega")),
        vt_const=float(_get(nml, "flow_vt_const")),
        attenuate=bool(_get(nml, "flow_attenuate")),
        attenuate_values=_per_real(nml, "flow_attenuate_values", _get(nml, "flow_attenuate_value"), n),
        dr_model=int(_get(nml, "flow_dr_model")),
        mf_model=int(_get(nml, "flow_mf_model")),
        rigid_omega=float(_get(nml, "flow_rigid_omega")),
    )
    if _get(nml, "use_flow_from_files"):
        if not str(_get(nml, "flow_list_filename")).strip():
            raise ConfigError(f"{p}: use_flow_from_files needs flow_list_filename (the list of flow files)")
        fl.update(list=resolve("flow_list_filename"), directory=resolve("flow_root_dir"))
    for pk in ("p0", "p2", "p4"):
        fl[f"dr_{pk}"] = _per_real(nml, f"flow_dr_coef_{pk}_values", _get(nml, f"flow_dr_coef_{pk}_value"), n, big)
    for pk in ("p1", "p3", "p5"):
        fl[f"mf_{pk}"] = _per_real(nml, f"flow_mf_coef_{pk}_values", _get(nml, f"flow_mf_coef_{pk}_value"), n, big)
    dmethod = int(_get(nml, "diffusion_num_method"))
    if dmethod not in (1, 2, 3):
        raise ConfigError(f"{p}: diffusion_num_method must be 1, 2 or 3, got {dmethod}")
    coef = _per_real(nml, "diffusion_coef_constants", _get(nml, "diffusion_coef_constant"), n)
    cfg["diffusion"].update(
        advance=bool(_get(nml, "advance_diffusion")),
        coef=coef,
        coef_factor=float(_get(nml, "diffusion_coef_factor")),
        method={1: "euler", 2: "rkl2", 3: "rkg2"}[dmethod],
        subcycles=int(_get(nml, "diffusion_subcycles")),
        map=resolve("diffusion_coef_filename"),
        grid_term=bool(_get(nml, "diffusion_coef_grid")),
    )
    rfe = int(_get(nml, "source_rfe_model"))
    adv_src = bool(_get(nml, "advance_source"))
    src_file = resolve("source_filename") if _get(nml, "source_from_file") else ""
    if _get(nml, "source_from_file") and not src_file:
        raise ConfigError(f"{p}: source_from_file needs source_filename")
    if adv_src and rfe not in (1, 2) and not src_file:
        raise ConfigError(f"{p}: advance_source needs source_rfe_model 1 or 2, or source_from_file")
    cfg["source"].update(
        advance=adv_src,
        rfe_model=rfe,
        file=src_file,
        seed=int(_get(nml, "source_rfe_seed")),
        lifetime=float(_get(nml, "source_rfe_lifetime")),
        flux_per_hour=_per_real(
            nml, "source_rfe_total_unsigned_flux_per_hours", _get(nml, "source_rfe_total_unsigned_flux_per_hour"), n
        ),
    )
    da_list = resolve("assimilate_data_map_list_filename")
    cfg["assimilation"].update(
        enabled=bool(_get(nml, "assimilate_data")),
        list=da_list,
        directory=resolve("assimilate_data_map_root_dir") if da_list else "",
        custom_from_mu=bool(_get(nml, "assimilate_data_custom_from_mu")),
        mu_power=_per_real(nml, "assimilate_data_mu_powers", _get(nml, "assimilate_data_mu_power"), n),
        mu_limit=_per_real(nml, "assimilate_data_mu_limits", _get(nml, "assimilate_data_mu_limit"), n),
        lat_limit=_per_real(nml, "assimilate_data_lat_limits", _get(nml, "assimilate_data_lat_limit"), n),
        mult_fac=float(_get(nml, "assimilate_data_mult_fac")),
        add=bool(_get(nml, "assimilate_data_add")),
        balance_flux=bool(_get(nml, "assimilate_data_balance_flux")),
    )
    cfg["splitting"]["strang"] = bool(_get(nml, "strang_splitting"))
    root = str(_get(nml, "output_map_root_filename")).strip() or "hipft_brmap"
    t_cad, i_cad = float(_get(nml, "output_map_time_cadence")), int(_get(nml, "output_map_idx_cadence"))
    if t_cad > 0 and i_cad > 0:
        raise ConfigError(f"{p}: output_map_time_cadence and output_map_idx_cadence cannot both be set (HipFT)")
    if i_cad < 0:
        raise ConfigError(f"{p}: output_map_idx_cadence must be >= 0, got {i_cad}")
    cadence = t_cad > 0 or i_cad > 0  # HipFT writes its indexed maps (and flows) only with a cadence
    flows = bool(_get(nml, "output_flows")) and cadence
    cfg["output"].update(
        directory=".",
        maps=f"{root}_maps.h5",
        map_cadence=t_cad,
        map_steps=i_cad,
        balance_maps=bool(_get(nml, "output_map_flux_balance")),
        flows=flows,
        hipft_map_dir=str(_get(nml, "output_map_directory")).strip() or "." if cadence else "",
        hipft_flow_dir=str(_get(nml, "output_flows_directory")).strip() or "." if flows else "",
        hipft_first_index=int(_get(nml, "output_map_idx_start")),
        hipft_map_2d=bool(_get(nml, "output_map_2d")),
        history=True,
        history_cadence=float(_get(nml, "output_history_time_cadence")),
        subcycle_rows=int(_get(nml, "verbose")) >= 2,
        pole_flux_lat_limit=float(_get(nml, "pole_flux_lat_limit")),
        single_precision=bool(_get(nml, "output_single_precision")),
        hipft_maps=True,
        hipft_root=root,
    )
    return cfg
