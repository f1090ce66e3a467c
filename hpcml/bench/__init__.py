"""Benchmarks behind ``hpcml bench NAME``.

Each benchmark is a module in this package exposing

* ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
* ``run(args: argparse.Namespace) -> int`` (exit code),

and writes its results through :mod:`hpcml.bench.report` (JSON + Markdown table,
peak memory per rank next to every time).  Register new ones in ``BENCHMARKS``
with a one-line description: ``hpcml --help`` lists them without importing any
(only ``hpcml bench NAME`` imports ``NAME``'s module).
"""

from __future__ import annotations

from typing import NamedTuple


class Benchmark(NamedTuple):
    """Where a benchmark lives and what ``hpcml bench --help`` says of it."""

    module: str
    summary: str


BENCHMARKS: dict[str, Benchmark] = {
    "halo": Benchmark("hpcml.bench.halo", "halo-exchange time per method against the contiguous-send floor"),
    "kernels": Benchmark("hpcml.bench.kernels", "node-local kernels against STREAM/BLAS limits and library peers"),
    "io": Benchmark("hpcml.bench.io", "HDF5 output write/read GB/s per path and rank count, against h5py and numpy"),
    "flux": Benchmark("hpcml.bench.flux", "the HipFT validation cases timed on 1/2/4 ranks, and convergence"),
    "datatypes": Benchmark("hpcml.bench.datatypes", "strided faces: MPI datatype vs pack vs the contiguous floor"),
    "train": Benchmark("hpcml.bench.train", "surrogate CNN training throughput and scaling, against PyTorch"),
    "solvers": Benchmark(
        "hpcml.bench.solvers", "CG, multigrid, SpMV and SUMMA against SciPy, NumPy and PETSc (GAMG, MG)"
    ),
    "numpy": Benchmark(
        "hpcml.bench.numpy_protocol", "DistArray ufuncs, reductions, indexing, redistribution against NumPy and MPI"
    ),
}
