"""Run configuration: embedded TOML defaults, a user TOML file, ``--set`` overrides.

Every application ships its defaults as ``hpcml/defaults/<app>.toml``; the
defaults define the schema.  A user file and ``--set section.key=value``
overrides are merged over them; unknown keys and values of the wrong type are
rejected with the key's full dotted name (and a close match, if any) before the
run starts, so a typo never silently runs the default.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "apply_overrides",
    "available_apps",
    "check_choice",
    "default_config",
    "dumps",
    "load_config",
    "parse_override",
]

DEFAULT_APP = "flux"


class ConfigError(ValueError):
    """A configuration file or override is invalid.

    A job that meets one after the run started (an input file read by the app)
    ends with ``exit_code`` as a usage error does (:func:`hpcml.runtime.abort_on_error`).
    """

    exit_code = 2


def check_choice(config: Mapping[str, Any], dotted: str, choices: Iterable[str]) -> str:
    """The value at ``dotted`` (``"run.halo_method"``) if it is one of ``choices``, else a :class:`ConfigError`."""
    value: Any = config
    for key in dotted.split("."):
        value = value[key]
    allowed = tuple(choices)
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{dotted} = {value!r} is not one of {', '.join(allowed)}{hint}")
    return value


def check_output_path(config: Mapping[str, Any], dotted: str, folder: bool = False) -> None:
    """Refuse an output path (at ``dotted``) that names the wrong kind of thing.

    An output file must not be an existing folder, an output folder (``folder``:
    the flux app's ``output.directory``) not an existing file; an empty path (no
    output) passes, missing parent folders are created by the run.  Checked before
    the run starts, so the job ends with one line and exit 2 instead of an error from
    every rank when the file is first opened (for poisson, after the whole solve).
    """
    value: Any = config
    for key in dotted.split("."):
        value = value[key]
    if not value:
        return
    p = Path(str(value)).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise ConfigError(f"{dotted} = {str(value)!r} is a file, not a folder")
    if not folder and p.is_dir():
        raise ConfigError(f"{dotted} = {str(value)!r} is a folder; give the output file's name")


def available_apps() -> list[str]:
    """Applications that ship a defaults file."""
    root = resources.files("hpcml") / "defaults"
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def default_config(app: str) -> dict[str, Any]:
    """The embedded defaults of ``app`` (a fresh dict)."""
    if app not in available_apps():
        raise ConfigError(f"unknown app {app!r}; available: {', '.join(available_apps())}")
    text = (resources.files("hpcml") / "defaults" / f"{app}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``section.key=value``; the value is read as TOML, else as a plain string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"--set {item!r}: empty key component")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


# Keys that take one of a few values of different TOML types (checked by value, not by the default's type).
_CHOICES: dict[str, tuple[Any, ...]] = {"run.restart": (False, True, "auto")}


def _check_type(dotted: str, default: Any, value: Any, where: str) -> Any:
    if dotted in _CHOICES:
        allowed = _CHOICES[dotted]
        if not any(value is a or (isinstance(a, str) and value == a) for a in allowed):
            shown = " | ".join(_toml_value(a) for a in allowed)
            raise ConfigError(f"{where}: {dotted} must be {shown}, got {value!r}")
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: {dotted} must be {type(default).__name__} (default {default!r}), got {value!r}")
    return value


def _merge(base: dict[str, Any], new: Mapping[str, Any], where: str, prefix: str = "") -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {', '.join(sorted(base))}"
            raise ConfigError(f"{where}: unknown key {dotted!r}{hint}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {dotted} is a section, got {value!r}")
            _merge(base[key], value, where, dotted + ".")
        else:
            base[key] = _check_type(dotted, base[key], value, where)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Effective configuration: defaults of the file's ``app``, the file, then overrides."""
    user: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            user = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from None
        where = str(p)
    parsed = [parse_override(o) for o in overrides]
    app = user.get("app", DEFAULT_APP)
    for keys, value in parsed:
        if keys == ["app"]:
            app = value
    if not isinstance(app, str):
        raise ConfigError(f"{where}: app must be a string, got {app!r}")
    config = default_config(app)
    _merge(config, user, where)
    for keys, value in parsed:
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(config, nested, f"--set {'.'.join(keys)}")
    return config


def apply_overrides(config: dict[str, Any], overrides: Iterable[str], where: str = "--set") -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a complete config (validated like a file)."""
    for keys, value in (parse_override(o) for o in overrides):
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(config, nested, f"{where} {'.'.join(keys)}")
    return config


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(config: Mapping[str, Any]) -> str:
    """Serialise a config (scalars, lists, one level of nested tables) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in config.items() if not isinstance(v, Mapping)]

    def table(prefix: str, body: Mapping[str, Any]) -> None:
        lines.append("")
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in body.items() if not isinstance(v, Mapping))
        for k, v in body.items():
            if isinstance(v, Mapping):
                table(f"{prefix}.{k}", v)

    for k, v in config.items():
        if isinstance(v, Mapping):
            table(k, v)
    return "\n".join(lines).lstrip("\n") + "\n"
