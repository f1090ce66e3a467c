"""``hpcml.jit``: one compile per node for cached kernels, compile time counted once and kept apart."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from hpcml.jit import PARALLEL_MIN_SIZE

KERNELS = textwrap.dedent(
    """
    import json, sys, time
    from numba import njit
    from hpcml import jit

    jit.install()

    @njit
    def inner(x):
        return x + 1.0

    @njit(cache=True)
    def outer(x):
        return inner(x) * 2.0

    t0, w0 = time.perf_counter(), jit.work_clock()
    value = outer(1.0)
    wall, work = time.perf_counter() - t0, jit.work_clock() - w0
    print(json.dumps({"value": value, "wall": wall, "work": work, "compile": jit.compile_seconds(),
                      "compiles": jit._STATE["compiles"]}))
    """
)


def _run(tmp_path, cache, timeout: float = 300) -> dict:
    script = tmp_path / "kernels_under_test.py"
    script.write_text(KERNELS)
    # TMPDIR: the node's compile lock lives in the test's folder, where a test can hold it
    env = {"NUMBA_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, str(script)], check=False, capture_output=True, text=True, env=env, timeout=timeout
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_compile_then_load_from_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _run(tmp_path, cache)
    assert first["value"] == 4.0 and first["compiles"] == 1
    # nested compiles (the uncached callee inside the cached caller) are counted once:
    # compile time never exceeds the wall time, and the work clock stood still meanwhile
    assert 0 < first["compile"] <= first["wall"] + 1e-6
    assert first["work"] == pytest.approx(first["wall"] - first["compile"], abs=0.05)
    second = _run(tmp_path, cache)
    assert second["value"] == 4.0 and second["compiles"] == 0, "the second process loads the cached kernel"


def test_cached_kernels_load_without_the_lock(tmp_path):
    """With the code in the cache, a rank loads it while another process holds the node's lock."""
    import fcntl
    import os

    cache = tmp_path / "cache"
    assert _run(tmp_path, cache)["compiles"] == 1
    lock = tmp_path / f"hpcml-numba-compile-{os.getuid()}.lock"
    assert lock.exists(), "the first run compiled under the lock in TMPDIR"
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # another rank compiling something else for minutes
        try:
            second = _run(tmp_path, cache, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("loading a cached kernel waited for the compile lock")
    assert second["value"] == 4.0 and second["compiles"] == 0


def test_compile_lock_is_reentrant(tmp_path, monkeypatch):
    from hpcml import jit

    monkeypatch.setattr(jit, "_lock_path", lambda: tmp_path / "lock")
    with jit.compile_lock():
        with jit.compile_lock():  # a kernel compiled while compiling its caller
            pass
    assert (tmp_path / "lock").exists()


PRANGE = textwrap.dedent(
    """
    import json
    import numba
    import numpy as np
    from numba import prange
    from hpcml.jit import kernel

    @kernel(error_model="numpy")
    def total(x):
        s = 0.0
        for i in prange(x.shape[0]):
            s += x[i]
        return s

    numba.set_num_threads(int(__import__("sys").argv[1]))
    x = np.arange(float(__import__("sys").argv[2]))
    print(json.dumps({"sum": total(x), "variants": sorted(str(k) for k in total._variants)}))
    """
)


@pytest.mark.parametrize(
    "threads, size, variant",
    [(1, 1000, "False"), (2, 1000, "True"), (1, PARALLEL_MIN_SIZE, "True"), (1, PARALLEL_MIN_SIZE - 1, "False")],
)
def test_kernel_compiles_only_the_variant_it_runs(tmp_path, threads, size, variant):
    """Serial on one thread for small arrays; parallel with more threads or a big first argument."""
    script = tmp_path / "prange_kernel.py"
    script.write_text(PRANGE)
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, str(script), str(threads), str(size)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["sum"] == size * (size - 1) / 2
    assert out["variants"] == [variant]
    # the two variants are cached under different names
    names = {p.name.split("-")[0] for p in (tmp_path / "cache").rglob("*.nbi")}
    assert any(n.endswith("total__serial") for n in names) == (variant == "False"), names
