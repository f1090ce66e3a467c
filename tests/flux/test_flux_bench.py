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
