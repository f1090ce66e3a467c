"""Write the inputs of the extra HipFT cases (namelists and HDF5 files in HipFT's map format).

Run from anywhere: ``python tests/data/hipft-extra/make_inputs.py``.  Every case folder gets
``input/hipft.in`` and the HDF5 files it names; ``make_references.sh`` then runs a HipFT build
on each ``input`` folder and keeps the histories (and output maps) in ``reference/``.

The files are made here with h5py, in the layout HipFT reads and writes (one data set ``Data``
with dimension scales ``dim1`` = phi and ``dim2`` = theta, h5py shape ``(n_theta, n_phi)``):

* ``br0.h5``: the initial map (a dipole plus tilted bipoles), 46 x 91 nodes (4 degrees);
* ``flows/vt0000N.h5`` (``(N_t + 1) x N_f`` on theta faces x phi nodes) and ``flows/vp0000N.h5``
  (``N_t x (N_f + 1)`` on theta nodes x phi faces), m/s, listed with their times in
  ``flows.csv`` in HipFT's fixed format (JD F11.5, two A11 names);
* ``dcoef.h5`` / ``dtheta.h5``: diffusivity maps (km^2/s) on their own square grids;
* ``source.h5``: a static source (G/h) on its own square grid, zero near the 0 = 2 pi seam.

Square diffusivity and source files only: HipFT 1.19.3 transposes them in place, which
corrupts its heap for non-square files (hpcml reads any size; its tests check that).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
NT, NF = 46, 91  # initial-map nodes (theta with both poles, phi with the 0 = 2 pi overlap)


def write_map(path: Path, data: np.ndarray, t: np.ndarray, p: np.ndarray, dtype=np.float32) -> None:
    """A 2-D HipFT map: ``Data`` (theta, phi) with scales ``dim1`` (phi) and ``dim2`` (theta)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        d = fh.create_dataset("Data", data=np.asarray(data, dtype=dtype))
        for axis, (name, values) in enumerate((("dim1", p), ("dim2", t))):
            sc = fh.create_dataset(name, data=np.asarray(values, dtype=dtype))
            sc.make_scale(name)
            d.dims[1 - axis].attach_scale(sc)


def nodes(n: int, span: float) -> np.ndarray:
    """``n`` nodes from 0 to ``span`` as HipFT generates them (integer times the spacing)."""
    return np.arange(n) * (span / (n - 1))


def half(x: np.ndarray, period: float | None = None) -> np.ndarray:
    """Face positions of HipFT's half mesh around nodes ``x`` (one ghost face at each end)."""
    mid = 0.5 * (x[1:] + x[:-1])
    if period is None:
        return np.concatenate(([mid[0] - (x[1] - x[0])], mid, [mid[-1] + (x[-1] - x[-2])]))
    return np.concatenate(([mid[-1] - period], mid, [mid[0] + period]))


T = nodes(NT, math.pi)
P = nodes(NF, 2 * math.pi)
TH = half(T)  # N_t + 1 faces
PH = half(P, 2 * math.pi)  # N_f + 1 faces


def initial_map() -> np.ndarray:
    t, p = T[:, None], P[None, :]
    f = 8.0 * np.cos(t) * np.abs(np.cos(t)) ** 3
    for lat, lon, sep, amp in ((20, 60, 12, 300), (-15, 150, 10, 250), (30, 260, 14, 200), (-25, 320, 9, 350)):
        sign = 1.0 if lat > 0 else -1.0
        for pol, off in ((sign, 0.5), (-sign, -0.5)):
            colat = math.radians(90 - lat - off * 0.3 * sep * sign)
            lon_c = math.radians(lon + off * sep)
            cosd = np.cos(t) * math.cos(colat) + np.sin(t) * math.sin(colat) * np.cos(p - lon_c)
            d = np.arccos(np.clip(cosd, -1.0, 1.0))
            f = f + pol * amp * np.exp(-((d / math.radians(6.0)) ** 2))
    f[:, -1] = f[:, 0]
    return f


def flow_pair(n: int) -> tuple[np.ndarray, np.ndarray]:
    """File ``n``'s v_theta (faces x nodes) and v_phi (nodes x faces), m/s, exactly periodic."""
    a = 1.0 + 0.3 * n
    shift = 0.7 * n

    def vt(t, p):
        return 400.0 * a * np.sin(2 * t) * np.cos(p - shift) + 150.0 * np.sin(t) * np.sin(2 * p + shift)

    def vp(t, p):
        return 600.0 * np.sin(t) * np.cos(t) ** 2 * a + 250.0 * np.sin(t) ** 2 * np.cos(3 * p - shift)

    v_t = vt(TH[:, None], P[None, :])
    v_t[:, -1] = v_t[:, 0]
    v_p = vp(T[:, None], PH[None, :])
    v_p[:, 0] = v_p[:, -2]  # HipFT's periodicity: face 1 = face N_f, face N_f + 1 = face 2
    v_p[:, -1] = v_p[:, 1]
    return v_t, v_p


def square_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.linspace(0.0, math.pi, n), np.linspace(0.0, 2 * math.pi, n)


def dcoef_map(n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, p = square_grid(n)
    d = 200.0 + 100.0 * np.cos(2 * t)[:, None] + 80.0 * (np.sin(t) ** 2)[:, None] * np.sin(p + 0.4)[None, :]
    return d, t, p


def dtheta(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A diffusivity that depends on colatitude only (any phi resolution gives the same values)."""
    return np.broadcast_to((100.0 + 400.0 * np.sin(t) ** 2)[:, None], (len(t), len(p))).copy()


def source_map(n: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, p = square_grid(n)
    tt, pp = t[:, None], p[None, :]
    s = 3.0 * np.exp(-(((tt - 1.0) / 0.25) ** 2 + ((pp - 2.0) / 0.35) ** 2))
    s -= 2.5 * np.exp(-(((tt - 2.1) / 0.3) ** 2 + ((pp - 3.8) / 0.3) ** 2))
    return s, t, p


def namelist(body: str, comment: str) -> str:
    lines = ["&hipft_input_parameters"] + ["  " + ln for ln in textwrap.dedent(body).strip().splitlines()] + ["/"]
    notes = "\n".join("! " + ln for ln in textwrap.dedent(comment).strip().splitlines())
    return "\n".join(lines) + "\n!\n" + notes + "\n"


FLOW_TIMES_JD = (0.0, 0.25, 0.5, 0.75)  # flows every 6 hours; the list cycles after the last


def write_flows(inp: Path) -> None:
    rows = ["TIME(JD)    VTFILE      VPFILE"]
    for n, jd in enumerate(FLOW_TIMES_JD, start=1):
        v_t, v_p = flow_pair(n - 1)
        write_map(inp / "flows" / f"vt{n:05d}.h5", v_t, TH, P)
        write_map(inp / "flows" / f"vp{n:05d}.h5", v_p, T, PH)
        rows.append(f"{jd:11.5f} {f'vt{n:05d}.h5':<11s} {f'vp{n:05d}.h5':<11s}")
    (inp / "flows.csv").write_text("\n".join(rows) + "\n")


COMMON = """
initial_map_filename = 'br0.h5'
output_single_precision = .false.
"""

CASES = {
    "flow_files": (
        COMMON
        + """
n_realizations = 2
time_start = 20.0
time_end = 70.0
dt_max = 2.5
advance_flow = .true.
use_flow_from_files = .true.
flow_list_filename = 'flows.csv'
flow_root_dir = 'flows'
flow_dr_model = 1
flow_attenuate = .true.
flow_attenuate_values = 400.0, 600.0
advance_diffusion = .true.
diffusion_coef_constant = 150.0
""",
        """
Flows from files (four v_theta/v_phi pairs, 6 h apart, cycling) plus the analytic
differential rotation, attenuated per realization, and diffusion. The start time (20 h)
lies past the span of the list (18 h): HipFT starts inside the list modulo its span.
""",
    ),
    "diffusion_map": (
        COMMON
        + """
n_realizations = 2
time_end = 48.0
dt_max = 1.0
advance_flow = .true.
flow_dr_model = 1
flow_mf_model = 1
advance_diffusion = .true.
diffusion_coef_constants = 50.0, 200.0
diffusion_coef_filename = 'dcoef.h5'
diffusion_coef_grid = .true.
""",
        """
A diffusivity map (40 x 40 nodes, varying in theta and phi) added to a per-realization
constant and the grid-based term, with analytic flows.
""",
    ),
    "diffusion_map_theta": (
        COMMON
        + """
time_end = 120.0
dt_max = 10.0
advance_diffusion = .true.
diffusion_coef_filename = 'dtheta.h5'
verbose = 2
""",
        """
A diffusivity that depends on colatitude only, on a square 36 x 36 file: hpcml's tests
run the same diffusivity from non-square files (which HipFT 1.19.3 cannot read) against
this reference.
""",
    ),
    "source_file": (
        COMMON
        + """
n_realizations = 2
time_end = 48.0
dt_max = 1.0
strang_splitting = .true.
advance_flow = .true.
flow_dr_model = 1
flow_mf_model = 1
flow_mf_coef_p1_values = 22.0, 15.0
advance_diffusion = .true.
diffusion_coef_constant = 100.0
advance_source = .true.
source_from_file = .true.
source_filename = 'source.h5'
""",
        """
A static source (30 x 30 file, zero near the 0 = 2 pi seam) with Strang splitting,
analytic flows and diffusion.
""",
    ),
    "outputs": (
        COMMON
        + """
time_end = 24.0
dt_max = 0.5
output_map_idx_cadence = 12
output_map_flux_balance = .true.
output_flows = .true.
output_map_directory = 'maps'
output_flows_directory = 'flows_out'
output_map_root_filename = 'br'
advance_flow = .true.
flow_dr_model = 1
flow_mf_model = 1
flow_attenuate = .true.
advance_diffusion = .true.
diffusion_coef_constant = 200.0
""",
        """
Map output every 12 steps (flux-balanced copies), with the flows written at the same
steps; one realization (HipFT writes flows for one realization only).
""",
    ),
    "all_options": (
        COMMON
        + """
time_start = 5.0
time_end = 40.0
dt_max = 1.5
strang_splitting = .true.
output_map_idx_cadence = 10
output_map_flux_balance = .true.
output_flows = .true.
output_map_directory = 'maps'
output_flows_directory = 'flows_out'
advance_flow = .true.
use_flow_from_files = .true.
flow_list_filename = 'flows.csv'
flow_root_dir = 'flows'
flow_mf_model = 1
flow_attenuate = .true.
advance_diffusion = .true.
diffusion_coef_constant = 30.0
diffusion_coef_filename = 'dcoef.h5'
diffusion_coef_grid = .true.
advance_source = .true.
source_from_file = .true.
source_filename = 'source.h5'
""",
        """
Every option of this folder at once: flows from files with the analytic meridional flow
and attenuation, a diffusivity map with the grid term, a static source, Strang
splitting, step-cadence map output with flux balancing and flow output.
""",
    ),
}


def main() -> None:
    br = initial_map()
    for case, (body, comment) in CASES.items():
        inp = HERE / case / "input"
        inp.mkdir(parents=True, exist_ok=True)
        (inp / "hipft.in").write_text(namelist(body, comment))
        write_map(inp / "br0.h5", br, T, P)
        if "use_flow_from_files" in body:
            write_flows(inp)
        if "dcoef.h5" in body:
            d, t, p = dcoef_map()
            write_map(inp / "dcoef.h5", d, t, p)
        if "dtheta.h5" in body:
            t, p = square_grid(36)
            write_map(inp / "dtheta.h5", dtheta(t, p), t, p)
        if "source.h5" in body:
            s, t, p = source_map()
            write_map(inp / "source.h5", s, t, p)
        print(f"wrote {inp}")


if __name__ == "__main__":
    main()
