"""Smoke test of ``hpcml bench train`` (tiny field, one timed step)."""

from __future__ import annotations

import argparse
import json

import pytest

from hpcml.bench import train as bench_train
from hpcml.runtime import node_share


@pytest.mark.mpi
def test_bench_train_writes_rows(comm, shared_tmp):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    bench_train.add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(shared_tmp),
            "--shape",
            "12x10",
            "--batch",
            "4",
            "--channels",
            "3",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--ranks",
            "1",
            "2",
            "--no-torch",
        ]
    )
    assert bench_train.run(args) == 0
    comm.Barrier()
    rows = json.loads((shared_tmp / "train.json").read_text())["rows"]
    cases = {(r["case"], r["conv"], r["ranks"]) for r in rows}
    assert {("single", "im2col", 1), ("single", "direct", 1)} <= cases
    if comm.size >= 2:
        assert {("spatial", "im2col", 2), ("data", "im2col", 2)} <= cases
    assert all(r["samples_per_s"] > 0 for r in rows)
    ranks, cpus = node_share(comm)  # the largest case, 2 ranks (or 1), with 1 thread each
    crowded = min(2, ranks) * args.threads > cpus
    assert ("oversubscribed" in (shared_tmp / "train.md").read_text()) == crowded
