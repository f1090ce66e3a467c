"""Checkpoint and restart: a restarted run continues exactly; checkpoints load on any rank count."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from flux_helpers import assert_all, case_config, compare_histories, suite
from mpi4py import MPI

from hpcml.apps.flux import run

CASE, TEND = "diffuse_advect_atten_map_1cr", 4.0


def test_restart_continues_exactly(tmp_path):
    suite()
    run(case_config(CASE, tmp_path / "a", TEND), MPI.COMM_SELF)
    cfg = case_config(CASE, tmp_path / "b", TEND)
    cfg["output"].update(checkpoint="ckpt", checkpoint_cadence=2.0, maps="maps.h5")
    run(cfg, MPI.COMM_SELF)
    mid = tmp_path / "b" / "ckpt" / "ckpt-0000000008.h5"
    assert mid.is_file(), sorted(p.name for p in (tmp_path / "b" / "ckpt").iterdir())
    (tmp_path / "b" / "ckpt" / "ckpt-0000000016.h5").unlink()  # as if the job died after step 8
    cfg["run"]["restart"] = True
    summary = run(cfg, MPI.COMM_SELF)
    assert summary["steps"] == 16 and summary["time"] == TEND
    assert not compare_histories(tmp_path / "b", tmp_path / "a", 5, rtol=0.0, floor=0.0)
    with h5py.File(tmp_path / "b" / "maps.h5") as fh:
        assert fh["br"].shape == (2, 5, 180, 359)  # initial + final, the restart replaced the final
        assert np.all(np.isfinite(fh["br"][...]))
        assert fh["butterfly"].shape == (2, 5, 180)


def test_restart_without_checkpoint_is_clear(tmp_path):
    suite()
    cfg = case_config(CASE, tmp_path, TEND)
    cfg["output"]["checkpoint"] = "none"
    cfg["run"]["restart"] = True
    from hpcml.config import ConfigError

    with pytest.raises(ConfigError, match=r"run\.restart = true but .*none holds no checkpoint"):
        run(cfg, MPI.COMM_SELF)


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_checkpoint_loads_on_another_rank_count(comm, shared_tmp):
    """Checkpoint on all ranks (a theta x phi split), restart serially on rank 0."""
    suite()
    full = shared_tmp / "full"
    if comm.Get_rank() == 0:
        run(case_config(CASE, full, TEND), MPI.COMM_SELF)
    cfg = case_config(CASE, shared_tmp / "par", TEND, ensemble=1)
    cfg["output"].update(checkpoint="ckpt", checkpoint_cadence=2.0)
    run(cfg, comm)
    ok, msg = True, ""
    if comm.Get_rank() == 0:
        ser = shared_tmp / "ser"
        shutil.copytree(shared_tmp / "par", ser)
        (ser / "ckpt" / "ckpt-0000000016.h5").unlink()
        cfg["output"].update(directory=str(ser))
        cfg["run"]["restart"] = True
        cfg["decomposition"]["ensemble"] = 0
        run(cfg, MPI.COMM_SELF)
        bad = compare_histories(ser, full, 5)
        ok, msg = not bad, str(bad[:3])
    assert_all(comm, ok, msg)


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_ensemble_groups_write_and_resume_their_own_histories(comm, shared_tmp):
    """One ensemble group per rank: each group's root writes its realizations' history files.

    A restart on the same split truncates every group's files to the checkpoint and
    continues them: the files equal an uninterrupted serial run's, bit for bit.
    """
    suite()
    full = shared_tmp / "full"
    if comm.Get_rank() == 0:
        run(case_config(CASE, full, TEND), MPI.COMM_SELF)
    out = shared_tmp / "groups"
    cfg = case_config(CASE, out, TEND, ensemble=comm.Get_size())
    cfg["output"].update(checkpoint="ckpt", checkpoint_cadence=2.0)
    first = run(cfg, comm)
    assert first["ensemble_groups"] == comm.Get_size()
    comm.Barrier()
    if comm.Get_rank() == 0:
        (out / "ckpt" / "ckpt-0000000016.h5").unlink()  # as if the job died after step 8
    comm.Barrier()
    cfg["run"]["restart"] = True
    second = run(cfg, comm)
    assert second["restarted_from"] == 8 and second["steps"] == 16
    ok, msg = True, ""
    if comm.Get_rank() == 0:
        bad = compare_histories(out, full, 5, rtol=0.0, floor=0.0)
        ok, msg = not bad, str(bad[:3])
    assert_all(comm, ok, msg)


def test_stop_between_map_times_then_resume_keeps_the_map_series(tmp_path, monkeypatch):
    """A stop at step 6 (maps every 4 steps) and an ``"auto"`` resume: the same map steps and bits as one run."""
    suite()
    import hpcml.runtime

    def configured(out):
        cfg = case_config(CASE, out, TEND)
        cfg["output"].update(maps="maps.h5", map_cadence=1.0, checkpoint="ckpt")
        cfg["run"]["restart"] = "auto"
        return cfg

    run(configured(tmp_path / "a"), MPI.COMM_SELF)

    class StopAtStep6:  # the run loop asks once per step; a signal "arrives" before the 6th question
        def __init__(self, comm=None, interval=0.5):
            self.calls = 0

        def __call__(self):
            self.calls += 1
            return self.calls >= 6

    monkeypatch.setattr(hpcml.runtime, "StopPoll", StopAtStep6)
    first = run(configured(tmp_path / "b"), MPI.COMM_SELF)
    assert first["stopped_early"] and first["steps"] == 6
    with h5py.File(tmp_path / "b" / "maps.h5") as fh:
        assert list(fh["step"][:]) == [0, 4, 6]  # the stop wrote its state
    monkeypatch.undo()
    second = run(configured(tmp_path / "b"), MPI.COMM_SELF)
    assert second["steps"] == 16 and not second["stopped_early"]
    with h5py.File(tmp_path / "a" / "maps.h5") as fa, h5py.File(tmp_path / "b" / "maps.h5") as fb:
        assert list(fb["step"][:]) == list(fa["step"][:]) == [0, 4, 8, 12, 16]
        assert np.array_equal(fa["br"][...], fb["br"][...])
    assert not compare_histories(tmp_path / "b", tmp_path / "a", 5, rtol=0.0, floor=0.0)
