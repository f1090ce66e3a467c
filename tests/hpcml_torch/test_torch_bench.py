"""Smoke test of ``hpcml bench train --torch`` (tiny field, one timed step)."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("torch")

from hpcml.bench import train as bench_train


@pytest.mark.mpi
def test_bench_train_torch_writes_rows(comm, shared_tmp):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    bench_train.add_arguments(parser)
    args = parser.parse_args(
        [
            "--torch",
            "--out",
            str(shared_tmp),
            "--shape",
            "8x8",
            "--batch",
            "4",
            "--width",
            "2",
            "--depth",
            "1",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--ranks",
            "1",
            "2",
            "4",
        ]
    )
    assert bench_train.run(args) == 0
    comm.Barrier()
    record = json.loads((shared_tmp / "train_torch.json").read_text())
    cases = {(r["case"], r["grid"]) for r in record["rows"]}
    assert {("pytorch", "1x1"), ("hpcml", "1x1")} <= cases
    if comm.size >= 2:
        assert {("spatial", "1x2"), ("data", "2x1")} <= cases
    if comm.size >= 4:
        assert ("2x2", "2x2") in cases
    assert record["meta"]["flops_per_step"] > 0
    for r in record["rows"]:
        assert r["samples_per_s"] > 0 and r["gflops"] > 0 and r["pct_peak"] > 0
