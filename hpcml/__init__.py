"""hpcml: Cartesian domain decomposition, halo exchange and node-local kernels over MPI.

>>> import hpcml
>>> from hpcml import CartDecomp, DistArray
>>> hpcml.init()
>>> d = CartDecomp((512, 1024), periodic=(False, True), halo=1)
>>> u = DistArray.zeros(d)
>>> u.exchange_halos()

``import hpcml`` does not initialise MPI (nor compile or import Numba): the public
names below load their modules on first use, so login-node commands (``hpcml
--help``, ``jobscript``, serial ``analyze``) never call ``MPI_Init``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hpcml._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from hpcml.datatypes import StridedBlock
    from hpcml.decomp import CartDecomp
    from hpcml.distarray import DistArray
    from hpcml.halo import HaloExchange
    from hpcml.runtime import abort_on_error, init

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "CartDecomp": "hpcml.decomp",
    "DistArray": "hpcml.distarray",
    "HaloExchange": "hpcml.halo",
    "StridedBlock": "hpcml.datatypes",
    "abort_on_error": "hpcml.runtime",
    "init": "hpcml.runtime",
}

__all__ = [
    "CartDecomp",
    "DistArray",
    "HaloExchange",
    "StridedBlock",
    "__version__",
    "abort_on_error",
    "init",
]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcml' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
