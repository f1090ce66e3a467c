"""HDF5 output, checkpoints, XDMF and analysis."""
