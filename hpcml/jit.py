"""Numba compilation for MPI jobs: compile once per node, keep compile time apart.

Numba compiles a kernel the first time it is called with a new signature and, with
``cache=True``, stores the machine code next to the source (``__pycache__``) for later
runs.  Started cold, every rank of a job compiles the same kernels at the same moment:
4 ranks on 2 cores do the work 4 times over and race each other writing the cache.

:func:`install` (called by :func:`hpcml.init`) serialises the compilation of cached
kernels between the processes of a node with a file lock in the node's temporary
folder.  The first rank to reach a kernel compiles it and writes the cache; the
others wait for the lock, then *load* the cached code (Numba looks in its cache first),
which takes milliseconds.  A kernel already in the cache when a rank reaches it is
loaded without the lock, by every rank at once.  Kernels without ``cache=True`` are
left alone (serialising them would only add waiting).  Only the signatures a run actually calls are compiled:
nothing is compiled eagerly.

:func:`compile_seconds` is the wall time this process spent compiling (or waiting to
load what another rank compiled); :func:`work_clock` is ``perf_counter()`` minus it, so
phase timers built on it report compute time alone, and the apps report compile time
on its own line.

:func:`kernel` is ``numba.njit(parallel=True, ...)`` for kernels called from Python,
compiled only in the variant a run uses: with one Numba thread per rank (the usual MPI
layout, and what ``hpcml.init`` sets when ranks fill the cores) the serial variant,
which compiles about three times faster than the ``parallel=True`` one and runs the same
loops without the parallel runtime; with several threads the parallel one.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FunctionType
from typing import Any

__all__ = ["Kernel", "compile_lock", "compile_seconds", "install", "installed", "kernel", "work_clock"]

log = logging.getLogger("hpcml")

_STATE: dict[str, Any] = {"installed": False, "seconds": 0.0, "announced": False, "compiles": 0}
_LOCAL = threading.local()


def _lock_path() -> Path:
    """One lock file per user and node (the temporary folder is node-local on clusters)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"hpcml-numba-compile-{uid}.lock"


@contextlib.contextmanager
def compile_lock() -> Iterator[None]:
    """Hold the node's compile lock (re-entrant within a process: nested kernels compile inside)."""
    depth = getattr(_LOCAL, "lock_depth", 0)
    _LOCAL.lock_depth = depth + 1
    try:
        if depth:
            yield
            return
        with open(_lock_path(), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        _LOCAL.lock_depth = depth


@contextlib.contextmanager
def _timed(name: str, sig: Any) -> Iterator[bool]:
    """Count the outermost compile's wall time (lock wait included) once; yields whether it is outermost."""
    depth = getattr(_LOCAL, "time_depth", 0)
    _LOCAL.time_depth = depth + 1
    t0 = time.perf_counter()
    try:
        yield depth == 0
    finally:
        _LOCAL.time_depth = depth
        if depth == 0:
            spent = time.perf_counter() - t0
            _STATE["seconds"] += spent
            log.debug("jit: %s%s in %.2f s", name, sig, spent)


def _announce() -> None:
    """Say once, on the job's first rank, why the first run takes longer."""
    if _STATE["announced"]:
        return
    _STATE["announced"] = True
    from hpcml.runtime import launch_rank

    if launch_rank() == 0:
        log.info("compiling kernels (first run on this machine only; later runs load them from Numba's cache)")


def _cached(dispatcher: Any) -> bool:
    from numba.core.caching import NullCache

    return not isinstance(getattr(dispatcher, "_cache", None), NullCache)


def _in_cache(dispatcher: Any, sig: Any) -> bool:
    """Whether Numba's on-disk cache holds ``sig`` for this kernel (index lookup, no code loaded)."""
    try:
        index = dispatcher._cache._cache_file._load_index()
        key = dispatcher._cache._index_key(sig, dispatcher.targetctx.codegen())
        return key in index
    except Exception:  # an internal Numba layout we do not know: assume a compile
        return False


def install() -> None:
    """Route the compilation of every cached Numba CPU kernel through the node's lock (idempotent).

    Patches ``numba.core.dispatcher.Dispatcher.compile``, the one method every CPU
    dispatcher compiles a new signature through; its behaviour is unchanged apart from
    the lock and the bookkeeping of :func:`compile_seconds`.
    """
    if _STATE["installed"]:
        return
    from numba.core.dispatcher import Dispatcher

    original: Callable[..., Any] = Dispatcher.compile

    def compile(self: Any, sig: Any) -> Any:
        with _timed(getattr(self, "__name__", str(self)), sig):
            if not _cached(self):
                return original(self, sig)  # nothing to share: serialising would only add waiting
            if getattr(_LOCAL, "lock_depth", 0) == 0 and _in_cache(self, sig):
                # A load, not a compile: every rank may load at once instead of one after
                # another.  Numba replaces each cache file atomically, and an index entry
                # whose data file is not written yet makes it compile instead (the rare
                # race with a writer costs a compile, never a torn read).
                return original(self, sig)
            with compile_lock():
                # Numba itself loads from the cache first; this peek only decides whether to say so.
                if getattr(_LOCAL, "lock_depth", 0) == 1 and not _in_cache(self, sig):
                    _announce()
                    _STATE["compiles"] += 1
                return original(self, sig)

    compile.__doc__ = original.__doc__
    Dispatcher.compile = compile  # type: ignore[method-assign]
    _STATE["installed"] = True


def installed() -> bool:
    """Whether :func:`install` has patched Numba in this process."""
    return bool(_STATE["installed"])


def compile_seconds() -> float:
    """Wall seconds this process spent compiling kernels, or waiting to load another rank's."""
    return float(_STATE["seconds"])


def work_clock() -> float:
    """``time.perf_counter()`` minus :func:`compile_seconds`: a clock that stops while kernels compile."""
    return time.perf_counter() - _STATE["seconds"]


#: With one Numba thread, a kernel whose first argument holds at least this many elements
#: still runs its parallel variant.  Numba compiles a ``prange`` body as a function of its
#: own whose array arguments it marks ``noalias`` when it finds no aliasing, and that code is
#: faster on one thread too.  Measured on the Zen 5 VM, HipFT 1cr and soccer arrays, same
#: bits: ``advect_stage`` 1.52 -> 1.43 ms, ``diff_sts_stages`` 0.70 -> 0.66 ms (soccer
#: 4.26 -> 3.67 ms), ``diff_stage`` 0.20 -> 0.18 ms, the others equal; whole runs alternating
#: in one process: diffuse_advect_soccer on 2 ranks x 1 thread 3.00-3.13 -> 2.79-2.92 s, the
#: 1cr case and diffuse_dipole on 1 rank unchanged (within 5 %).  Below the threshold
#: the serial variant is kept: a parallel launch costs about 1.2 us more (0.3 vs 1.5 us for a
#: one-element call), and it compiles in about a third of the time.
PARALLEL_MIN_SIZE = 1 << 15


class Kernel:
    """A Numba kernel with a serial and a parallel variant, each compiled only when first used.

    Calling it runs the parallel variant when Numba runs more than one thread in this
    process (``numba.get_num_threads()``) or when the first argument is an array of at
    least :data:`PARALLEL_MIN_SIZE` elements, else the serial one (``prange`` loops become
    plain loops).  Both variants are cached on disk separately (the serial one under the
    function's name with a ``__serial`` suffix, so the two never share a cache entry).
    Call it from Python; inside other Numba code call ``.serial`` or ``.parallel``.
    """

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self._options = {k: v for k, v in options.items() if k != "parallel"}
        self._variants: dict[bool, Any] = {}

    def _variant(self, parallel: bool) -> Any:
        found = self._variants.get(parallel)
        if found is None:
            from numba import njit

            fn = self.py_func
            if not parallel:
                # A twin function under another name: Numba's cache keys on the name, not the flags.
                name = fn.__name__ + "__serial"
                fn = FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
                fn.__qualname__ = self.py_func.__qualname__ + "__serial"
                fn.__module__ = self.py_func.__module__
                fn.__doc__ = self.py_func.__doc__
            found = self._variants[parallel] = njit(parallel=parallel, **self._options)(fn)
        return found

    @property
    def serial(self) -> Any:
        """The ``parallel=False`` dispatcher."""
        return self._variant(False)

    @property
    def parallel(self) -> Any:
        """The ``parallel=True`` dispatcher."""
        return self._variant(True)

    def __call__(self, *args: Any) -> Any:
        """Run the variant that fits this process's Numba thread count and the work's size."""
        from numba import get_num_threads

        big = bool(args) and getattr(args[0], "size", 0) >= PARALLEL_MIN_SIZE
        return self._variant(big or get_num_threads() > 1)(*args)

    @property
    def signatures(self) -> list[Any]:
        """Signatures compiled so far, over both variants."""
        return [s for v in self._variants.values() for s in v.signatures]


def kernel(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorator: a :class:`Kernel` (``numba.njit`` options; ``cache=True`` by default).

    ``@kernel`` or ``@kernel(error_model="numpy", fastmath=True)``.
    """
    options.setdefault("cache", True)
    if fn is None:
        return lambda f: Kernel(f, options)
    return Kernel(fn, options)
