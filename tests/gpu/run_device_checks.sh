#!/usr/bin/env bash
# Every GPU check in one short call on a lent GPU machine:
#   1. installs what the machine lacks, offline: the wheels in .whl/ (tests/gpu/fetch_wheels.sh
#      downloads them beforehand; the call carries .whl) and hpcml itself (editable, no deps);
#   2. runs the CuPy / Numba-CUDA kernel tests in tests/gpu, the gpu-marked pack tests, and on
#      2 ranks the CuPy halo tests, the Numba-CUDA device-array halo tests, the DistArray
#      NumPy-protocol tests on CuPy arrays and hpcml.torch on CUDA tensors (DLPack views,
#      in-place exchange, one DDP training step);
#   3. runs `hpcml bench kernels --device gpu` and `hpcml bench datatypes --device gpu`;
#   4. the flux app on the GPU: its GPU path against its CPU path on reduced HipFT cases (2 ranks,
#      CuPy fields), the seven HipFT validation cases in full against HipFT's references
#      (`hpcml bench flux --validate --device gpu`), and `hpcml bench flux --device gpu --quick`.
#
#   5. the CPU halo exchange on the machine's own cores (16, so 2-4 ranks each get one):
#      `hpcml bench halo` on 2, 3 and 4 ranks, one core per rank (issue #16's targets, which the
#      2-core development hosts can only measure on 2 ranks).
#
#   PART=core, PART=flux or PART=halo runs only steps 1-3, step 4 or step 5 (one 600 s call each,
#   if one call cannot hold everything); the default PART=all runs everything.
#
#   bash tests/gpu/run_device_checks.sh            # results in ${OUT:-gpu-results}
#
# The whole script keeps to BUDGET seconds (default 540, inside the device tool's 600 s per
# call): each step is cut at its own cap or at what is left, whichever is less.
# PY overrides the interpreter (default .venv/bin/python, else python3).
# Exit status: that of the tests (the benchmarks' are reported but not fatal).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-gpu-results}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
deadline=$((SECONDS + BUDGET))

# cap N: N seconds, or what is left before the deadline (10 s kept for the report), at least 1
cap() {
    local left=$((deadline - SECONDS - 10))
    if [ "$left" -lt "$1" ]; then echo $((left > 1 ? left : 1)); else echo "$1"; fi
}

if ! "$PY" -c "import hpcml.kernels, mpi4py.MPI, pytest_mpi, f90nml, numpy; assert hasattr(numpy, 'row_stack')" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade .whl/*.whl 2>&1 | tail -3
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -3
fi
BIN=$("$PY" -c "import os, sys; print(os.path.dirname(sys.executable))")
MPIEXEC=${MPIEXEC:-$BIN/mpiexec}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/device.txt" || true
"$PY" - <<'PYEOF' 2>&1 | tee -a "$OUT/device.txt"
import cupy, numba, mpi4py
from mpi4py import MPI
from numba import cuda
print("cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount())
print("numba", numba.__version__, "cuda available", cuda.is_available())
print("mpi4py", mpi4py.__version__, MPI.Get_library_version().splitlines()[0])
PYEOF

PYTEST=("$PY" -m pytest -q -p no:cacheprovider -rs)
HPCML=("$PY" -c "import sys; from hpcml.cli import main; sys.exit(main())")
rc=0
PART=${PART:-all}
if [ "$PART" = all ] || [ "$PART" = core ]; then
timeout "$(cap 150)" "${PYTEST[@]}" tests/gpu 2>&1 | tee "$OUT/pytest-gpu.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
timeout "$(cap 60)" "${PYTEST[@]}" -m gpu tests/test_datatypes_device.py 2>&1 | tee "$OUT/pytest-pack.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
# CuPy halos (staged; device too if the MPI is CUDA-aware), then real Numba-CUDA device arrays
# through the same tests CI runs in the CUDA simulator.
timeout "$(cap 90)" "$MPIEXEC" -n 2 "${PYTEST[@]}" --with-mpi -m "mpi and gpu" tests/test_halo.py \
    2>&1 | tee "$OUT/pytest-halo.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
timeout "$(cap 90)" "$MPIEXEC" -n 2 "${PYTEST[@]}" --with-mpi -m "mpi and numba_cuda" tests/test_halo_strategies_device.py \
    2>&1 | tee "$OUT/pytest-halo-numba.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
# DistArray's NumPy protocol, global indexing and redistribution on CuPy interiors
timeout "$(cap 60)" "$MPIEXEC" -n 2 "${PYTEST[@]}" --with-mpi -m "mpi and gpu" tests/test_distarray_numpy.py \
    2>&1 | tee "$OUT/pytest-distarray-numpy.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
# hpcml.torch on CUDA tensors: DLPack views, the 2-rank in-place exchange, one DDP training step
# (torch and CuPy are preinstalled on the GPU machine; the test skips cleanly where torch is absent).
timeout "$(cap 90)" "$MPIEXEC" -n 2 "${PYTEST[@]}" --with-mpi -m "mpi and gpu" tests/gpu/test_torch_gpu.py \
    2>&1 | tee "$OUT/pytest-torch.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1

timeout "$(cap 120)" "${HPCML[@]}" bench kernels --device gpu --repeat 6 --out "$OUT" 2>&1 | tail -40 \
    | tee "$OUT/bench.txt"
echo "bench kernels exit status ${PIPESTATUS[0]}"
timeout "$(cap 90)" "$MPIEXEC" -n 2 "${HPCML[@]}" bench datatypes --device gpu --repeat 10 --out "$OUT" 2>&1 \
    | tail -20 | tee "$OUT/bench-datatypes.txt"
echo "bench datatypes exit status ${PIPESTATUS[0]}"
fi

if [ "$PART" = all ] || [ "$PART" = flux ]; then
# flux: GPU path = CPU path (1e-10) on reduced cases, 2 ranks (the pole rows split along phi too)
timeout "$(cap 150)" "$MPIEXEC" -n 2 "${PYTEST[@]}" --with-mpi -m "mpi and numba_cuda" tests/flux/test_flux_gpu.py \
    2>&1 | tee "$OUT/pytest-flux-gpu.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
# the seven HipFT cases in full on the GPU against HipFT's reference histories (flux-validation.md)
timeout "$(cap 240)" "${HPCML[@]}" bench flux --validate --device gpu --out "$OUT" 2>&1 | tail -12 \
    | tee "$OUT/flux-validate.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
# timings and the diffusion phase's bytes/s against the device's memory bandwidth (flux.md)
timeout "$(cap 150)" "${HPCML[@]}" bench flux --device gpu --quick --configs 1x1 --no-compile --out "$OUT" 2>&1 \
    | tail -12 | tee "$OUT/bench-flux.txt"
echo "bench flux exit status ${PIPESTATUS[0]}"
fi
if [ "$PART" = all ] || [ "$PART" = halo ]; then
# one core per rank; the JSON's meta records ranks_per_node and cpus_per_node
for n in 2 3 4; do
    NUMBA_NUM_THREADS=1 timeout "$(cap 60)" "$MPIEXEC" -bind-to core -n "$n" "${HPCML[@]}" bench halo \
        --out "$OUT/halo-$n" 2>&1 | grep -E '^\||oversubscribed|skipped' | tee "$OUT/bench-halo-$n.txt"
    echo "bench halo -n $n exit status ${PIPESTATUS[0]}"
done
fi
echo "tests exit status $rc; ${SECONDS} s"
exit "$rc"
