"""The HipFT options the validation suite does not exercise, against HipFT itself.

``tests/data/hipft-extra`` holds small cases made for this (flow files, diffusivity
maps and HipFT's grid term, a static source) with HipFT 1.19.3's histories.  Every
row of every realization is compared with the suite's tolerances (1e-6 relative on
BR_MIN/BR_MAX/FLUX_*, 1e-5 on BR_ABS_MIN and VALIDATION_ERR, pole fluxes and dipoles
to 1e-6 of their scale) and the numerics history (time steps, stages, cycles) to
1e-12.  The MPI tests run the same cases split over ensemble x theta x phi.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from flux_helpers import assert_all, mine, tolerance, write_field
from mpi4py import MPI

from hpcml.apps.flux import config_from_hipft, run
from hpcml.apps.flux.history import compare_rows, read_history

EXTRA = Path(__file__).resolve().parents[1] / "data" / "hipft-extra"
HISTORY_CASES = ("flow_files", "diffusion_map", "diffusion_map_theta", "source_file")


def extra_config(case: str, outdir: Path, namelist: Path | None = None, **decomp) -> dict:
    cfg = config_from_hipft(namelist or EXTRA / case / "input" / "hipft.in")
    cfg["output"].update(directory=str(outdir), maps="", hipft_maps=False)
    cfg["decomposition"].update(decomp)
    return cfg


def differences(case: str, outdir: Path) -> list[str]:
    """What differs from HipFT's reference beyond the tolerances (empty: the run matches)."""
    bad = []
    refs = sorted((EXTRA / case / "reference").glob("hipft_history_sol_r*.out"))
    assert refs, f"no reference histories in {EXTRA / case}"
    for ref_path in refs:
        r = int(ref_path.stem[-6:])
        names, ref = read_history(ref_path)
        _, got = mine(outdir, r)
        if got.shape != ref.shape:
            bad.append(f"r{r}: {got.shape[0]} rows, HipFT {ref.shape[0]}")
            continue
        if not np.array_equal(got[:, :2], ref[:, :2]) and not np.allclose(got[:, 1], ref[:, 1], rtol=1e-12, atol=0):
            bad.append(f"r{r}: STEP/TIME columns differ")
        for name, v in compare_rows(names, got, ref).items():
            if v > tolerance(name):
                bad.append(f"r{r} {name}: {v:.2e}")
        _, gnum = mine(outdir, r, "num")
        _, rnum = read_history(EXTRA / case / "reference" / f"hipft_history_num_r{r:06d}.out")
        if gnum.shape != rnum.shape or not np.allclose(gnum, rnum, rtol=1e-12, atol=0):
            bad.append(f"r{r}: numerics history differs")
    return bad


@pytest.mark.parametrize("case", HISTORY_CASES)
def test_case_matches_hipft(case, tmp_path):
    run(extra_config(case, tmp_path), MPI.COMM_SELF)
    bad = differences(case, tmp_path)
    assert not bad, f"{case}: {bad}"


@pytest.mark.parametrize("nf", [19, 50, 2])
def test_non_square_diffusivity_maps(tmp_path, nf):
    """A theta-only diffusivity on files of any size gives HipFT's square-file result.

    HipFT 1.19.3 corrupts its heap on non-square diffusivity files; the values
    interpolated from these files equal the square file's (the function does not
    depend on phi, and the theta scale is the same), so the histories must match the
    square file's reference.
    """
    import shutil
    import sys

    sys.path.insert(0, str(EXTRA))
    from make_inputs import dtheta

    case = "diffusion_map_theta"
    inp = tmp_path / "input"
    shutil.copytree(EXTRA / case / "input", inp)
    t = np.linspace(0.0, math.pi, 36)  # the square file's theta scale: same weights in theta
    p = np.linspace(0.0, 2 * math.pi, nf)
    write_field(inp / "dtheta.h5", dtheta(t, p).astype(np.float32), t.astype(np.float32), p.astype(np.float32))
    out = tmp_path / "out"
    run(extra_config(case, out, inp / "hipft.in"), MPI.COMM_SELF)
    bad = differences(case, out)
    assert not bad, f"36 x {nf}: {bad}"


SPLITS = {
    1: [(1, 1, 1)],
    2: [(1, 2, 1), (1, 1, 2), (2, 1, 1)],
    3: [(1, 3, 1), (1, 1, 3)],
    4: [(1, 2, 2), (2, 1, 2), (2, 2, 1), (1, 1, 4)],
}


@pytest.mark.mpi
@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", HISTORY_CASES)
def test_case_splits_match_hipft(case, comm, shared_tmp):
    """Every ensemble x theta x phi split of this rank count reproduces HipFT's histories."""
    nreal = len(list((EXTRA / case / "reference").glob("hipft_history_sol_r*.out")))
    splits = [s for s in SPLITS.get(comm.Get_size(), []) if s[0] <= nreal]
    if not splits:
        pytest.skip(f"no split of {comm.Get_size()} ranks for {nreal} realization(s)")
    for e, pt, pp in splits:
        out = shared_tmp / f"split-{e}x{pt}x{pp}"
        summary = run(extra_config(case, out, ensemble=e, dims=[pt, pp]), comm)
        assert summary["ensemble_groups"] == e and summary["dims"] == [pt, pp]
        bad = comm.bcast(differences(case, out) if comm.Get_rank() == 0 else None, root=0)
        assert_all(comm, not bad, f"{case} split {e}x{pt}x{pp}: {bad}")


# -- flow_rigid_omega: rigid rotation about a tilted axis, against the exact rotated field ------
def _blob(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A Gaussian of B_r (100 G, 15 degrees wide) centred at colatitude 60, longitude 45 degrees."""
    from hpcml.apps.flux.fields import gaussian_spot

    return gaussian_spot(t, p)


def _rotated_blob(t: np.ndarray, p: np.ndarray, axis: tuple[float, float], angle: float) -> np.ndarray:
    """The blob carried by a rigid rotation by ``angle`` about ``axis``: ``B(x) = B0(R(-angle) x)``."""
    from hpcml.apps.flux.fields import rotated

    return rotated(_blob, t, p, axis, angle)


def _rigid_run(tmp_path: Path, nt: int, npp: int, omega: float, axis: tuple[float, float], angle: float, init=None,
               scheme: str = "weno3"):  # fmt: skip
    """Advect a map with flow.rigid_omega only; return (final field, grid t, grid p) on unique columns."""
    from hpcml.apps.flux import FluxSolver
    from hpcml.apps.flux.grid import KMS_TO_RSH
    from hpcml.config import load_config

    t = np.arange(nt) * (math.pi / (nt - 1))
    p = np.arange(npp) * (2 * math.pi / (npp - 1))
    tt, pp = np.meshgrid(t, p, indexing="ij")
    f0 = _blob(tt, pp) if init is None else np.broadcast_to(init, tt.shape)
    mp = write_field(tmp_path / f"blob{nt}.h5", np.ascontiguousarray(f0), t, p)
    cfg = load_config(
        None,
        ["app=flux", f"grid.map='{mp}'", 'initial.kind="map"', "grid.res_nt=0", "grid.res_np=0", "realizations.n=1",
         "flow.mf_p1=[22.0]", "flow.dr_model=0", "flow.mf_model=0", "flow.attenuate=false",
         f"flow.rigid_omega={omega}", f"flow.rigid_axis=[{axis[0]}, {axis[1]}]", "diffusion.advance=false",
         f"time.end={angle / (abs(omega) * KMS_TO_RSH)}", f'flow.scheme="{scheme}"'],
    )  # fmt: skip
    cfg["output"].update(directory=str(tmp_path), maps="", history=False)
    s = FluxSolver(cfg, MPI.COMM_SELF)
    s.run()
    field = s.gather_field()[0]
    s.lay.free()
    return field, tt[:, 1:], pp[:, 1:]


def test_rigid_rotation_matches_the_rotated_field(tmp_path):
    """Advection only: the field is the initial blob rotated about the tilted axis, error -> 0 at ~3rd order."""
    axis, angle = (90.0, 90.0), math.pi / 8
    errs = []
    for nt, npp in ((46, 91), (91, 181)):
        f, tt, pp = _rigid_run(tmp_path, nt, npp, 1.0, axis, angle)
        exact = _rotated_blob(tt, pp, axis, angle)
        errs.append(float(np.sqrt(np.mean((f - exact) ** 2) / np.mean(exact**2))))
        # the exact solution moved: the run is not just the initial field
        assert np.sqrt(np.mean((exact - _blob(tt, pp)) ** 2) / np.mean(exact**2)) > 10 * errs[-1]
    assert errs[1] < 2e-2, errs
    assert errs[0] / errs[1] > 4.0, errs  # at least second order


def test_rigid_rotation_other_axis_and_sign(tmp_path):
    axis, angle = (40.0, 200.0), math.pi / 10
    f, tt, pp = _rigid_run(tmp_path, 61, 121, -2.0, axis, angle)
    exact = _rotated_blob(tt, pp, axis, -angle)
    assert np.sqrt(np.mean((f - exact) ** 2) / np.mean(exact**2)) < 0.05


def test_rigid_rotation_keeps_a_uniform_field(tmp_path):
    """The flow is discretely divergence-free (built from a stream function): B = const stays const.

    With upwind fluxes (face velocity x upwind value) the update of a uniform field is
    the discrete divergence of the flow, so it stays uniform to rounding.  (WENO3's
    Lax-Friedrichs splitting multiplies cell values by the velocities of several faces,
    so it keeps a uniform field only to its truncation error, in HipFT too.)
    """
    f, _, _ = _rigid_run(tmp_path, 31, 61, 3.0, (70.0, 10.0), 0.5, init=5.0, scheme="upwind")
    assert np.max(np.abs(f - 5.0)) < 1e-11


# -- bad input files: named errors before the run ---------------------------------------------
def _case_copy(tmp_path: Path, case: str) -> Path:
    import shutil

    inp = tmp_path / case
    shutil.copytree(EXTRA / case / "input", inp)
    return inp


def _expect(namelist: Path, message: str, tmp_path: Path) -> None:
    from hpcml.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        run(extra_config("", tmp_path / "out", namelist), MPI.COMM_SELF)


def test_bad_flow_files(tmp_path):
    inp = _case_copy(tmp_path, "flow_files")
    lst = inp / "flows.csv"
    good = lst.read_text()
    lst.write_text(good.splitlines()[0] + "\n" + good.splitlines()[1] + "\n")
    _expect(inp / "hipft.in", r"needs at least two rows", tmp_path)
    lst.write_text(good.replace("0.25000", "zero.25"))
    _expect(inp / "hipft.in", r"flows.csv', line 3: expected 'JD vt_file vp_file'", tmp_path)
    lst.write_text(good.replace("vp00003.h5", "vp00009.h5"))
    _expect(inp / "hipft.in", r"flow file \(v_phi\) file .*vp00009.h5' does not exist", tmp_path)
    lst.write_text(good.replace("0.50000", "0.10000"))
    _expect(inp / "hipft.in", r"times must increase", tmp_path)
    lst.write_text(good)
    write_field(inp / "flows" / "vt00002.h5", np.zeros((46, 91)), np.linspace(0, 3, 46), np.linspace(0, 6, 91))
    _expect(inp / "hipft.in", r"vt00002.h5' \(v_theta\) has shape \(46, 91\); this grid needs \(47, 91\)", tmp_path)
    nml = inp / "hipft.in"
    nml.write_text(nml.read_text().replace("flow_list_filename = 'flows.csv'", ""))
    from hpcml.config import ConfigError

    with pytest.raises(ConfigError, match="use_flow_from_files needs flow_list_filename"):
        config_from_hipft(nml)


def test_bad_diffusivity_and_source_files(tmp_path):
    inp = _case_copy(tmp_path, "diffusion_map")
    t, p = np.linspace(0, math.pi, 10), np.linspace(0, 2 * math.pi, 12)
    write_field(inp / "dcoef.h5", -np.ones((10, 12)), t, p)
    _expect(inp / "hipft.in", r"diffusion.map file .*dcoef.h5' contains negative values", tmp_path)
    bad = np.ones((10, 12))
    bad[3, 4] = np.nan
    write_field(inp / "dcoef.h5", bad, t, p)
    _expect(inp / "hipft.in", r"dcoef.h5' contains non-finite values", tmp_path)
    write_field(inp / "dcoef.h5", np.ones((10, 12)), t[::-1].copy(), p)
    _expect(inp / "hipft.in", r"dcoef.h5': scales must be strictly increasing", tmp_path)
    inp = _case_copy(tmp_path, "source_file")
    with h5py.File(inp / "source.h5", "w") as fh:
        fh["Data"] = np.ones((2, 10, 12))
        fh["dim1"], fh["dim2"] = p, t
    _expect(inp / "hipft.in", r"source.file file .*source.h5': data set 'Data' must be 2-D", tmp_path)
    (inp / "source.h5").unlink()
    _expect(inp / "hipft.in", r"source.file .*source.h5' does not exist", tmp_path)


def test_bad_rigid_axis(tmp_path):
    from hpcml.config import ConfigError, load_config

    for axis, message in (("[200.0, 0.0]", r"colatitude must be in \[0, 180\]"), ("[1.0]", "must be \\[colatitude")):
        cfg = load_config(None, ["app=flux", "flow.rigid_omega=1.0", f"flow.rigid_axis={axis}"])
        cfg["output"]["directory"] = str(tmp_path)
        with pytest.raises(ConfigError, match=message):
            run(cfg, MPI.COMM_SELF)


# -- output options: HipFT's indexed maps (flux-balanced) and flow files -------------------------
OUTPUT_CASES = ("outputs", "all_options")


def output_differences(case: str, outdir: Path) -> list[str]:
    """Histories (as :func:`differences`), plus every map and flow file and both lists, against HipFT's."""
    bad = differences(case, outdir)
    ref = EXTRA / case / "reference"
    for lst in ("hipft_output_map_list.out", "hipft_output_flow_list.out"):
        want = [ln.split() for ln in (ref / lst).read_text().splitlines()]
        got = [ln.split() for ln in (outdir / lst).read_text().splitlines()] if (outdir / lst).is_file() else []
        same = len(got) == len(want) and all(
            g[0] == w[0] and g[2] == w[2] and abs(float(g[1]) - float(w[1])) <= 1e-12 * max(1.0, abs(float(w[1])))
            for g, w in zip(got[1:], want[1:])
        )
        if not same:
            bad.append(f"{lst}: {got} vs {want}")
    files = sorted(p.relative_to(ref) for p in ref.rglob("*.h5"))
    assert files, f"no reference map files in {ref}"
    for rel_path in files:
        mine_path = outdir / rel_path
        if not mine_path.is_file():
            bad.append(f"{rel_path}: not written")
            continue
        with h5py.File(ref / rel_path) as fr, h5py.File(mine_path) as fm:
            a, b = fm["Data"][...], fr["Data"][...]
            if a.shape != b.shape:
                bad.append(f"{rel_path}: shape {a.shape} vs {b.shape}")
                continue
            scale = max(float(np.max(np.abs(b))), 1e-300)
            err = float(np.max(np.abs(a - b))) / scale
            if err > 1e-6:
                bad.append(f"{rel_path}: max difference {err:.2e} of the largest value")
            for name in ("dim1", "dim2"):
                if not np.allclose(fm[name][...], fr[name][...], rtol=1e-12, atol=1e-12):
                    bad.append(f"{rel_path}: scale {name} differs")
    return bad


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_output_options_match_hipft(case, tmp_path):
    """output_map_idx_cadence, output_map_flux_balance and output_flows write what HipFT writes."""
    cfg = extra_config(case, tmp_path)
    assert cfg["output"]["map_steps"] > 0 and cfg["output"]["balance_maps"] and cfg["output"]["flows"]
    cfg["output"]["maps"] = "series.h5"
    run(cfg, MPI.COMM_SELF)
    bad = output_differences(case, tmp_path)
    assert not bad, f"{case}: {bad}"
    with h5py.File(tmp_path / "series.h5") as fh:  # the series carries the balanced maps and the flows too
        assert fh["br"].shape[0] == fh["vt"].shape[0] == fh["vp"].shape[0]
        assert fh["vt"].attrs["units"] in ("m/s", b"m/s")


@pytest.mark.mpi
@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_output_options_split(case, comm, shared_tmp):
    """The same files from every split (the maps and flows are gathered from all blocks)."""
    splits = [s for s in SPLITS.get(comm.Get_size(), []) if s[0] == 1]
    for e, pt, pp in splits:
        out = shared_tmp / f"split-{e}x{pt}x{pp}"
        run(extra_config(case, out, ensemble=e, dims=[pt, pp]), comm)
        bad = comm.bcast(output_differences(case, out) if comm.Get_rank() == 0 else None, root=0)
        assert_all(comm, not bad, f"{case} split {e}x{pt}x{pp}: {bad}")


def test_hpcml_run_hipft_every_option(tmp_path):
    """``hpcml run --hipft`` on the namelist with every option, 2 ranks: HipFT's files, HipFT's values."""
    from hpcml.testing import run_mpi

    nml = EXTRA / "all_options" / "input" / "hipft.in"
    res = run_mpi(2, ["-m", "hpcml.cli", "run", "--hipft", str(nml)], timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    bad = output_differences("all_options", tmp_path)
    assert not bad, bad
    for name in ("hipft_brmap_initial.h5", "hipft_brmap_final.h5", "hipft_brmap_maps.h5"):
        assert (tmp_path / name).is_file(), name
