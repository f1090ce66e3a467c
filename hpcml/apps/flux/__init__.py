"""Surface flux transport on the sphere (HipFT numerics) for ensembles of realizations."""

from hpcml.apps.flux.namelist import config_from_hipft

__all__ = ["config_from_hipft"]
