"""Measured cost model behind ``method="auto"`` for halo exchanges.

``hpcml bench datatypes --measure`` times, on the machine at hand, each way of
sending a strided face (MPI subarray datatype, pack + contiguous send, and on GPUs
device vs staged transfers) and stores a small JSON table.  ``auto`` then picks,
per plan, the method whose summed estimated cost over the plan's faces is lowest.
Estimates interpolate the table in log-space on (bytes per dense run, total bytes).
Without a table the documented default applies (pack on CPU; device if CUDA-aware,
else staged, on GPU).  Only rank 0 reads the table; :func:`hpcml.halo.resolve_method`
broadcasts its choice, so ranks that see different files still agree.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcml.settings import rc

__all__ = ["HaloModel", "default_model_path", "load_model"]


def default_model_path() -> Path:
    """``rc.halo_model`` (``HPCML_HALO_MODEL``) or ``$XDG_CACHE_HOME/hpcml/halo-model.json``."""
    if rc.halo_model:
        return Path(rc.halo_model)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "hpcml" / "halo-model.json"


@dataclass
class HaloModel:
    """Rows of measured microseconds per face transfer.

    ``cpu`` rows: ``{"run_bytes", "nbytes", "datatype", "pack", "contiguous"}``;
    ``gpu`` rows: ``{"nbytes", "device", "staged"}`` (``device`` may be absent
    when the MPI is not CUDA-aware).
    """

    cpu: list[dict[str, float]] = field(default_factory=list)
    gpu: list[dict[str, float]] = field(default_factory=list)
    source: str = ""

    @classmethod
    def from_json(cls, text: str, source: str = "") -> HaloModel:
        """Parse a model; raises ``ValueError`` on a malformed table."""
        data = json.loads(text)
        cpu, gpu = data.get("cpu", []), data.get("gpu", [])
        for row in cpu:
            if not {"run_bytes", "nbytes", "datatype", "pack"} <= set(row):
                raise ValueError(f"halo model {source}: cpu row lacks keys: {row}")
        for row in gpu:
            if not {"nbytes", "staged"} <= set(row):
                raise ValueError(f"halo model {source}: gpu row lacks keys: {row}")
        return cls(cpu=cpu, gpu=gpu, source=source)

    def to_json(self) -> str:
        """Serialise the table."""
        return json.dumps({"cpu": self.cpu, "gpu": self.gpu}, indent=1) + "\n"

    @staticmethod
    def _nearest(rows: Sequence[dict[str, float]], point: dict[str, float], keys: Sequence[str]) -> dict[str, float]:
        def dist(row: dict[str, float]) -> float:
            return sum((math.log2(max(row[k], 1)) - math.log2(max(point[k], 1))) ** 2 for k in keys)

        return min(rows, key=dist)

    def estimate_cpu(self, method: str, run_bytes: int, nbytes: int) -> float:
        """Estimated microseconds to send one face with ``method`` (scaled by bytes)."""
        row = self._nearest(self.cpu, {"run_bytes": run_bytes, "nbytes": nbytes}, ("run_bytes", "nbytes"))
        return row[method] * (max(nbytes, 1) / max(row["nbytes"], 1))

    def choose_cpu(self, faces: Sequence[tuple[int, int]]) -> str:
        """``pack`` or ``datatype`` for faces given as ``(run_bytes, nbytes)``."""
        if not self.cpu or not faces:
            return "pack"
        cost = {m: sum(self.estimate_cpu(m, r, n) for r, n in faces) for m in ("pack", "datatype")}
        return min(cost, key=cost.__getitem__)

    def choose_gpu(self, nbytes: int, cuda_aware: bool) -> str:
        """``device`` or ``staged`` for a GPU exchange moving ``nbytes`` per face."""
        if not cuda_aware:
            return "staged"
        rows = [r for r in self.gpu if "device" in r]
        if not rows:
            return "device"
        row = self._nearest(rows, {"nbytes": nbytes}, ("nbytes",))
        return "device" if row["device"] <= row["staged"] else "staged"


_CACHE: dict[str, HaloModel | None] = {}


def load_model(path: str | os.PathLike[str] | None = None) -> HaloModel | None:
    """The model at ``path`` (default location if ``None``), or ``None`` if there is none.

    A malformed file raises ``ValueError`` naming the file rather than being ignored.
    """
    p = Path(path) if path is not None else default_model_path()
    key = str(p)
    if key not in _CACHE:
        if not p.is_file():
            _CACHE[key] = None
        else:
            try:
                _CACHE[key] = HaloModel.from_json(p.read_text(encoding="utf-8"), source=key)
            except (json.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"halo model {key} is not valid JSON: {exc}") from None
    return _CACHE[key]


def plan_faces(blocks: Sequence[Any]) -> list[tuple[int, int]]:
    """``(run_bytes, nbytes)`` of each strided block."""
    return [(int(b.counts[0]), int(b.nbytes)) for b in blocks]
