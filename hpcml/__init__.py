"""hpcml: Cartesian domain decomposition, halo exchange and node-local kernels over MPI.

>>> import hpcml
>>> from hpcml import CartDecomp, DistArray
>>> hpcml.init()
>>> d = CartDecomp((512, 1024), periodic=(False, True), halo=1)
>>> u = DistArray.zeros(d)
>>> u.exchange_halos()
"""

from hpcml._version import __version__
from hpcml.datatypes import StridedBlock
from hpcml.decomp import CartDecomp
from hpcml.distarray import DistArray
from hpcml.halo import HaloExchange
from hpcml.runtime import abort_on_error, init

__all__ = [
    "CartDecomp",
    "DistArray",
    "HaloExchange",
    "StridedBlock",
    "__version__",
    "abort_on_error",
    "init",
]
