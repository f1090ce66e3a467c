"""The default ``flux`` job: runs from the shipped defaults, writes every output, plots."""

from __future__ import annotations

import h5py
import numpy as np
from mpi4py import MPI

from hpcml.apps.flux import run
from hpcml.config import load_config


def test_default_job_outputs(tmp_path):
    cfg = load_config(None, ["app=flux", "time.end=24.0", "output.map_cadence=12.0", "output.hipft_maps=true"])
    cfg["output"]["directory"] = str(tmp_path)
    summary = run(cfg, MPI.COMM_SELF)
    assert summary["time"] == 24.0 and summary["realizations"] == 2
    assert abs(summary["flux_positive"] + summary["flux_negative"]) < 1e-6 * summary["flux_positive"]
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
