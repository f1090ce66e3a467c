"""Random flux emergence and data assimilation (sections 8.2-8.4 of the spec)."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from flux_helpers import assert_all, compare_histories, mine
from mpi4py import MPI

from hpcml.apps.flux import FluxSolver
from hpcml.apps.flux.grid import D2R
from hpcml.config import load_config

NT, NF = 30, 61


def base_config(outdir, *overrides):
    cfg = load_config(
        None,
        [
            "app=flux",
            "realizations.n=2",
            f"grid.res_nt={NT}",
            f"grid.res_np={NF}",
            'initial.kind="zero"',
            "flow.advance=false",
            "diffusion.advance=false",
            "flow.mf_p1=[22.0]",
            "time.end=2.0",
            *overrides,
        ],
    )
    cfg["output"].update(directory=str(outdir), maps="")
    return cfg


def solve(cfg, comm=MPI.COMM_SELF):
    s = FluxSolver(cfg, comm)
    summary = s.run()
    field = s.gather_field()
    s.lay.free()
    return summary, field


def test_emergence_rate_and_balance(tmp_path):
    """One step of length dt adds about dt x the requested unsigned flux, balanced."""
    cfg = base_config(tmp_path, "source.advance=true", "source.flux_per_hour=[2.0, 8.0]", "time.end=0.1")
    solve(cfg)
    for r, uf in ((1, 2.0), (2, 8.0)):
        names, rows = mine(tmp_path, r)
        fp, fn = rows[-1, names.index("FLUX_POSITIVE")], rows[-1, names.index("FLUX_NEGATIVE")]
        assert abs(fp + fn) <= 1e-12 * (fp - fn)
        assert (fp - fn) == pytest.approx(0.1 * uf * 1e21, rel=0.05)


def test_emergence_is_reproducible_and_restarts(tmp_path):
    over = ("source.advance=true", "source.flux_per_hour=[1.0]", "time.end=2.0", "source.lifetime=0.25")
    solve(base_config(tmp_path / "a", *over))
    cfg = base_config(tmp_path / "b", *over)
    cfg["output"].update(checkpoint="ck", checkpoint_cadence=1.0)
    solve(cfg)
    assert not compare_histories(tmp_path / "b", tmp_path / "a", 2, rtol=0.0, floor=0.0)
    for newer in sorted((tmp_path / "b" / "ck").glob("ckpt-*.h5"))[1:]:
        newer.unlink()  # resume from the first checkpoint
    cfg["run"]["restart"] = True
    solve(cfg)
    assert not compare_histories(tmp_path / "b", tmp_path / "a", 2, rtol=0.0, floor=0.0)
    _, rows = mine(tmp_path / "a", 1, "num")
    assert np.all(rows[1:, 2] <= 0.125 + 1e-15)  # steps cut at frame changes (lifetime / 2)


def _da_setup(tmp_path):
    """A list of two maps (t = 0 and t = 1.5 h) on the run's generated grid."""
    t = np.arange(NT) * (math.pi / (NT - 1))
    p = np.arange(NF) * (2 * math.pi / (NF - 1))
    tt, pp = np.meshgrid(t, p, indexing="ij")
    m1 = np.stack([np.full((NT, NF), 5.0), np.ones((NT, NF)), np.ones((NT, NF))])
    data2 = 10.0 * np.cos(tt) + np.sin(pp)
    mu = np.cos(tt - math.pi / 2) * np.cos(pp - math.pi)  # disk-centre cosine, negative on the far side
    m2 = np.stack([data2, np.full((NT, NF), 0.5), mu])
    for name, arr in (("m1.h5", m1), ("m2.h5", m2)):
        with h5py.File(tmp_path / name, "w") as fh:
            fh["Data"] = arr
            fh["dim1"] = p
            fh["dim2"] = t
            fh["dim3"] = np.arange(1.0, 4.0)
    lst = tmp_path / "maps.csv"
    rows = ["obs_datetime_utc,obs_datetime_utc,obs_jd,path"]
    for jd, name in ((2460000.0, "m1.h5"), (2460000.0625, "m2.h5")):
        rows.append(f"{'2023-02-24T12:00:00':19s} {'2023-02-24T12:00:00':19s} {jd:13.5f} {name}")
    lst.write_text("\n".join(rows) + "\n")
    return lst, data2, mu


@pytest.mark.parametrize("mode", ["blend", "add", "mu"])
def test_assimilation_blends_maps(tmp_path, mode):
    lst, data2, mu = _da_setup(tmp_path)
    over = ["assimilation.enabled=true", f"assimilation.list={lst}", "assimilation.mult_fac=2.0", "time.dt_max=1.0"]
    if mode == "add":
        over.append("assimilation.add=true")
    if mode == "mu":
        over += [
            "assimilation.custom_from_mu=true",
            "assimilation.mu_power=[2.0, 4.0]",
            "assimilation.lat_limit=[20.0]",
        ]
    summary, field = solve(base_config(tmp_path, *over))
    _, rows = mine(tmp_path, 1)
    # map 1 (t = 0) is applied before the first step: 2 x 5 G (0 where the latitude limit cuts)
    assert rows[0, 3] == 10.0 and rows[0, 2] == (0.0 if mode == "mu" else 10.0)
    _, num = mine(tmp_path, 1, "num")
    assert list(num[:, 1]) == [0.0, 1.0, 1.5, 2.0]  # the step is cut to land on the map at 1.5 h
    # expected field on the unique columns (seam: the file's 2 pi column)
    d2, m = 2.0 * data2[:, 1:], mu[:, 1:]
    t = (np.arange(NT) * (math.pi / (NT - 1)))[:, None]
    j = np.arange(1, NT + 1)[:, None] + 0 * m
    j0 = int(np.argmax(t[:, 0] >= 20 * D2R)) + 1
    j1 = int(np.nonzero(t[:, 0] <= math.pi - 20 * D2R)[0][-1]) + 1
    polar = (j <= j0) | (j >= j1)
    for r in range(2):
        if mode == "mu":
            w1 = np.where(polar, 0.0, 1.0)  # mu = 1 everywhere on map 1
            w = np.where(polar, 0.0, np.where(m > 0.1, np.maximum(m, 0) ** (2.0, 4.0)[r], 0.0))
        else:
            w1, w = 1.0, 0.5
        f1 = w1 * 10.0
        expect = f1 + w * d2 if mode == "add" else f1 + w * (d2 - f1)
        np.testing.assert_allclose(field[r], expect, rtol=1e-14, atol=1e-13)
    assert summary["time"] == 2.0


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_sources_and_assimilation_split_independent(comm, shared_tmp):
    lst, _, _ = _da_setup(shared_tmp) if comm.Get_rank() == 0 else (None, None, None)
    lst = comm.bcast(lst, root=0)
    over = (
        "source.advance=true", "source.flux_per_hour=[1.0, 3.0]", "assimilation.enabled=true",
        f"assimilation.list={lst}", "assimilation.balance_flux=true", "flow.advance=true", "diffusion.advance=true",
    )  # fmt: skip
    if comm.Get_rank() == 0:
        solve(base_config(shared_tmp / "serial", *over))
    comm.Barrier()
    size = comm.Get_size()
    for e in (1, 2):
        if size % e:
            continue
        cfg = base_config(shared_tmp / f"e{e}", *over)
        cfg["decomposition"]["ensemble"] = e
        solve(cfg, comm)
        bad = compare_histories(shared_tmp / f"e{e}", shared_tmp / "serial", 2) if comm.Get_rank() == 0 else []
        bad = comm.bcast(bad, root=0)
        assert_all(comm, not bad, str(bad[:3]))
