"""Node-local kernels against the machine's roofline and against their library peers.

First the machine is measured - STREAM copy and triad bandwidth with a Numba
kernel (Numba-CUDA on the GPU) and BLAS DGEMM GFLOP/s (cuBLAS on the GPU) -
then every kernel at sizes well outside the last-level cache.  Each row gives
the achieved GB/s (memory-bound kernels) or GFLOP/s (GEMM), the fraction of the
matching limit, and the speed ratio to the peer timed in the same run (two
rounds of back-to-back blocks, so that both see the same machine phases): NumPy for AXPY/DOT/GEMV/
stencils, scipy.sparse for SpMV, numpy.matmul for GEMM (CuPy, cuSPARSE and
cuBLAS on the GPU).  Writes ``kernels.json``, ``kernels.md`` and the roofline
plot ``kernels_roofline.png``.
"""

# BLAS-style names (A, B, C, K for the kernels package) read best here.
# ruff: noqa: N806, N812

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import cuda, njit, prange

from hpcml import kernels as K
from hpcml.bench.report import peak_rss_mib, write_report
from hpcml.kernels import _tuning, stencil

COLUMNS = [
    "kernel",
    "impl",
    "size",
    "ms",
    "rate",
    "unit",
    "of_limit",
    "peer",
    "peer_ms",
    "vs_peer",
    "target",
    "met",
    "peak_rss_mib",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``hpcml bench kernels``."""
    try:  # ``hpcml bench`` adds --out for every benchmark; a bare parser needs it here
        parser.add_argument("--out", default="bench-results", help="directory for kernels.json/.md/.png")
    except argparse.ArgumentError:
        pass
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="NumPy/Numba or CuPy/CUDA arrays")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="timed calls per kernel (default 10, quick 3)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these kernels (e.g. axpy spmv)")
    parser.add_argument("--no-plot", action="store_true", help="skip the roofline PNG")


# ---------------------------------------------------------------- helpers ---


@dataclasses.dataclass
class Case:
    """One benchmarked call and its peer."""

    kernel: str
    impl: str
    size: str
    flops: float  # per call
    nbytes: float  # compulsory memory traffic per call
    bound: str  # "memory" (rate in GB/s vs STREAM triad) or "compute" (GFLOP/s vs DGEMM)
    ours: Callable[[], Any]
    peer_name: str = ""
    peer: Callable[[], Any] | None = None
    targets: dict[str, float] = dataclasses.field(default_factory=dict)
    repeat: int | None = None


class Timer:
    """Wall time of a call, synchronising the GPU after it when there is one."""

    def __init__(self, device: str) -> None:
        self.sync: Callable[[], None] = lambda: None
        if device == "gpu":
            import cupy as cp

            self.sync = cp.cuda.Device().synchronize

    def once(self, fn: Callable[[], Any]) -> float:
        """Seconds for one call of ``fn`` (with its GPU work finished)."""
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def group(self, fns: list[Callable[[], Any] | None], repeat: int) -> list[float]:
        """Best time of each function over two rounds of back-to-back blocks.

        Blocks rather than strictly alternating calls: on a 2-core node the
        OpenMP (Numba) and OpenBLAS worker threads spin for a while after a
        parallel region and would steal the cores from the other library's
        next call.  Two rounds ``a.. b.. a.. b..`` still let all see the same
        machine phases.  A block starts with an untimed warm-up call
        (compilation, page faults, library plans, thread wake-up), except in
        the second round of a slow call.
        """
        best = [float("inf")] * len(fns)
        per_block = max(1, (repeat + 1) // 2)
        for rnd in range(2):
            for n, fn in enumerate(fns):
                if fn is None:
                    continue
                if rnd == 0 or best[n] < 0.2:
                    fn()
                best[n] = min([best[n], *(self.once(fn) for _ in range(per_block))])
        return [b if b != float("inf") else float("nan") for b in best]

    def pair(self, a: Callable[[], Any], b: Callable[[], Any] | None, repeat: int) -> tuple[float, float]:
        """Best times of ``a`` and ``b`` (see :meth:`group`)."""
        ta, tb = self.group([a, b], repeat)
        return ta, tb


@njit(parallel=True, cache=True)
def _stream_copy(a, c):  # pragma: no cover - compiled
    for i in prange(a.shape[0]):
        c[i] = a[i]


@njit(parallel=True, cache=True)
def _stream_triad(a, b, c, s):  # pragma: no cover - compiled
    for i in prange(a.shape[0]):
        a[i] = b[i] + s * c[i]


def _gpu_stream_kernels() -> tuple[Any, Any]:
    @cuda.jit
    def copy_k(a, c):  # pragma: no cover - device code
        i = cuda.grid(1)
        if i < a.shape[0]:
            c[i] = a[i]

    @cuda.jit
    def triad_k(a, b, c, s):  # pragma: no cover - device code
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = b[i] + s * c[i]

    return copy_k, triad_k


def stream_kernels(xp: Any, n: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """STREAM copy and triad calls on ``n`` doubles (Numba loop, Numba-CUDA on the GPU)."""
    a = xp.zeros(n)
    b = xp.full(n, 1.5)
    c = xp.full(n, 0.5)
    if xp is np:
        return (lambda: _stream_copy(b, c)), (lambda: _stream_triad(a, b, c, 3.0))
    from hpcml.kernels._common import grid_1d, launch

    ck, tk = _gpu_stream_kernels()
    blocks = grid_1d(n, 256)
    return (lambda: launch(ck, blocks, 256, "gpu", b, c)), (lambda: launch(tk, blocks, 256, "gpu", a, b, c, 3.0))


def measure_limits(xp: Any, timer: Timer, stream: Any, n: int, ngemm: int, repeat: int) -> dict[str, float]:
    """STREAM copy/triad GB/s (Numba or Numba-CUDA loop) and DGEMM GFLOP/s (BLAS)."""
    t_copy, t_triad = timer.pair(*stream, repeat)
    A = xp.asarray(np.random.default_rng(0).standard_normal((ngemm, ngemm)))
    B = A.T.copy()
    C = xp.empty_like(A)
    t_gemm, _ = timer.pair(lambda: xp.matmul(A, B, out=C), None, max(2, repeat // 3))
    return {
        "stream_copy_GBs": 16 * n / t_copy / 1e9,
        "stream_triad_GBs": 24 * n / t_triad / 1e9,
        "dgemm_GFLOPs": 2 * ngemm**3 / t_gemm / 1e9,
        "stream_n": n,
        "dgemm_n": ngemm,
    }


def poisson2d(n: int) -> Any:
    """5-point Laplacian on an n x n grid (Dirichlet eliminated) as scipy CSR with int32 indices."""
    import scipy.sparse as sps

    T = sps.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr", dtype=np.float64)
    eye = sps.identity(n, format="csr", dtype=np.float64)
    A = (sps.kron(eye, T) + sps.kron(T, eye)).tocsr()
    A.indices = A.indices.astype(np.int32)
    A.indptr = A.indptr.astype(np.int32)
    return A


def _lap_numpy(u: Any, out: Any) -> None:
    # the obvious NumPy version (temporaries for every shifted sum), the peer
    inner = tuple(slice(1, -1) for _ in u.shape)
    acc = -2.0 * u.ndim * u[inner]
    for d in range(u.ndim):
        lo = tuple(slice(0, -2) if e == d else slice(1, -1) for e in range(u.ndim))
        hi = tuple(slice(2, None) if e == d else slice(1, -1) for e in range(u.ndim))
        acc += u[lo] + u[hi]
    out[inner] = acc


def _jacobi_numpy(u: Any, f: Any, out: Any) -> None:
    inner = tuple(slice(1, -1) for _ in u.shape)
    acc = f[inner].copy()
    for d in range(u.ndim):
        lo = tuple(slice(0, -2) if e == d else slice(1, -1) for e in range(u.ndim))
        hi = tuple(slice(2, None) if e == d else slice(1, -1) for e in range(u.ndim))
        acc += u[lo] + u[hi]
    out[inner] = acc * (1.0 / (2.0 * u.ndim))


def _lap9_numpy(u: Any, out: Any) -> None:
    c = u[1:-1, 1:-1]
    edges = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]
    corners = u[:-2, :-2] + u[:-2, 2:] + u[2:, :-2] + u[2:, 2:]
    out[1:-1, 1:-1] = (4.0 * edges + corners - 20.0 * c) * (1.0 / 6.0)


# ------------------------------------------------------------------ cases ---

MEM = {"of_limit": 0.8}


def build_cases(xp: Any, device: str, quick: bool) -> list[Callable[[], list[Case]]]:
    """Factories of cases, one per kernel family; each allocates its own arrays when called."""
    rng = np.random.default_rng(1)
    gpu = device == "gpu"
    peer_lib = "CuPy" if gpu else "NumPy"

    def arr(*shape: int) -> Any:
        return xp.asarray(rng.standard_normal(shape))

    def blas1() -> list[Case]:
        n = 2**20 if quick else 2**26
        x, y = arr(n), arr(n)
        a = 1.0001
        size = f"n=2^{n.bit_length() - 1}"
        impls = ["numba"] if not gpu else ["library", "numba"]
        out = []
        for m in impls:
            tag = {"numba": "numba-cuda" if gpu else "numba", "library": "cupy"}[m]
            out += [
                Case("axpy", tag, size, 2 * n, 24 * n, "memory", lambda m=m: K.axpy(a, x, y, method=m),
                     f"{peer_lib} y += a*x", lambda: y.__iadd__(a * x), {**MEM, "vs_peer": 1.5}),
                Case("dot", tag, size, 2 * n, 16 * n, "memory", lambda m=m: K.dot(x, y, method=m),
                     f"{peer_lib} dot", lambda: xp.dot(x, y), MEM),
                Case("nrm2", tag, size, 2 * n, 8 * n, "memory", lambda m=m: K.nrm2(x, method=m),
                     f"{peer_lib} linalg.norm", lambda: xp.linalg.norm(x)),
            ]  # fmt: skip
        return out

    def gemv() -> list[Case]:
        n = 1024 if quick else 8192
        A, x, y = arr(n, n), arr(n), arr(n)
        out = []
        for m in ["numba"] if not gpu else ["library", "numba"]:
            tag = {"numba": "numba-cuda" if gpu else "numba", "library": "cuBLAS"}[m]
            for trans in (False, True):
                out.append(
                    Case("gemv" + ("^T" if trans else ""), tag, f"{n}x{n}", 2 * n * n, 8 * n * n + 24 * n, "memory",
                         lambda m=m, t=trans: K.gemv(A, x, y, trans=t, method=m),
                         f"{peer_lib} A{'.T' if trans else ''} @ x",
                         lambda t=trans: xp.matmul(A.T if t else A, x, out=y))
                )  # fmt: skip
        return out

    def gemm() -> list[Case]:
        n = 512 if quick else (8192 if gpu else 4096)
        A, B = arr(n, n), arr(n, n)
        C = xp.empty((n, n))
        bias = arr(n)
        flops, nbytes = 2.0 * n**3, 8.0 * 3 * n * n
        peer = "cuBLAS matmul" if gpu else "numpy.matmul"
        rep = 2  # one timed call per block and round: each call takes seconds
        return [
            Case("gemm", "auto (BLAS)", f"{n}^3", flops, nbytes, "compute", lambda: K.gemm(A, B, C),
                 peer, lambda: xp.matmul(A, B, out=C), {"vs_peer": 0.95}, rep),
            Case("gemm", "tiled", f"{n}^3", flops, nbytes, "compute", lambda: K.gemm(A, B, C, method="tiled"),
                 peer, lambda: xp.matmul(A, B, out=C), {"of_limit": 0.5}, rep),
            Case("gemm+bias+relu", "auto (BLAS)", f"{n}^3", flops, nbytes, "compute",
                 lambda: K.gemm(A, B, C, bias=bias, activation="relu"),
                 f"{peer_lib} max(A@B+b, 0)", lambda: xp.maximum(xp.matmul(A, B) + bias, 0, out=C), {}, rep),
            Case("gemm+bias+relu", "tiled", f"{n}^3", flops, nbytes, "compute",
                 lambda: K.gemm(A, B, C, method="tiled", bias=bias, activation="relu"),
                 f"{peer_lib} max(A@B+b, 0)", lambda: xp.maximum(xp.matmul(A, B) + bias, 0, out=C), {}, rep),
        ]  # fmt: skip

    def spmv() -> list[Case]:
        g = 256 if quick else 3000  # issue #16's size: 45 M nonzeros, int32 indices
        A = poisson2d(g)
        N = A.shape[0]
        nbytes = A.nnz * (8 + 4) + (N + 1) * 4 + 8 * N + 8 * N
        S = K.sell_from_csr(A, C=32 if gpu else 8, sigma=256 if gpu else 64)
        if gpu:
            import cupyx.scipy.sparse as cps

            A = cps.csr_matrix(A)
            S = S.to_device()
        x, y = arr(N), xp.empty(N)
        size = f"5-pt {g}^2, nnz={A.nnz / 1e6:.1f}M"
        sell_bytes = S.val.shape[0] * 12 + 8 * N + 8 * N + S.perm.shape[0] * 16
        peer_name, peer = ("cuSPARSE (cupyx)" if gpu else "scipy.sparse A@x"), (lambda: A @ x)
        # issue #16: >= 1.0x SciPy's one thread with one Numba thread, >= 1.6x with two or more
        vs_peer = 1.0 if gpu or numba.get_num_threads() == 1 else 1.6
        out = [Case("spmv", "csr " + ("numba-cuda" if gpu else "numba"), size, 2 * A.nnz, nbytes, "memory",
                    lambda: K.spmv(A, x, y, method="csr"), peer_name, peer, {**MEM, "vs_peer": vs_peer}),
               Case("spmv", f"sell-{S.C}-{S.sigma}", size, 2 * A.nnz, sell_bytes, "memory",
                    lambda: K.spmv(S, x, y), peer_name, peer, {})]  # fmt: skip
        if gpu:
            out.insert(0, Case("spmv", "auto (cuSPARSE)", size, 2 * A.nnz, nbytes, "memory",
                               lambda: K.spmv(A, x, y), peer_name, peer, {"vs_peer": 0.95}))  # fmt: skip
        return out

    def stencils() -> list[Case]:
        n2 = 512 if quick else (16384 if gpu else 8192)
        n3 = 64 if quick else (512 if gpu else 320)
        out = []
        for nd, n in ((2, n2), (3, n3)):
            shape = (n + 2,) * nd
            u, f, o = arr(*shape), arr(*shape), xp.zeros(shape)
            cells = n**nd
            size = "x".join([str(n)] * nd) + " (+ghosts)"
            tag = "numba-cuda" if gpu else "numba"
            target = {**MEM, "vs_peer": 1.5}
            out.append(Case(f"laplacian {2 * nd + 1}-pt", tag, size, (3 * nd + 1) * cells, 16 * cells, "memory",
                            lambda u=u, o=o: K.laplacian(u, o, 1.0), peer_lib,
                            lambda u=u, o=o: _lap_numpy(u, o), target))  # fmt: skip
            if nd == 2:
                out.append(Case("laplacian 9-pt", tag, size, 12 * cells, 16 * cells, "memory",
                                lambda u=u, o=o: K.laplacian(u, o, 1.0, points=9), peer_lib,
                                lambda u=u, o=o: _lap9_numpy(u, o), target))  # fmt: skip
            out.append(Case(f"jacobi {nd}-D", tag, size, (2 * nd + 1) * cells, 24 * cells, "memory",
                            lambda u=u, f=f, o=o: K.jacobi_step(u, f, o, 1.0), peer_lib,
                            lambda u=u, f=f, o=o: _jacobi_numpy(u, f, o), target))  # fmt: skip
        return out

    return [blas1, gemv, spmv, stencils, gemm]


# -------------------------------------------------------------------- run ---


def run_case(
    case: Case, timer: Timer, limits: dict[str, float], repeat: int, triad: Callable[[], Any]
) -> dict[str, Any]:
    """Time one case against its peer and fill a report row.

    A memory-bound case is timed together with the STREAM triad, so its
    fraction of the limit compares two numbers from the same machine phase
    (other jobs on a shared node move both).  A compute-bound case uses the
    DGEMM rate from the start of the run, or the peer's rate when the peer is
    the BLAS GEMM itself and was faster.
    """
    tuned_before = set(_tuning.CHOICES)
    if case.bound == "memory":
        t, tp, tt = timer.group([case.ours, case.peer, triad], case.repeat or repeat)
        rate, unit = case.nbytes / t / 1e9, "GB/s"
        limit = 24 * limits["stream_n"] / tt / 1e9
    else:
        t, tp = timer.pair(case.ours, case.peer, case.repeat or repeat)
        rate, unit = case.flops / t / 1e9, "GFLOP/s"
        limit = limits["dgemm_GFLOPs"]
        if case.peer_name.endswith("matmul"):
            limit = max(limit, case.flops / tp / 1e9)
    # the variants the stencils' first calls chose by timing (kernels._tuning)
    tuned = [stencil.describe_variant(k, c) for k, c in _tuning.CHOICES.items() if k not in tuned_before]
    row: dict[str, Any] = {
        "kernel": case.kernel,
        "impl": case.impl + (f" ({'; '.join(tuned)})" if tuned else ""),
        "size": case.size,
        "ms": 1e3 * t,
        "rate": rate,
        "unit": unit,
        "of_limit": rate / limit,
        "peer": case.peer_name or None,
        "peer_ms": 1e3 * tp if case.peer else None,
        "vs_peer": tp / t if case.peer else None,
        "gflops": case.flops / t / 1e9,
        "intensity": case.flops / case.nbytes,
        "peer_gflops": case.flops / tp / 1e9 if case.peer else None,
        "limit": limit,
        "peak_rss_mib": peak_rss_mib(),
    }
    goals, met = [], []
    for key, goal in case.targets.items():
        label = "of limit" if key == "of_limit" else "x peer"
        goals.append(f">= {goal:g} {label}" if key == "vs_peer" else f">= {goal:.0%} {label}")
        met.append(row[key] is not None and row[key] >= goal)
    row["target"] = "; ".join(goals) or None
    row["met"] = ("yes" if all(met) else "NO") if met else None
    return row


def roofline_plot(rows: list[dict[str, Any]], limits: dict[str, float], path: Path, device: str) -> Path | None:
    """Log-log roofline: min(peak, intensity * bandwidth), ours (filled) and peers (open)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    bw, peak = limits["stream_triad_GBs"], limits["dgemm_GFLOPs"]
    ai = np.logspace(-2, 3, 200)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.loglog(ai, np.minimum(peak, ai * bw), "k-", lw=2, label=f"roof: triad {bw:.1f} GB/s, DGEMM {peak:.0f} GFLOP/s")
    markers = "osD^v<>ph*X"
    for n, r in enumerate(rows):
        mk = markers[n % len(markers)]
        lab = f"{r['kernel']} [{r['impl']}]"
        (pt,) = ax.loglog(r["intensity"], r["gflops"], mk, ms=8, label=lab)
        if r.get("peer_gflops"):
            ax.loglog(r["intensity"], r["peer_gflops"], mk, ms=8, mfc="none", color=pt.get_color())
    ax.set_xlabel("arithmetic intensity (flop / compulsory byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"hpcml kernels on {device} (filled: hpcml, open: peer)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    """Run the benchmark on this process (rank 0 only under MPI) and write the report."""
    try:
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() != 0:
            return 0  # node-local kernels: one process measures, the others idle
    except ImportError:  # pragma: no cover - mpi4py is a dependency
        pass
    xp: Any = np
    if args.device == "gpu":
        import cupy as cp

        xp = cp
    timer = Timer(args.device)
    load_before = os.getloadavg()[0]
    repeat = args.repeat or (3 if args.quick else 10)
    n_stream = 2**20 if args.quick else (2**28 if args.device == "gpu" else 2**26)
    n_gemm = 512 if args.quick else (8192 if args.device == "gpu" else 4096)
    stream = stream_kernels(xp, n_stream)
    limits = measure_limits(xp, timer, stream, n_stream, n_gemm, repeat)
    rows: list[dict[str, Any]] = []
    for factory in build_cases(xp, args.device, args.quick):
        for case in factory():
            if args.only and case.kernel.split()[0].split("+")[0].rstrip("^T") not in args.only:
                continue
            rows.append(run_case(case, timer, limits, repeat, stream[1]))
        gc.collect()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = None if args.no_plot else roofline_plot(rows, limits, out / "kernels_roofline.png", args.device)
    meta = {
        "device": args.device,
        "quick": bool(args.quick),
        "repeat": repeat,
        "numba_threads": numba.get_num_threads(),
        "blas_threads_env": {
            k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        },
        "limits": limits,
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "roofline_png": str(png) if png else None,
    }
    notes = [
        f"Machine limits measured first: STREAM copy {limits['stream_copy_GBs']:.1f} GB/s, "
        f"triad {limits['stream_triad_GBs']:.1f} GB/s (n = {limits['stream_n']:,}), "
        f"DGEMM {limits['dgemm_GFLOPs']:.1f} GFLOP/s (n = {limits['dgemm_n']}); "
        f"{numba.get_num_threads()} Numba thread(s); 1-min load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after (other work on the node inflates times).",
        "rate: GB/s of compulsory traffic (each array read or written once; write-allocate not counted) "
        "for memory-bound kernels, GFLOP/s for GEMM. of_limit: rate / STREAM triad timed in the same "
        "rounds as the kernel (JSON: limit), or / DGEMM (the larger of the start-of-run value and the "
        "numpy.matmul peer of the row).",
        "ms and peer_ms: best of the repeats (two rounds of hpcml and peer blocks); vs_peer = peer_ms / ms.",
        "peak_rss_mib: the process's peak resident memory so far (monotone over the rows).",
    ]
    if png:
        notes.append(f"Roofline plot: {png.name}")
    jpath, mpath = write_report("kernels", rows, COLUMNS, out, meta=meta, notes=notes, title="hpcml bench kernels")
    print(mpath.read_text())
    print(f"wrote {jpath}, {mpath}" + (f", {png}" if png else ""))
    return 0
