"""``hpcml bench flux``: HipFT's timer summary is read right, and a quick run writes its table."""

from __future__ import annotations

import json
import re

import pytest
from flux_helpers import SUITE

from hpcml.bench.flux import hipft_executables, hipft_notes, parse_hipft_log

# HipFT 1.19.3's run-time summary, as it prints it (note "--> Diffusion" without a colon)
HIPFT_SUMMARY = """
 Run time summary:
 -----------------

                                  Avg         Min         Max      S. Dev
                                  ---         ---         ---      ------
 Wall clock time:              33.060      33.060      33.060       0.000
 --> Setup:                     0.320       0.320       0.320       0.000
 --> Update:                    4.304       4.304       4.304       0.000
 --> Data Assimilation:         0.000       0.000       0.000       0.000
 --> Flux transport:           24.249      24.249      24.249       0.000
     --> Advecton:             16.672      16.672      16.672       0.000
     --> Diffusion              7.575       7.575       7.575       0.000
     --> Source:                0.000       0.000       0.000       0.000
 --> Analysis:                  3.995       3.995       3.995       0.000
 --> I/O:                       0.215       0.215       0.215       0.000
 --> MPI overhead:              0.028       0.028       0.028       0.000
"""


def test_hipft_summary_is_parsed():
    got = parse_hipft_log(HIPFT_SUMMARY)
    assert got == {"wall_s": 33.06, "update_s": 4.304, "adv_s": 16.672, "diff_s": 7.575, "analysis_s": 3.995,
                   "io_s": 0.215}  # fmt: skip


def test_hipft_exe_must_be_executable(monkeypatch, tmp_path):
    monkeypatch.setenv("HIPFT_EXE", str(tmp_path / "nope"))
    with pytest.raises(SystemExit, match=r"HIPFT_EXE=.* is not an executable"):
        hipft_executables()
    monkeypatch.delenv("HIPFT_EXE")
    monkeypatch.delenv("HIPFT_EXE_2T", raising=False)
    assert hipft_executables() == {}


def test_notes_name_the_missing_hipft_builds():
    """Without a 2-thread build the table says its machine ratios are against one HipFT thread."""
    assert "HIPFT_EXE not set" in hipft_notes({})[0]
    (note,) = hipft_notes({"1t": "/x/hipft"})
    assert "HIPFT_EXE_2T not set" in note and "one HipFT thread" in note
    assert hipft_notes({"1t": "/x/hipft", "2t": "/y/hipft"}) == []


def test_quick_bench_writes_its_table(tmp_path, monkeypatch):
    """One short case, hpcml only (no HipFT build named): JSON and Markdown written."""
    from hpcml.testing import run_mpi

    monkeypatch.delenv("HIPFT_EXE", raising=False)
    monkeypatch.delenv("HIPFT_EXE_2T", raising=False)
    args = ["-m", "hpcml.cli", "bench", "flux", "--cases", "advect_gaussians_phi", "--configs", "1x1", "--end", "6",
            "--no-compile", "--suite", str(SUITE), "--out", str(tmp_path)]  # fmt: skip
    res = run_mpi(1, args, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rec = json.loads((tmp_path / "flux.json").read_text())
    row = rec["rows"][0]
    assert row["case"] == "advect_gaussians_phi" and row["hpcml_1x1_steps"] > 0 and row["hpcml_1x1_wall_s"] > 0
    md = (tmp_path / "flux.md").read_text()
    assert "HIPFT_EXE not set" in md
    triad = re.search(r"one-thread STREAM triad ([0-9.]+) GB/s, measured at the start of this run", md)
    assert triad and float(triad.group(1)) > 0  # the limit is measured in the run, not a stored figure


# -- the scaling model (hpcml bench flux --scaling) ---------------------------------------
def test_message_fit_recovers_a_line():
    """Two exchange sizes give the fixed cost and the bandwidth of ``t = h + bytes / b``."""
    from hpcml.bench.flux_scaling import fit_messages

    h, b = 30e-6, 4e9
    rec = {f"exchange_{n}": {"s": h + n / b, "bytes": n} for n in (12_288, 49_152, 98_304)}
    rec["allreduce_s"] = 1e-5  # other keys are ignored
    fit = fit_messages(rec)
    assert fit["h_s"] == pytest.approx(h, rel=1e-9)
    assert fit["b_Bps"] == pytest.approx(b, rel=1e-9)


def test_model_terms_follow_the_split_and_the_bandwidth_share():
    """Compute divides by P and is slowed by the node's share wherever more than one rank runs;
    a theta split exchanges 2 messages of a row, a 2 x 2 split 4 and adds the cap reductions along phi."""
    from hpcml.bench.flux_scaling import NP, NT, predict

    c, a, ar = 2e-7, 2e-6, 4e-6
    per = {"exchanges": 10.0, "caps": 5.0, "reductions": 4.0}
    comm = {"h_s": 1e-5, "b_Bps": 1e10}
    one = predict(1, c, per, comm, a, ar, share=1.3)
    assert one["step_s"] == one["compute_s"] == pytest.approx(c * NT * NP)
    two = predict(2, c, per, comm, a, ar, share=1.3)
    assert (two["pt"], two["pp"]) == (2, 1)
    assert two["compute_s"] == pytest.approx(c * NT * NP / 2 * 1.3)
    assert two["halo_s"] == pytest.approx(10 * (1e-5 + 2 * a + 2 * 3 * 8 * NP / 1e10))
    assert two["caps_s"] == 0.0
    assert two["reduce_s"] == pytest.approx(4 * ar)
    four = predict(4, c, per, comm, a, ar, share=1.3)
    assert (four["pt"], four["pp"]) == (2, 2)
    assert four["halo_s"] == pytest.approx(10 * (1e-5 + 4 * a + 2 * 3 * 8 * (NP / 2 + NT / 2) / 1e10))
    assert four["caps_s"] == pytest.approx(5 * (a * 1 + 8 * (NP / 2) * 1 / 1e10))
    parts = ("compute_s", "halo_s", "caps_s", "reduce_s")
    assert four["step_s"] == pytest.approx(sum(four[k] for k in parts))
    # an ensemble: one realization per 4 ranks, the reductions span every rank, rank 0 gathers the rows
    ens = predict(4, c, per, comm, a, ar, ensemble=16, share=1.3)
    assert ens["compute_s"] == four["compute_s"]
    assert ens["reduce_s"] == pytest.approx(4 * ar * 6 + 15 * a)


@pytest.mark.mpi(min_size=2)
@pytest.mark.timeout(300)
def test_triad_share_is_the_same_number_on_every_rank():
    """The node's bandwidth share: one value for all ranks, at least 1 (ranks running a triad together
    are never faster than one alone); small arrays keep the test short."""
    from mpi4py import MPI

    from hpcml.bench.flux_scaling import triad_share

    comm = MPI.COMM_WORLD
    s = triad_share(comm, n=1 << 16, repeat=3)
    assert s >= 1.0
    assert comm.allgather(s) == [s] * comm.Get_size()
