"""Choosing among equivalent kernel variants by timing them (private).

Some choices change only a kernel's speed, never its values, and no rule for them
held on every CPU measured here:

* 3-D tile heights: on the Zen 3 and Zen 5 hosts a 320^3 7-point sweep ran fastest
  untiled (the L3 serves the planes quickly), on the Intel Xeon host tiles of about
  30 rows (a sixth of its 2 MiB L2) ran 1.2-1.3x faster than untiled ones;
* non-temporal (streaming) stores of a sweep's output: 1.05-1.4x faster on the Xeon
  host, slower on the Zen 5 host;
* the software prefetch of a 3-D sweep's next row: needed on the Zen 5 host, 1.27x
  slower than none on a Zen 4 host.

So the first sweep of a given layout large enough to matter times every candidate
on the caller's own arrays (each candidate writes the same values, so the output is
right whichever ran last) and the later sweeps of that layout use the fastest, as
FFTW's planner does.  On a shared host a burst of another process's work during
that first timing can make a slower candidate look fastest for the rest of the run,
so the ``RECHECK_AT``-th sweep of the layout times every candidate once more and the
best time each candidate ever had decides again (once; the later sweeps run
untimed).  ``hpcml.settings.rc.kernel_tuning = False``
(``HPCML_KERNEL_TUNING=0``) skips the timing and runs the first candidate, the
choice made without measuring.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from hpcml.settings import rc

__all__ = ["CHOICES", "MIN_BYTES", "RECHECK_AT", "ROUNDS", "run_tuned"]

#: a sweep writing fewer bytes than this runs the first candidate untimed (its
#: time is too short to measure in one call, and the choices matter for large data)
MIN_BYTES = 8 << 20

#: times each candidate is run while tuning (interleaved; the best time counts)
ROUNDS = 3

#: the sweep of a layout (counting the first, timed one) at which every candidate is
#: timed once more, away from whatever disturbed the first call
RECHECK_AT = 16

#: the chosen candidate per layout key (inspect it to see what was picked)
CHOICES: dict[Hashable, Any] = {}

#: per layout key awaiting its recheck: [best time of each candidate, sweeps so far]
_PENDING: dict[Hashable, list[Any]] = {}


def run_tuned(key: Hashable, candidates: Sequence[Any], run: Callable[[Any], None], nbytes: int) -> Any:
    """Run ``run(c)`` with the candidate chosen for ``key``; return that candidate.

    ``candidates`` must all compute the same result; the first is the default.  On
    the first call for ``key`` with ``nbytes >= MIN_BYTES`` (and tuning on), every
    candidate runs ``ROUNDS`` times, interleaved, and the fastest is remembered; on
    the ``RECHECK_AT``-th call each runs once more and the fastest of all those
    times is kept for good.  Every other call runs the chosen candidate once.
    """
    if key in CHOICES:
        pending = _PENDING.get(key)
        if pending is not None:
            pending[1] += 1
            if pending[1] >= RECHECK_AT and len(pending[0]) == len(candidates):
                del _PENDING[key]
                return _time(key, candidates, run, pending[0], 1)
        choice = CHOICES[key]
        run(choice)
        return choice
    if len(candidates) == 1 or nbytes < MIN_BYTES or not rc.kernel_tuning:
        run(candidates[0])
        return candidates[0]
    best = [float("inf")] * len(candidates)
    _PENDING[key] = [best, 1]
    return _time(key, candidates, run, best, ROUNDS)


def _time(key: Hashable, candidates: Sequence[Any], run: Callable[[Any], None], best: list[float], rounds: int) -> Any:
    """Run every candidate ``rounds`` times, interleaved, lowering ``best``; record and return the fastest."""
    for _ in range(rounds):
        for n, c in enumerate(candidates):
            t0 = time.perf_counter()
            run(c)
            best[n] = min(best[n], time.perf_counter() - t0)
    choice = candidates[best.index(min(best))]
    CHOICES[key] = choice
    return choice
