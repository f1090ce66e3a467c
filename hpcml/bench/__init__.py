"""Benchmarks behind ``hpcml bench NAME``.

Each benchmark is a module in this package exposing

* ``add_arguments(parser: argparse.ArgumentParser) -> None`` and
* ``run(args: argparse.Namespace) -> int`` (exit code),

and writes its results through :mod:`hpcml.bench.report` (JSON + Markdown table,
peak memory per rank next to every time).  Register new ones in ``BENCHMARKS``.
"""

from __future__ import annotations

BENCHMARKS: dict[str, str] = {
    "halo": "hpcml.bench.halo",
    "kernels": "hpcml.bench.kernels",
    "io": "hpcml.bench.io",
    "flux": "hpcml.bench.flux",
    "datatypes": "hpcml.bench.datatypes",
    "train": "hpcml.bench.train",
    "solvers": "hpcml.bench.solvers",
}
