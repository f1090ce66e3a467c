"""The default ``flux`` job: runs from the shipped defaults, writes every output, plots."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from hpcml.apps.flux import run
from hpcml.config import load_config


def test_default_job_outputs(tmp_path):
    cfg = load_config(None, ["app=flux", "time.end=24.0", "output.map_cadence=12.0", "output.hipft_maps=true"])
    cfg["output"]["directory"] = str(tmp_path)
    summary = run(cfg, MPI.COMM_SELF)
    assert summary["time"] == 24.0 and summary["realizations"] == 2
    assert abs(summary["flux_positive"] + summary["flux_negative"]) < 1e-6 * summary["flux_positive"]
    # phase timers within the loop's wall time; the loop's CPU seconds read once at each end
    assert sum(v for k, v in summary["timers"].items() if k != "output") <= summary["seconds"] * 1.01 + 1e-3
    assert isinstance(summary["cpu_seconds"], float) and summary["cpu_seconds"] > 0
    with h5py.File(tmp_path / "flux_maps.h5") as fh:
        br = fh["br"]
        assert br.shape == (3, 2, 181, 360)  # t = 0, 12, 24 h
        assert np.all(np.isfinite(br[...]))
        assert list(fh["realization"][...]) == [1, 2] and len(fh["phi"]) == len(fh["lon"]) == 360
        assert list(fh["time"][...]) == [0.0, 12.0, 24.0] and fh["time"].attrs["units"] == "hours"
        assert fh["lat"][0] == 90.0 and fh["lat"][-1] == -90.0  # HipFT's theta runs from the north pole
        assert fh["butterfly"].shape == (3, 2, 181) and fh["flux_positive"].shape == (3, 2)
    for name in ("hipft_brmap_initial.h5", "hipft_brmap_final.h5", "hipft_history_sol_r000002.out"):
        assert (tmp_path / name).is_file()
    with h5py.File(tmp_path / "hipft_brmap_final.h5") as fh:
        assert fh["Data"].shape == (2, 181, 361)  # HipFT layout: the 2 pi column repeated
        np.testing.assert_array_equal(fh["Data"][:, :, 0], fh["Data"][:, :, -1])


def test_analyze_draws_the_flux_figures(tmp_path):
    from hpcml.apps import plotter
    from hpcml.io.analyze import plot

    cfg = load_config(None, ["app=flux", "time.end=12.0", "output.map_cadence=6.0"])
    cfg["output"]["directory"] = str(tmp_path)
    run(cfg, MPI.COMM_SELF)
    written, _ = plot(tmp_path / "flux_maps.h5", tmp_path / "plots", plotter)
    names = {p.name for p in written}
    assert {"flux_maps-butterfly.png", "flux_maps-br.png", "flux_maps-history.png"} <= names


def test_bad_namelist_is_reported_once(tmp_path):
    """``hpcml run --hipft`` on 3 ranks: rank 0 checks the namelist, the error is printed once."""
    from hpcml.testing import run_mpi

    nml = tmp_path / "hipft.in"
    nml.write_text('&hipft_input_parameters\n validation_run = 1\n advance_flow = "false"\n n_realizations = 2.7\n/\n')
    res = run_mpi(3, ["-m", "hpcml.cli", "run", "--hipft", str(nml)], timeout=120, cwd=tmp_path)
    assert res.returncode != 0
    assert res.stderr.count("advance_flow = 'false' must be a logical") == 1, res.stderr
    assert "n_realizations = 2.7 must be an integer" in res.stderr
    assert not (tmp_path / "hipft_history_sol_r000001.out").exists()


def test_flow_fill_attenuation_matches_numpy_exp():
    """The fill's SIMD ``exp`` gives the attenuation ``2e/(1+e)``, ``e = exp(-2 max|f| / B0)``, to rounding.

    Covers large fields (``e`` at its floor) and ``B0 <= 0`` (``inv_b0`` huge: full attenuation),
    and the kernel filling the owned rows' phi halo (``wrap``) as the exchange does.
    """
    from hpcml.kernels.flux import flow_fill

    rng = np.random.default_rng(3)
    nr, ny, nx = 2, 9, 14
    i0, i1, c0, c1, att_lo, att_hi = 1, ny - 1, 1, nx - 1, 2, ny - 2
    f = rng.normal(0.0, 400.0, (nr, ny, nx))
    f[0, 3, 4], f[0, 5, 6], f[1, 2, 5] = 1e6, 1e-300, 0.0
    inv_b0 = np.array([1.0 / 300.0, np.finfo(np.float64).max])
    vt_prof, vp_prof = rng.normal(size=(nr, ny)), rng.normal(size=(nr, ny))
    vt, vp, th = np.zeros((nr, ny, nx)), np.zeros((nr, ny, nx)), np.zeros((nr, ny, nx))
    base = np.zeros((ny, nx))
    flow_fill(vt, vp, vt_prof, vp_prof, base, base, False, f, inv_b0, th, True, i0, i1, c0, c1, att_lo, att_hi, 0)
    # the same fill with the phi halo filled by the kernel: the owned rows' ghosts wrapped, nothing else changed
    wt, wp = np.zeros_like(vt), np.zeros_like(vp)
    flow_fill(wt, wp, vt_prof, vp_prof, base, base, False, f, inv_b0, th, True, i0, i1, c0, c1, att_lo, att_hi, c0)
    for v, w in ((vt, wt), (vp, wp)):
        want = v.copy()
        want[:, i0:i1, :c0] = v[:, i0:i1, c1 - c0 : c1]
        want[:, i0:i1, c1:] = v[:, i0:i1, c0 : 2 * c0]
        np.testing.assert_array_equal(w, want)
    with np.errstate(over="ignore"):  # |f| * huge = inf, as in the kernel
        e = np.exp(np.maximum(-2.0 * (np.abs(f) * inv_b0[:, None, None]), -700.0))
    ref_t = np.repeat(vt_prof[:, :, None], nx, axis=2)
    ref_p = np.repeat(vp_prof[:, :, None], nx, axis=2)
    et = np.minimum(e[:, att_lo - 1 : att_hi - 1, c0:c1], e[:, att_lo:att_hi, c0:c1])
    ref_t[:, att_lo:att_hi, c0:c1] *= 2.0 * et / (1.0 + et)
    ep = np.minimum(e[:, i0:i1, c0 - 1 : c1 - 1], e[:, i0:i1, c0:c1])
    ref_p[:, i0:i1, c0:c1] *= 2.0 * ep / (1.0 + ep)
    np.testing.assert_allclose(vt, ref_t, rtol=1e-15, atol=1e-290)
    np.testing.assert_allclose(vp, ref_p, rtol=1e-15, atol=1e-290)
    assert np.abs(vt[1, att_lo:att_hi, c0:c1]).max() < 1e-290  # B0 <= 0: fully attenuated, as in HipFT


def test_shared_flow_gives_the_per_realization_results(tmp_path, monkeypatch):
    """Realizations with the same flow share one (1 x NY x NX) flow: the same bits as one flow each.

    diffuse_advect_soccer's four realizations differ only in diffusivity, so their
    flow is held once; forcing one flow per realization must change no history value
    and no written flow.
    """
    from flux_helpers import case_config

    import hpcml.apps.flux.flows as flows

    seen = []
    init = flows.Flows.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append((self.shared, self.vt.shape[0]))

    monkeypatch.setattr(flows.Flows, "__init__", spy)
    outs = []
    for shared in (True, False):
        if not shared:
            monkeypatch.setattr(flows, "shared_flow", lambda prm, rsl: False)
        out = tmp_path / f"shared-{shared}"
        cfg = case_config("diffuse_advect_soccer", out, 6.0)
        cfg["output"].update(maps="maps.h5", flows=True, map_cadence=3.0)
        run(cfg, MPI.COMM_SELF)
        outs.append(out)
    assert seen == [(True, 1), (False, 4)]
    for name in ("hipft_history_sol_r000001.out", "hipft_history_sol_r000004.out", "hipft_history_num_r000003.out"):
        assert (outs[0] / name).read_text() == (outs[1] / name).read_text()
    with h5py.File(outs[0] / "maps.h5") as a, h5py.File(outs[1] / "maps.h5") as b:
        assert a["vp"].shape == b["vp"].shape and a["vp"].shape[1] == 4
        for key in ("br", "vt", "vp"):
            np.testing.assert_array_equal(a[key][...], b[key][...])
        assert np.abs(a["vp"][...]).max() > 0


@pytest.mark.parametrize("method", ["rkg2", "rkl2"])
def test_super_step_in_one_call_gives_the_stage_by_stage_results(tmp_path, monkeypatch, method):
    """A block holding whole realizations runs a super-step's stages in one kernel call:
    the same history files, byte for byte, and the same field as one call per stage."""
    from flux_helpers import case_config

    from hpcml.apps.flux import FluxSolver
    from hpcml.apps.flux.device import CpuDevice

    calls = []
    fused = CpuDevice.diff_sts_stages

    def counted(self, *args):
        calls.append(fused(self, *args))
        return calls[-1]

    monkeypatch.setattr(CpuDevice, "diff_sts_stages", counted)
    fields, texts = [], []
    for one_call in (True, False):
        if not one_call:
            monkeypatch.setattr(CpuDevice, "diff_sts_stages", lambda self, *args: False)
        out = tmp_path / f"fused-{one_call}"
        cfg = case_config("diffuse_soccer", out, 8.0)
        cfg["diffusion"]["method"] = method
        sv = FluxSolver(cfg, MPI.COMM_SELF)
        sv.run()
        fields.append(sv.gather_field())
        texts.append([(out / f"hipft_history_sol_r00000{r}.out").read_text() for r in range(1, 5)])
    assert calls and all(calls)  # every super-step took the one-call path
    assert texts[0] == texts[1]
    np.testing.assert_array_equal(fields[0], fields[1])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_one_call_super_step_shares_the_work_among_the_threads(monkeypatch, threads):
    """The CPU device always runs the one-call super-step, with the process's Numba thread
    count as the kernel's shares (the kernel splits the realizations that do not divide
    evenly by rows; its bits for any shares: test_flux_kernels)."""
    import hpcml.kernels.flux as kf
    import numba

    from hpcml.apps.flux.device import CpuDevice

    ran = []
    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
    monkeypatch.setattr(kf, "diff_sts_stages", lambda *args: ran.append((args[0].shape, args[-1])))
    w0 = np.zeros((5, 186, 365))
    assert CpuDevice().diff_sts_stages(w0, 1, 2) is True
    assert ran == [(w0.shape, threads)]


def test_stage_kernels_fill_the_phi_halo_as_the_exchange_does(tmp_path, monkeypatch):
    """A block alone in phi has the advection and diffusion stage kernels fill the periodic
    phi halo row by row instead of an exchange after each stage: the same history files,
    byte for byte, and the same ghosted block as with the exchange."""
    from flux_helpers import case_config

    from hpcml.apps.flux import FluxSolver
    from hpcml.apps.flux.device import CpuDevice

    wraps = []
    own = CpuDevice.advect_stage

    def counted(self, *args, wrap=0):
        wraps.append(wrap)
        return own(self, *args, wrap=wrap)

    monkeypatch.setattr(CpuDevice, "advect_stage", counted)
    fields, texts = [], []
    for kernel_fill in (True, False):
        if not kernel_fill:
            monkeypatch.setattr(CpuDevice, "phi_wrap", lambda self, fld: 0)
        out = tmp_path / f"wrap-{kernel_fill}"
        cfg = case_config("diffuse_advect_soccer", out, 6.0)
        cfg["grid"].update(res_nt=24, res_np=48)
        sv = FluxSolver(cfg, MPI.COMM_SELF)
        sv.adv.fused = False  # stage by stage: the step-in-one-call path has its own test below
        sv.run()
        fields.append(sv.st.f.data.copy())  # the ghosted block: the phi halo included
        texts.append([(out / f"hipft_history_sol_r00000{r}.out").read_text() for r in range(1, 5)])
    assert wraps[0] > 0 and set(wraps) == {0, wraps[0]}  # the kernels filled the halo in the first run only
    assert texts[0] == texts[1]
    np.testing.assert_array_equal(fields[0], fields[1])


@pytest.mark.parametrize(
    ("case", "scheme"),
    [
        ("diffuse_advect_atten_map_1cr", "ssprk43"),
        ("diffuse_advect_soccer", "ssprk43"),
        ("diffuse_advect_atten_map_1cr", "ssprk33"),
        ("diffuse_advect_soccer", "euler"),
    ],
)
def test_one_call_advance_gives_the_stage_by_stage_results(tmp_path, monkeypatch, case, scheme):
    """A block holding whole realizations advances a whole step in one kernel call
    (``kernels.flux.advect_step``: caps summed in the kernel, realizations a group at a
    time, every stage of the step for one group, then the next): the same history files,
    byte for byte, and the same ghosted block as every stage over all realizations.
    1cr: one flow per realization (attenuation), 5 realizations in groups of 1, of at
    most 2 (1, 2, 2: ``realization_groups`` splits evenly) and in one group; soccer: one
    flow shared by its 4 realizations."""
    from flux_helpers import case_config

    import hpcml.apps.flux.advection as adv
    from hpcml.apps.flux import FluxSolver
    from hpcml.apps.flux.device import CpuDevice

    sizes, steps = [], []
    own, own_step = CpuDevice.advect_stage, CpuDevice.advect_step

    def counted(self, *args, wrap=0):
        sizes.append(args[0].shape[0])
        return own(self, *args, wrap=wrap)

    def counted_step(self, *args):
        steps.append(args[-3].tolist())  # the group bounds
        return own_step(self, *args)

    monkeypatch.setattr(CpuDevice, "advect_stage", counted)
    monkeypatch.setattr(CpuDevice, "advect_step", counted_step)
    fields, texts, seen, bounds = [], [], [], []
    for variant in ("stages", "fused-one", "fused-two", "fused-all"):
        sizes.clear()
        steps.clear()
        out = tmp_path / variant
        cfg = case_config(case, out, 2.0 if "1cr" in case else 6.0)
        cfg["flow"]["time_scheme"] = scheme
        if "1cr" not in case:  # the 1cr grid is its map's
            cfg["grid"].update(res_nt=24, res_np=48)
        sv = FluxSolver(cfg, MPI.COMM_SELF)
        lay = sv.adv.s.lay
        per = adv.ADVECT_ARRAYS * 8 * lay.NY * lay.NX  # one realization's bytes
        sv.adv.group_bytes = {"one": per, "two": 2 * per}.get(variant.removeprefix("fused-"), 1 << 40)
        sv.adv.fused = variant != "stages"
        sv.run()
        seen.append(sorted(set(sizes)))
        bounds.append(steps[0] if steps else None)
        assert len(set(map(tuple, steps))) <= 1
        fields.append(sv.st.f.data.copy())
        nr = sv.st.f.data.shape[0]
        texts.append([(out / f"hipft_history_sol_r{r:06d}.out").read_text() for r in range(1, nr + 1)])
    assert seen[0] == [nr] and bounds[0] is None  # stage by stage over every realization
    assert seen[1] == seen[2] == seen[3] == []  # the one-call runs never ran a stage alone
    assert bounds[1] == list(range(nr + 1)) and bounds[3] == [0, nr]
    assert bounds[2] == [0] + [g.stop for g in adv.realization_groups(nr, 1, 2 * adv.ADVECT_ARRAYS * 8)]
    for t, f in zip(texts[1:], fields[1:], strict=True):
        assert t == texts[0]
        np.testing.assert_array_equal(f, fields[0])


def test_realization_groups_are_even_and_cover_every_realization():
    """Groups follow the byte budget, are consecutive, cover 0..nr-1 once and differ by at most one."""
    from hpcml.apps.flux.advection import ADVECT_ARRAYS, realization_groups

    one = ADVECT_ARRAYS * 8 * 100
    assert realization_groups(5, 100, one) == [slice(r, r + 1) for r in range(5)]
    assert realization_groups(5, 100, 0) == [slice(r, r + 1) for r in range(5)]  # at least one each
    assert realization_groups(7, 100, 3 * one) == [slice(0, 2), slice(2, 4), slice(4, 7)]
    assert realization_groups(4, 100, 10 * one) == [slice(0, 4)]
    for nr in range(1, 12):
        for per in range(1, 6):
            gs = realization_groups(nr, 100, per * one)
            sizes = [g.stop - g.start for g in gs]
            assert [g.start for g in gs] == [0, *(g.stop for g in gs[:-1])] and gs[-1].stop == nr
            assert max(sizes) <= per and max(sizes) - min(sizes) <= 1


def test_shared_flow_only_without_attenuation_and_with_equal_profiles():
    """The decision is the parameters': attenuation or differing profile coefficients give one flow each."""
    from types import SimpleNamespace

    from hpcml.apps.flux.flows import shared_flow

    mf = np.array([[22.0, 11.0, -28.0], [22.0, 11.0, -28.0], [20.0, 11.0, -28.0]])
    dr = np.tile([46.0, -262.0, -379.0], (3, 1))
    prm = SimpleNamespace(attenuate=False, mf_model=1, mf=mf, dr_model=1, dr=dr)
    assert shared_flow(prm, slice(0, 2))
    assert not shared_flow(prm, slice(0, 3))  # the third realization's meridional flow differs
    assert shared_flow(SimpleNamespace(**{**vars(prm), "mf_model": 0}), slice(0, 3))  # that flow is off
    assert not shared_flow(SimpleNamespace(**{**vars(prm), "attenuate": True}), slice(0, 2))


@pytest.mark.parametrize(
    ("extra", "reused"),
    [
        ((), True),  # diffusion last in the step: its last cycle's row is the step's row
        (("source.advance=true", "source.flux_per_hour=[2.0]"), False),  # emergence after the diffusion
        (("splitting.strang=true",), False),  # advection and sources after the diffusion
    ],
)
def test_history_row_reused_only_when_the_field_is_unchanged(tmp_path, monkeypatch, extra, reused):
    """HipFT writes a row after a step's last diffusion cycle and one for the step: the second
    reuses the first's values only when nothing changed the field in between, giving the same
    history files, byte for byte, as analysing every row."""
    from hpcml.apps.flux import FluxSolver
    from hpcml.apps.flux.diagnostics import Diagnostics

    base = ["app=flux", "realizations.n=2", "grid.res_nt=24", "grid.res_np=48", "time.end=6.0",
            "output.subcycle_rows=true", "flow.mf_p1=[22.0]", *extra]  # fmt: skip
    calls = []
    compute = Diagnostics.compute

    def counted(self, *args, **kwargs):
        calls.append(1)
        return compute(self, *args, **kwargs)

    monkeypatch.setattr(Diagnostics, "compute", counted)
    texts, counts = [], []
    write = FluxSolver.write_history

    def never_reuse(self, t, *args, reuse=False, **kwargs):
        return write(self, t, *args, **kwargs)

    for allow in (True, False):
        if not allow:
            monkeypatch.setattr(FluxSolver, "write_history", never_reuse)
        out = tmp_path / f"reuse-{allow}"
        cfg = load_config(None, base)
        cfg["output"].update(directory=str(out), maps="")
        calls.clear()
        run(cfg, MPI.COMM_SELF)
        counts.append(len(calls))
        texts.append([(out / f"hipft_history_{k}_r00000{r}.out").read_text() for k in ("sol", "num") for r in (1, 2)])
    assert texts[0] == texts[1]
    assert (counts[0] < counts[1]) == reused, counts


def test_a_nan_flow_stops_the_run_with_a_named_error(tmp_path):
    """A NaN velocity (a NaN in a flow profile here; a flow file alike) makes the advective
    rate NaN, and the step is refused with a named error instead of being taken from the
    other cells (the float maximum ignored NaN)."""
    from flux_helpers import case_config

    from hpcml.apps.flux import FluxSolver

    cfg = case_config("diffuse_advect_atten_map_1cr", tmp_path / "out", 1.0)
    sv = FluxSolver(cfg, MPI.COMM_SELF)
    sv.flows.rebuild(sv.st)  # finite flows: a finite step
    assert np.isfinite(sv.flows.dt_adv)
    sv.flows.vp_prof[1, 60] = np.nan
    with pytest.raises(FloatingPointError, match="advective rate on this rank is nan"):
        sv.flows.rebuild(sv.st)
