"""Former home of the PyTorch bridge, now an alias of :mod:`hpcml.torch`.

``hpcml.nn`` stays free of torch: it is the dependency-free NumPy reference that
the torch modules are tested against.  The bridge that lived here
(``HaloConv2d`` over host copies) is replaced by :mod:`hpcml.torch`, whose
modules exchange halos in place through DLPack on CPU and CUDA tensors; import
from there.
"""

from __future__ import annotations

from hpcml.torch import *  # noqa: F403 - the alias re-exports the package
from hpcml.torch import __all__  # noqa: F401
