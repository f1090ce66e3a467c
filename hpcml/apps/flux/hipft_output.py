"""HipFT's own output files: ``<root>_initial/_final.h5``, indexed cadence maps, flow files, their lists.

A run from a HipFT namelist writes what HipFT writes, where HipFT writes it (relative
to ``output.directory``), so scripts built around HipFT keep working:

* ``<root>_initial.h5`` and ``<root>_final.h5`` (``output.hipft_maps``);
* at every cadence map (``output.map_cadence`` or ``output.map_steps``, the initial one
  included), ``<hipft_map_dir>/<root>_idxNNNNNN.h5`` and a row of
  ``hipft_output_map_list.out`` (``output.hipft_map_dir``);
* with ``output.flows``, ``<hipft_flow_dir>/hipft_flow_vt_idxNNNNNN.h5`` and ``..._vp_...``
  (m/s, HipFT's staggered layouts: v_theta on the theta faces x phi nodes, v_phi on
  the theta nodes x phi faces) and a row of ``hipft_output_flow_list.out``.

Maps are 2-D for one realization (``output.hipft_map_2d``), else 3-D; float32 with
``output.single_precision``; flux-balanced copies with ``output.balance_maps``.  Flow
files are 3-D for several realizations (HipFT writes flows for one realization only).
Everything is gathered to world rank 0, which writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HipftFiles", "write_hipft_file", "write_hipft_map"]

_LIST_HEAD = f"{'IDX':>10} {'TIME':>25} FILENAME\n"


def write_hipft_file(path: Path, data: np.ndarray, scales: list[np.ndarray], single: bool) -> None:
    """One HipFT HDF5 file: ``Data`` with dimension scales ``dim1`` (fastest axis), ``dim2`` [, ``dim3``].

    Written to a temporary name and renamed, so a reader never sees half a file.
    """
    import h5py

    dt = np.float32 if single else np.float64
    data = np.asarray(data, dtype=dt)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as fh:
        d = fh.create_dataset("Data", data=data)
        for axis, (name, values) in enumerate(zip(("dim1", "dim2", "dim3"), scales)):
            sc = fh.create_dataset(name, data=np.asarray(values, dtype=dt))
            sc.make_scale(name)
            d.dims[data.ndim - 1 - axis].attach_scale(sc)
    tmp.replace(path)


def write_hipft_map(path: Path, field: np.ndarray, grid: Any, single: bool, two_d: bool = True) -> None:
    """A HipFT map of ``field`` ``(n_real, N_t, Np)`` (unique columns): the seam column repeated at 0 and 2 pi."""
    data = np.concatenate([field[..., -1:], field], axis=-1)
    scales = [grid.p[1 : grid.Nf + 1], grid.t[1 : grid.Nt + 1]]
    if two_d and data.shape[0] == 1:
        data = data[0]
    else:
        scales.append(np.arange(1, data.shape[0] + 1, dtype=np.float64))
    write_hipft_file(path, data, scales, single)


class HipftFiles:
    """The indexed HipFT map and flow files of one run and their lists (writes on world rank 0)."""

    def __init__(self, outdir: Path, out: dict[str, Any], grid: Any, n_real: int, rank0: bool,
                 written: int | None = None) -> None:  # fmt: skip
        self.grid, self.n_real, self.rank0 = grid, n_real, rank0
        self.root = out["hipft_root"]
        self.single = bool(out["single_precision"])
        self.two_d = bool(out["hipft_map_2d"])
        self.first = int(out["hipft_first_index"])
        self.outdir = outdir
        self.map_dir = outdir / out["hipft_map_dir"] if out["hipft_map_dir"] else None
        self.flow_dir = outdir / out["hipft_flow_dir"] if out["hipft_flow_dir"] else None
        self.map_list = outdir / "hipft_output_map_list.out"
        self.flow_list = outdir / "hipft_output_flow_list.out"
        if not rank0:
            return
        for folder, lst in ((self.map_dir, self.map_list), (self.flow_dir, self.flow_list)):
            if folder is None:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            if written is None or not lst.is_file():
                lst.write_text(_LIST_HEAD)
            else:  # a resumed run: keep the rows of the maps written before its checkpoint
                keep = [ln for ln in lst.read_text().splitlines(keepends=True)[1:] if int(ln.split()[0]) < self.first
                        + written]  # fmt: skip
                lst.write_text(_LIST_HEAD + "".join(keep))

    @property
    def active(self) -> bool:
        """Whether cadence maps go to HipFT files too."""
        return self.map_dir is not None

    def write(self, number: int, time: float, field: np.ndarray | None, flows: tuple | None) -> None:
        """Cadence map ``number`` (0 = the initial one) on rank 0: the map, the flows, the list rows."""
        if not self.rank0 or self.map_dir is None:
            return
        idx = self.first + number
        name = f"{self.root}_idx{idx:06d}.h5"
        write_hipft_map(self.map_dir / name, field, self.grid, self.single, self.two_d)
        with open(self.map_list, "a") as fh:
            fh.write(f"{idx:10d}   {time:25.15E}    {name}\n")
        if self.flow_dir is not None and flows is not None:
            vt, vp = flows
            g = self.grid
            for kind, v, axes in (("vt", vt, [g.p[1 : g.Nf + 1], g.th[1 : g.nt + 1]]),
                                  ("vp", vp, [g.p[1 : g.M + 1], g.t[1 : g.Nt + 1]])):  # fmt: skip
                data = v[0] if v.shape[0] == 1 else v
                scales = axes if data.ndim == 2 else [*axes, np.arange(1, data.shape[0] + 1, dtype=np.float64)]
                write_hipft_file(self.flow_dir / f"hipft_flow_{kind}_idx{idx:06d}.h5", data, scales, self.single)
            with open(self.flow_list, "a") as fh:
                fh.write(f"{idx:10d}   {time:25.15E}    hipft_flow_vX_idx{idx:06d}.h5\n")
