#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels the lent GPU machine lacks into .whl/
# (git-ignored): nothing can be fetched there.  Its image has Python 3.12, CuPy, Numba-CUDA,
# mpi4py, h5py, SciPy, pytest, pytest-timeout and hypothesis, but no MPI library (the pip
# `mpich` wheel), no pytest-mpi and no f90nml.  mpi4py travels too, so the version matches
# the one tested here.  NumPy travels too: the image's NumPy 2.5 removed `np.row_stack`, which
# its numba-cuda still imports when it compiles a kernel (every Numba-CUDA test failed on a real
# H200 with it); 2.4.6 is the NumPy CI tests with.  Then run the checks in one device call that carries .whl:
#
#   bash tests/gpu/fetch_wheels.sh                 # here, once (about 15 MB)
#   device run, carry [".whl"]:  bash tests/gpu/run_device_checks.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PYVER=${PYVER:-3.12}
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux_2_5_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${platforms[@]}" -d .whl mpich==5.0.2 mpi4py==4.1.2 pytest-mpi==0.6 f90nml==1.5.0 numpy==2.4.6
ls -l .whl
