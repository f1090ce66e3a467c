"""``hpcml.bench.report``: how a benchmark sees the CPUs its ranks share, and says when they are too few."""

from __future__ import annotations

import json
import os

import pytest

from hpcml.bench.report import oversubscribed_note, usable_cpus
from hpcml.runtime import node_share
from hpcml.testing import run_mpi


def test_usable_cpus_is_the_affinity_mask():
    assert usable_cpus() == len(os.sched_getaffinity(0)) >= 1


@pytest.mark.parametrize(
    ("ranks", "cpus", "threads", "crowded"),
    [(1, 1, 1, False), (2, 2, 1, False), (3, 2, 1, True), (4, 2, 1, True), (2, 4, 2, False), (2, 4, 3, True)],
)
def test_oversubscribed_note(ranks, cpus, threads, crowded):
    note = oversubscribed_note(ranks, cpus, threads)
    assert (note is not None) == crowded
    if crowded:
        assert f"{ranks} ranks" in note and f"share {cpus} CPU(s)" in note
        assert ("thread(s) each" in note) == (threads > 1)


@pytest.mark.mpi
def test_node_share_counts_ranks_and_their_cpus():
    """One node: every rank of the world, the union of their masks; ranks pinned to one CPU share it."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    mask = os.sched_getaffinity(0)
    union = set().union(*comm.allgather(sorted(mask)))
    assert node_share(comm) == (comm.Get_size(), len(union))
    try:
        os.sched_setaffinity(0, {min(union)})
        ranks, cpus = node_share(comm)
    finally:
        os.sched_setaffinity(0, mask)
    assert (ranks, cpus) == (comm.Get_size(), 1)
    assert (oversubscribed_note(ranks, cpus) is None) == (comm.Get_size() == 1)


def test_bench_halo_says_when_ranks_share_a_cpu(tmp_path):
    """Two ranks pinned to one CPU: the report's meta and notes say the rows are oversubscribed."""
    code = (
        "import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from hpcml.cli import main; sys.exit(main())"
    )
    args = ["bench", "halo", "--fields", "32x24", "--halo", "1", "--repeat", "2", "--out", str(tmp_path)]
    res = run_mpi(2, ["-c", code, *args], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((tmp_path / "halo.json").read_text())["meta"]
    assert (meta["ranks_per_node"], meta["cpus_per_node"], meta["oversubscribed"]) == (2, 1, True)
    assert "oversubscribed: 2 ranks share 1 CPU(s)" in (tmp_path / "halo.md").read_text()


def test_bench_halo_times_started_exchanges_on_request(tmp_path):
    """``--started`` adds each method's ``start_exchange().wait()`` and its ratio to the hand-written exchange."""
    args = ["bench", "halo", "--fields", "20x18", "--halo", "1", "--splits", "fastest", "--methods", "auto", "pack"]
    args += ["--started", "--repeat", "3", "--out", str(tmp_path)]
    res = run_mpi(2, ["-m", "hpcml.cli", *args], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (row,) = json.loads((tmp_path / "halo.json").read_text())["rows"]
    assert row["correct"] is True
    for m in ("auto", "pack"):
        assert row[f"{m} started ms"] > 0
        assert row[f"{m} started / hand"] == row[f"{m} started ms"] / row["hand ms"]
    assert "`started`:" in (tmp_path / "halo.md").read_text()


def test_json_is_strict_with_unmeasured_values_as_null(tmp_path):
    import json

    import numpy as np

    from hpcml.bench.report import write_report

    rows = [{"kernel": "x", "rate": float("nan"), "peer": np.float64("inf"), "n": np.int64(3), "ok": 1.5}]
    jpath, mpath = write_report("strict", rows, ["kernel", "rate", "peer", "n", "ok"], tmp_path)

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    record = json.loads(jpath.read_text(), parse_constant=refuse)
    assert record["rows"][0] == {"kernel": "x", "rate": None, "peer": None, "n": 3, "ok": 1.5}
    assert mpath.is_file()
