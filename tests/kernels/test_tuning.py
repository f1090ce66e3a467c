"""Tuned stencil variants: streaming stores and 3-D tile heights write the same bits; the tuner's choice."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hpcml.kernels import _tuning, stencil
from hpcml.kernels.stencil import jacobi_step, laplacian
from hypothesis import given, settings
from hypothesis import strategies as st
from kernels_helpers import DTYPES

from hpcml.settings import rc


@settings(deadline=None, max_examples=60)
@given(
    rows=st.integers(1, 7),
    cols=st.integers(1, 90),
    offset=st.integers(0, 17),
    dtype=DTYPES,
    name=st.sampled_from(["lap5", "lap9", "jac2"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_streaming_stores_write_the_same_bits(rows, cols, offset, dtype, name, seed):
    """Every row alignment and length: head, streamed 64-byte lines and tail give the plain sweep's bits."""
    rng = np.random.default_rng(seed)
    # a view starting `offset` elements into a wider array moves each row's 64-byte alignment
    u = rng.standard_normal((rows + 2, cols + 2 + offset)).astype(dtype)[:, offset:]
    f = rng.standard_normal(u.shape).astype(dtype)
    plain = np.full((rows + 2, cols + 2 + offset), 7.0, dtype)[:, offset:]
    streamed = np.full((rows + 2, cols + 2 + offset), 7.0, dtype)[:, offset:]
    bounds = (1, rows + 1, 1, cols + 1)
    coefs = tuple(dtype(c) for c in (0.7, 1.3, -4.1))
    for out, stream in ((plain, False), (streamed, True)):
        if name == "jac2":
            stencil._jac2_cpu(u, f, out, *bounds, *coefs, stream)
        else:
            getattr(stencil, f"_{name}_cpu")(u, out, *bounds, *coefs, stream)
    assert np.array_equal(plain, streamed)
    assert np.all(streamed[0] == 7.0) and np.all(streamed[-1] == 7.0)
    assert np.all(streamed[:, 0] == 7.0) and np.all(streamed[:, -1] == 7.0)


@settings(deadline=None, max_examples=40)
@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 9), st.integers(1, 70)),
    offset=st.integers(0, 17),
    dtype=DTYPES,
    jacobi=st.booleans(),
    tiles=st.sampled_from([(4, 1), (2, 3), (100, 1)]),
    seed=st.integers(0, 2**31 - 1),
)
def test_streaming_stores_write_the_same_bits_3d(shape, offset, dtype, jacobi, tiles, seed):
    """The 3-D sweeps' rows, streamed or not, in tiles and i-chunks, with or without the prefetch: the same bits."""
    rng = np.random.default_rng(seed)
    full = tuple(s + 2 for s in shape)
    u = rng.standard_normal(full).astype(dtype)
    f = rng.standard_normal(full).astype(dtype)
    # flat storage starting `offset` elements into a longer buffer moves the rows' alignment
    outs = []
    for stream, pf in ((False, True), (True, True), (False, False), (True, False)):
        buf = np.full(int(np.prod(full)) + offset, 7.0, dtype)
        out = buf[offset:].reshape(full)
        bounds = (1, shape[0] + 1, 1, shape[1] + 1, 1, shape[2] + 1)
        if jacobi:
            coefs = tuple(dtype(c) for c in (0.7, 1.3, 0.4, 0.2))
            stencil._jac3_cpu(u, f, out, *bounds, *coefs, *tiles, stream, pf)
        else:
            coefs = tuple(dtype(c) for c in (0.7, 1.3, 0.4, -4.8))
            stencil._lap7_cpu(u, out, *bounds, *coefs, *tiles, stream, pf)
        outs.append(out)
    for other in outs[1:]:
        assert np.array_equal(outs[0], other)
    mask = np.ones(full, bool)
    mask[1:-1, 1:-1, 1:-1] = False
    assert all(np.all(o[mask] == 7.0) for o in outs)


def test_streaming_stores_skip_misaligned_or_strided_rows():
    """Doubles at an odd byte offset, or rows with a step, are written with plain stores: same values, nothing else."""
    rng = np.random.default_rng(2)
    u = rng.standard_normal((6, 70))
    raw = np.zeros(u.nbytes + 64, np.uint8)
    out = np.frombuffer(raw.data, dtype=np.float64, count=u.size, offset=3).reshape(u.shape)
    assert not out.flags.aligned
    ref = np.zeros_like(u)
    stencil._lap5_cpu(u, ref, 1, 5, 1, 69, 1.0, 1.0, -4.0, False)
    stencil._lap5_cpu(u, out, 1, 5, 1, 69, 1.0, 1.0, -4.0, True)
    assert np.array_equal(out, ref)
    # every other column of a wider array: rows with a step of two elements
    wide = np.full((6, 140), 7.0)
    stencil._lap5_cpu(u, wide[:, ::2], 1, 5, 1, 69, 1.0, 1.0, -4.0, True)
    inner = (slice(1, 5), slice(1, 69))
    assert np.array_equal(wide[:, ::2][inner], ref[inner]) and np.all(wide[:, 1::2] == 7.0)
    stencil._lap9_cpu(u, wide[:, ::2], 1, 5, 1, 69, 1.0, 1.0, -4.0, True)
    stencil._lap9_cpu(u, ref, 1, 5, 1, 69, 1.0, 1.0, -4.0, False)
    assert np.array_equal(wide[:, ::2][inner], ref[inner]) and np.all(wide[:, 1::2] == 7.0)


def test_run_tuned_keeps_the_fastest_candidate(monkeypatch):
    """Large sweeps time every candidate (interleaved) and reuse the winner; small ones run the first."""
    monkeypatch.setattr(_tuning, "CHOICES", {})
    monkeypatch.setattr(_tuning, "_PENDING", {})
    calls: list[str] = []

    def run(c: str) -> None:
        calls.append(c)
        time.sleep({"slow": 0.03, "fast": 0.0, "slower": 0.06}[c])

    cands = ["slow", "fast", "slower"]
    assert _tuning.run_tuned("k", cands, run, nbytes=_tuning.MIN_BYTES) == "fast"
    assert calls == cands * _tuning.ROUNDS
    calls.clear()
    assert _tuning.run_tuned("k", cands, run, nbytes=0) == "fast"  # remembered, whatever the size
    assert calls == ["fast"]
    calls.clear()
    assert _tuning.run_tuned("small", cands, run, nbytes=_tuning.MIN_BYTES - 1) == "slow"
    assert calls == ["slow"] and "small" not in _tuning.CHOICES
    monkeypatch.setattr(rc, "kernel_tuning", False)
    calls.clear()
    assert _tuning.run_tuned("off", cands, run, nbytes=1 << 40) == "slow"
    assert calls == ["slow"] and "off" not in _tuning.CHOICES


def test_run_tuned_rechecks_a_choice_once(monkeypatch):
    """A burst during the first timing picks the wrong candidate; the RECHECK_AT-th call corrects it, once."""
    monkeypatch.setattr(_tuning, "CHOICES", {})
    monkeypatch.setattr(_tuning, "_PENDING", {})
    monkeypatch.setattr(_tuning, "RECHECK_AT", 4)
    delay = {"slow": 0.02, "fast": 0.05}  # another process slows "fast" down during the first timing
    calls: list[str] = []

    def run(c: str) -> None:
        calls.append(c)
        time.sleep(delay[c])

    cands = ["slow", "fast"]
    assert _tuning.run_tuned("k", cands, run, nbytes=_tuning.MIN_BYTES) == "slow"
    assert calls == cands * _tuning.ROUNDS
    delay["fast"] = 0.0  # the burst is over
    for _ in range(2):  # calls 2 and 3 run the choice only
        calls.clear()
        assert _tuning.run_tuned("k", cands, run, nbytes=_tuning.MIN_BYTES) == "slow"
        assert calls == ["slow"]
    calls.clear()  # call 4: one more interleaved round; the best time each ever had decides
    assert _tuning.run_tuned("k", cands, run, nbytes=_tuning.MIN_BYTES) == "fast"
    assert calls == cands and _tuning.CHOICES["k"] == "fast" and "k" not in _tuning._PENDING
    delay["fast"] = 0.05  # never timed again: the choice stays
    for _ in range(2 * _tuning.RECHECK_AT):
        calls.clear()
        assert _tuning.run_tuned("k", cands, run, nbytes=_tuning.MIN_BYTES) == "fast"
        assert calls == ["fast"]
    # a candidate that was truly faster at the first timing keeps its record: the recheck cannot
    # replace it by a slower one that merely had a good moment later
    monkeypatch.setattr(_tuning, "CHOICES", {})
    delay.update(slow=0.03, fast=0.0)
    assert _tuning.run_tuned("j", cands, run, nbytes=_tuning.MIN_BYTES) == "fast"
    delay.update(slow=0.01, fast=0.02)
    for _ in range(_tuning.RECHECK_AT - 1):
        assert _tuning.run_tuned("j", cands, run, nbytes=_tuning.MIN_BYTES) == "fast"
    assert _tuning.CHOICES["j"] == "fast" and "j" not in _tuning._PENDING


@pytest.mark.parametrize("step", [1, 2])
@pytest.mark.parametrize("shape", [(41, 203), (14, 23, 37)])
def test_tuned_sweeps_match_untuned(monkeypatch, shape, step):
    """With every sweep tuned, the chosen variant is recorded and the cells equal the untuned sweep's.

    ``step`` 2 hands every array in as every other element of a wider one along the last axis.
    """
    monkeypatch.setattr(_tuning, "CHOICES", {})
    monkeypatch.setattr(stencil, "L2_BYTES", 24 << 10)  # small enough to give the 3-D case several blockings
    rng = np.random.default_rng(5)
    wide = (*shape[:-1], shape[-1] * step)

    def arr(fill=None):
        a = rng.standard_normal(wide) if fill is None else np.full(wide, fill)
        return a[..., ::step]

    u, f = arr(), arr()
    monkeypatch.setattr(rc, "kernel_tuning", False)
    ref_lap, ref_jac = laplacian(u, arr(0.0), 0.5), jacobi_step(u, f, arr(0.0), 0.5)
    monkeypatch.setattr(rc, "kernel_tuning", True)
    monkeypatch.setattr(_tuning, "MIN_BYTES", 0)
    for _ in range(2):  # the tuning call, then a call with the remembered choice
        assert np.array_equal(laplacian(u, arr(0.0), 0.5), ref_lap)
        assert np.array_equal(jacobi_step(u, f, arr(0.0), 0.5), ref_jac)
    if len(shape) == 3:  # 3-D sweeps run on contiguous copies: always tuned
        assert {k[0] for k in _tuning.CHOICES} == {"lap7", "jac3"}
    elif step == 1:
        assert {k[0] for k in _tuning.CHOICES} == {"lap5", "jac2"}
    else:  # 2-D rows with a step never stream: one candidate, nothing timed or recorded
        assert not _tuning.CHOICES
    box = stencil.region_boxes(shape, 1, "all")[0]
    for key, choice in _tuning.CHOICES.items():
        arrays = 1 if key[0].startswith("lap") else 2
        expected = [(False,), (True,)] if len(shape) == 2 else stencil._tile_candidates(box, 8, arrays)
        assert choice in expected
    if len(shape) == 3:
        assert len(stencil._tile_candidates(box, 8, 1)) > 1


def test_tile_candidates_start_with_the_default_budget():
    """The first 3-D candidate is CACHE_BUDGET's blocking with plain stores and the prefetch (what runs
    untuned); every store kind with and without the prefetch; no duplicates."""
    box = ((1, 1, 1), (321, 321, 321))
    cands = stencil._tile_candidates(box, 8, 1)
    assert cands[0] == (*stencil._tiles_3d(box, 8, 1), False, True)
    assert len(set(cands)) == len(cands)
    assert {c[2:] for c in cands} == {(False, True), (True, True), (False, False), (True, False)}
    key = ("lap7", None, None, "<f8", box, 2)
    assert stencil.describe_variant(key, (32, 1, True, True)) == "32-row tiles, streaming stores"
    assert stencil.describe_variant(key, (320, 2, False, False)) == "untiled x 2 i-chunks, plain stores, no prefetch"


def test_bench_kernels_names_the_chosen_variant(tmp_path, monkeypatch):
    """`hpcml bench kernels --quick` on the stencils: every row met-or-not, and tuned rows say which variant ran."""
    import argparse
    import json

    from hpcml.bench import kernels as bench

    monkeypatch.setattr(_tuning, "CHOICES", {})
    monkeypatch.setattr(_tuning, "MIN_BYTES", 0)  # quick sizes are small: tune them anyway
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--only", "laplacian", "jacobi", "--no-plot", "--out", str(tmp_path)])
    assert bench.run(args) == 0
    rows = json.loads((tmp_path / "kernels.json").read_text())["rows"]
    stencils = {"laplacian 5-pt", "laplacian 9-pt", "jacobi 2-D", "laplacian 7-pt", "jacobi 3-D"}
    assert {r["kernel"] for r in rows} == stencils
    for r in rows:
        assert r["impl"].startswith("numba (") and "stores" in r["impl"], r["impl"]
        assert r["met"] in ("yes", "NO") and r["vs_peer"] > 0
