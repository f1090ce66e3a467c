"""Process-wide settings (like ``mpi4py.rc``): typed, unknown keys and values rejected.

Each field can be set by an ``HPCML_<NAME>`` environment variable, changed in
code (``hpcml.settings.rc.halo_method = "datatype"``), and overridden again by
per-call keywords where a function takes one.  Every ``HPCML_*`` variable hpcml
reads is a field here, so the whole list is in one place (``hpcml config show``
prints them) and a typo in a value fails with the variable's name.

Environment variables are read once, at import, identically on every rank; code
that must agree across ranks never reads ``os.environ`` on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["CHOICES", "Settings", "rc"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

#: Allowed values of the enumerated settings.
CHOICES: dict[str, tuple[str, ...]] = {
    "halo_method": ("auto", "datatype", "pack", "shm", "staged", "device"),
    "io_driver": ("auto", "mpio", "vds"),
    "backend": ("auto", "cpu", "gpu", "sim"),
}


@dataclass
class Settings:
    """hpcml's runtime switches.

    Attributes
    ----------
    halo_method
        Default halo-exchange method: ``auto|datatype|pack|shm|staged|device``.  Rank 0's
        value decides for every rank (:func:`hpcml.halo.resolve_method`).
    cuda_aware
        Whether MPI takes device buffers; ``None`` = detect.
    traceback
        Print the traceback with the one-line error before aborting.
    allow_singletons
        Do not refuse ``srun`` steps whose tasks each see a world of size one.
    io_driver
        HDF5 write path of new outputs: ``auto`` (MPI-IO when h5py has MPI, else per-rank
        files under virtual datasets), ``mpio`` or ``vds``.
    progress
        Progress lines on stderr for long reads and writes: ``None`` = after a short delay,
        ``True`` = at once, ``False`` = never.
    halo_model
        Path of the measured halo-method model (``hpcml bench datatypes --measure``);
        empty = ``$XDG_CACHE_HOME/hpcml/halo-model.json`` (``~/.cache`` by default).  Read
        on rank 0 only, which decides ``method="auto"`` for every rank.
    backend
        Where apps that have both run their kernels: ``auto`` (GPU when CuPy sees one),
        ``cpu``, ``gpu`` or ``sim`` (Numba's CUDA simulator).
    kernel_tuning
        Time the equivalent variants of a large stencil sweep (3-D tile heights,
        streaming stores) on its first call and keep the fastest for that layout;
        ``False`` runs the default variant untimed.  Values never depend on it.
    """

    halo_method: str = "auto"
    cuda_aware: bool | None = None
    traceback: bool = False
    allow_singletons: bool = False
    io_driver: str = "auto"
    progress: bool | None = None
    halo_model: str = ""
    backend: str = "auto"
    kernel_tuning: bool = True

    def __setattr__(self, name: str, value: Any) -> None:
        known = {f.name for f in fields(self)}
        if name not in known:
            raise AttributeError(f"unknown hpcml setting {name!r}; known: {', '.join(sorted(known))}")
        if name in CHOICES:
            value = str(value).strip().lower()
            if value not in CHOICES[name]:
                raise ValueError(f"hpcml setting {name} = {value!r}: expected one of {', '.join(CHOICES[name])}")
        object.__setattr__(self, name, value)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Defaults overridden by ``HPCML_*`` environment variables."""
        env = os.environ if env is None else env
        out = cls()
        for f in fields(cls):
            var = "HPCML_" + f.name.upper()
            raw = env.get(var)
            if raw is None:
                continue
            try:
                if f.type in ("bool", "bool | None"):
                    low = raw.strip().lower()
                    if low not in _TRUE + _FALSE:
                        raise ValueError("expected 0/1/true/false")
                    setattr(out, f.name, low in _TRUE)
                else:
                    setattr(out, f.name, raw.strip())
            except ValueError as exc:
                raise ValueError(f"{var}={raw!r}: {exc}") from None
        return out

    def as_dict(self) -> dict[str, Any]:
        """The current values, keyed by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


rc = Settings.from_env()
