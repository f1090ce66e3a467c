"""examples/train_surrogate_torch.py: its loss curve equals the single-process torch run, across a resume.

Serial test that launches the example: the plain-torch reference (one process, nn.Conv2d and
nn.MaxPool2d on the whole field), then hpcml.torch on 2 ranks (2 replicas) stopped after 2 steps
with a checkpoint, resumed on 4 ranks as 2 replicas x 2 tiles.  The loss series (printed and in
the output file) equal the reference to 1e-12.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from hpcml.testing import run_mpi

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "train_surrogate_torch.py")
COMMON = [
    "--shape",
    "16",
    "16",
    "--samples",
    "8",
    "--batch",
    "4",
    "--epochs",
    "2",
    "--width",
    "4",
    "--depth",
    "1",
    "--json",
]


def _run(n, args, cwd):
    proc = run_mpi(n, [EXAMPLE, *COMMON, *args], timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_example_loss_curve_equals_single_process_torch(tmp_path):
    from hpcml.io import read_scalar

    ref = _run(1, ["--reference", "--output", "ref.h5"], tmp_path)
    assert ref["steps"] == 4 and ref["grid"] == [1, 1]
    ck = ["--checkpoint-dir", "ck", "--output", "run.h5"]
    first = _run(2, ["--data-parallel", "2", "--max-steps", "2", *ck], tmp_path)
    assert first["stopped_early"] and first["steps"] == 2
    rest = _run(4, ["--data-parallel", "2", "--resume", *ck], tmp_path)
    assert rest["grid"] == [2, 2] and rest["steps"] == 4
    np.testing.assert_allclose(rest["loss"], ref["loss"], rtol=1e-12)
    steps, _, values = read_scalar(tmp_path / "run.h5", "loss")
    assert list(steps) == [1, 2, 3, 4]
    np.testing.assert_allclose(values, ref["loss"], rtol=1e-12)
