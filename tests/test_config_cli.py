"""Configuration merging/validation and the ``hpcml`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tomllib

from hpcml.config import ConfigError, default_config, dumps, load_config, parse_override
from hpcml.testing import run_mpi


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["app=heat", "heat.steps=7", "grid.shape=[32, 48]", "output.path=out.h5"])
    assert cfg["heat"]["steps"] == 7 and cfg["grid"]["shape"] == [32, 48]
    assert cfg["output"]["path"] == "out.h5"
    f = tmp_path / "c.toml"
    f.write_text('app = "heat"\n[heat]\nalpha = 2\n')
    cfg = load_config(f, ["heat.alpha=3.5"])
    assert cfg["heat"]["alpha"] == 3.5
    assert load_config(f)["heat"]["alpha"] == 2.0


def test_rejects_unknown_and_mistyped(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'heat.stpes'.*did you mean 'heat.steps'"):
        load_config(None, ["app=heat", "heat.stpes=3"])
    with pytest.raises(ConfigError, match=r"heat\.steps must be int"):
        load_config(None, ["app=heat", "heat.steps=1.5"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[heat\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown app"):
        load_config(None, ["app=nope"])


def test_default_app_is_flux():
    assert load_config(None)["app"] == "flux"


def test_parse_override_and_dumps_round_trip():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a.b=hello") == (["a", "b"], "hello")
    cfg = default_config("heat")
    import tomllib

    assert tomllib.loads(dumps(cfg)) == cfg


HEAT = ["--set", "app=heat", "--set", "grid.shape=[40, 30]", "--set", "output.every=5"]


def _heat(tmp_path, nranks, *extra):
    res = run_mpi(nranks, ["-m", "hpcml.cli", "run", "--json", *HEAT, *extra], timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout[res.stdout.index("{") :])


@pytest.mark.parametrize("nranks", [1, 3])
def test_hpcml_run_heat(tmp_path, nranks):
    summary = _heat(tmp_path, nranks, "--set", "heat.steps=25", "--set", "output.path='heat.h5'")
    assert summary["ranks"] == nranks
    assert summary["amplitude_error"] < 1e-12
    with h5py.File(tmp_path / "heat.h5") as f:
        assert tomllib.loads(f.attrs["config"])["heat"]["steps"] == 25
        u = f["u"][...]
        assert u.shape == (6, 40, 30) and np.isfinite(u).all()
        assert list(f["step"][...]) == [0, 5, 10, 15, 20, 25]
        assert np.isclose(f["norm"][-1], np.linalg.norm(u[-1]))
    assert (tmp_path / "heat.xmf").is_file()


def test_restart_on_other_rank_count_is_identical(tmp_path):
    ck = ["--set", "checkpoint.dir='ck'", "--set", "checkpoint.every=10", "--set", "heat.steps=30"]
    full = _heat(tmp_path, 2, *ck, "--set", "output.path='full.h5'")
    # Pretend the job died after step 20: drop the newest checkpoint, restart on 3 ranks.
    newest = sorted((tmp_path / "ck").glob("ckpt-*.h5"))[-1]
    newest.unlink()
    with h5py.File(tmp_path / "full.h5") as f:
        final = f["u"][-1]
    again = _heat(tmp_path, 3, *ck, "--set", "output.path='full.h5'", "--set", "run.restart=true")
    assert again["restarted_from"] == 20
    # the field is bit-identical; reductions differ only in summation order across ranks
    assert np.isclose(again["norm"], full["norm"], rtol=1e-13, atol=0)
    with h5py.File(tmp_path / "full.h5") as f:
        assert list(f["step"][...]) == [0, 5, 10, 15, 20, 25, 30]
        assert np.array_equal(f["u"][-1], final)


def test_hpcml_run_bad_config_fails_fast(tmp_path):
    res = run_mpi(3, ["-m", "hpcml.cli", "run", "--set", "app=heat", "--set", "heat.cfl=0.9"], timeout=60)
    assert res.returncode != 0
    assert "heat.cfl must be in (0, 0.25]" in res.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["app=heat", "grid.shape=[64, 64]", "grid.dims=[2, 2]"], "multiplies to 4 but the communicator has 3"),
        (["app=poisson", "grid.shape=[64, 64]", "grid.dims=[3, 1]", "grid.periodic=[true, true]"], None),
        (["app=poisson", "grid.shape=[2, 64]", "grid.dims=[3, 1]"], "cannot be split over 3 ranks"),
        (["app=train", "grid.shape=[64, 64]", "grid.dims=[2, 2]"], "on 3 ranks per replica"),
        (["decomposition.dims=[2, 2]"], "needs 4 ranks per ensemble group"),
        (["decomposition.ensemble=2"], "does not divide the 3 ranks"),
    ],
)
def test_layout_that_the_rank_count_cannot_hold_is_a_config_error(tmp_path, sets, message):
    # checked by rank 0 against the launch's rank count before the run starts: one
    # line, exit 2 (as a typo), instead of an abort with one line per rank
    args = ["-m", "hpcml.cli", "run"]
    for s in sets:
        args += ["--set", s]
    res = run_mpi(3, args, timeout=120, cwd=tmp_path)
    if message is None:  # a layout that fits: the run goes through
        assert res.returncode == 0 and "configuration error" not in res.stderr, res.stderr
        return
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("configuration error") == 1 and message in res.stderr, res.stderr


def test_hpcml_info_json():
    res = run_mpi(2, ["-m", "hpcml.cli", "info", "--json"], timeout=60)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["ranks"] == 2 and len(info["per_rank"]) == 2
    for key in ("mpi_library", "numba", "h5py_mpi", "cuda_aware_mpi", "threads_per_rank", "gpus_seen"):
        assert key in info
    assert sys.version.split()[0] == info["python"]


SUITE = Path(__file__).resolve().parent / "data" / "hipft"


def test_hpcml_run_hipft_namelist(tmp_path):
    case = SUITE / "advect_gaussians_phi"
    res = run_mpi(
        2,
        ["-m", "hpcml.cli", "run", "--hipft", str(case / "input" / "hipft.in"), "--set", "output.directory='out'"],
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    ours = np.loadtxt(tmp_path / "out" / "hipft_history_sol_r000001.out", skiprows=1)[-1]
    ref = np.loadtxt(case / "reference" / "hipft_history_sol_r000001.out", skiprows=1)[-1]
    # STEP, TIME, BR_MIN, BR_MAX, BR_ABS_MIN, FLUX_POSITIVE, FLUX_NEGATIVE
    assert np.allclose(ours[[2, 3, 5, 6]], ref[[2, 3, 5, 6]], rtol=1e-6, atol=0)


def test_hipft_and_toml_conflict(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text('app = "heat"\n')
    res = run_mpi(1, ["-m", "hpcml.cli", "run", str(cfg), "--hipft", "x.in"], timeout=60)
    assert res.returncode != 0 and "not both" in res.stderr


@pytest.mark.parametrize(
    "sets",
    [["app=heat", "output.path='adir'"], ["app=poisson", "output.path='adir'"], ["output.directory='afile'"]],
)
def test_output_path_of_the_wrong_kind_is_a_config_error(tmp_path, sets):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    args = ["-m", "hpcml.cli", "run"]
    for s in sets:
        args += ["--set", s]
    res = run_mpi(2, args, timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("configuration error") == 1 and ("is a folder" in res.stderr or "is a file" in res.stderr)
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_train_refuses_a_dataset_made_with_other_settings(tmp_path):
    # data.generate = "missing" reuses an existing dataset: one made for another
    # data.samples (or grid, seed, ...) would be trained on silently
    base = ["-m", "hpcml.cli", "run", "--set", "app=train", "--set", "train.epochs=1", "--set", "output.path=''"]
    first = run_mpi(2, [*base, "--set", "data.samples=8"], timeout=180, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    made = (tmp_path / "heat_pairs.h5").read_bytes()
    res = run_mpi(2, [*base, "--set", "data.samples=16"], timeout=180, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("ConfigError") == 1 and "data.samples = 8 there, 16 now" in res.stderr
    assert (tmp_path / "heat_pairs.h5").read_bytes() == made  # left as it was
    always = [*base, "--set", "data.samples=16", "--set", "data.generate='always'"]
    again = run_mpi(2, always, timeout=180, cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_heat_restart_past_its_step_count_is_refused(tmp_path):
    base = ["-m", "hpcml.cli", "run", "--set", "app=heat", "--set", "grid.shape=[32, 32]"]
    base += ["--set", "checkpoint.every=10"]
    first = run_mpi(2, [*base, "--set", "heat.steps=20"], timeout=120, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    res = run_mpi(2, [*base, "--set", "heat.steps=10", "--set", "run.restart=true"], timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("ConfigError") == 1 and "is at step 20, past heat.steps = 10" in res.stderr
