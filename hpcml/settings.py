"""Process-wide settings (like ``mpi4py.rc``): typed, unknown keys rejected.

Each field can be set by an ``HPCML_<NAME>`` environment variable, changed in
code (``hpcml.settings.rc.halo_method = "datatype"``), and overridden again by
per-call keywords where a function takes one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["Settings", "rc"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass
class Settings:
    """hpcml's runtime switches.

    Attributes
    ----------
    halo_method
        Default halo-exchange method: ``auto|datatype|pack|staged|device``.  Rank 0's
        value decides for every rank (:func:`hpcml.halo.resolve_method`).
    halo_model
        Path of the measured halo cost model (``hpcml bench datatypes --measure``);
        empty: ``$XDG_CACHE_HOME/hpcml/halo-model.json``.  Read on rank 0 only.
    cuda_aware
        Whether MPI takes device buffers; ``None`` = detect.
    traceback
        Print the traceback with the one-line error before aborting.
    allow_singletons
        Do not refuse ``srun`` steps whose tasks each see a world of size one.
    """

    halo_method: str = "auto"
    halo_model: str = ""
    cuda_aware: bool | None = None
    traceback: bool = False
    allow_singletons: bool = False

    def __setattr__(self, name: str, value: Any) -> None:
        known = {f.name for f in fields(self)}
        if name not in known:
            raise AttributeError(f"unknown hpcml setting {name!r}; known: {', '.join(sorted(known))}")
        object.__setattr__(self, name, value)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Defaults overridden by ``HPCML_*`` environment variables."""
        env = os.environ if env is None else env
        out = cls()
        for f in fields(cls):
            raw = env.get("HPCML_" + f.name.upper())
            if raw is None:
                continue
            if f.type in ("bool", "bool | None"):
                low = raw.strip().lower()
                if low not in _TRUE + _FALSE:
                    raise ValueError(f"HPCML_{f.name.upper()}={raw!r}: expected 0/1/true/false")
                setattr(out, f.name, low in _TRUE)
            else:
                setattr(out, f.name, raw.strip())
        return out


rc = Settings.from_env()
