#!/usr/bin/env bash
# Every GPU check in one short call on a lent GPU machine: installs CuPy if missing,
# runs the CuPy / Numba-CUDA kernel tests in tests/gpu, the gpu-marked pack and halo
# tests and the Numba-CUDA device-array halo tests (halo on 2 ranks), then `hpcml bench kernels --device gpu` and
# `hpcml bench datatypes --device gpu`.
#
#   bash tests/gpu/run_device_checks.sh            # results in ${OUT:-gpu-results}
#
# Needs a Python with hpcml, CuPy (cupy-cuda12x) and a Numba CUDA target that
# finds NVVM (numba-cuda[cu12] or a CUDA toolkit); PY overrides the interpreter.
# Exit status: that of the tests (the benchmark's is reported but not fatal).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
if ! "$PY" -c "import cupy" 2>/dev/null; then
    "$PY" -m pip install -q cupy-cuda12x 'numba-cuda[cu12]' 2>&1 | tail -3
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/device.txt" || true
"$PY" - <<'PYEOF' 2>&1 | tee -a "$OUT/device.txt"
import cupy, numba
from numba import cuda
print("cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount())
print("numba", numba.__version__, "cuda target", getattr(cuda, "implementation", "?"), "available", cuda.is_available())
PYEOF

timeout 420 "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 | tee "$OUT/pytest-gpu.txt"
rc=${PIPESTATUS[0]}
timeout 300 "$PY" -m pytest -q -p no:cacheprovider -rs -m gpu tests/test_pack_device.py 2>&1 | tee "$OUT/pytest-pack.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
MPIEXEC=${MPIEXEC:-$(dirname "$PY")/mpiexec}
timeout 300 "$MPIEXEC" -n 2 "$PY" -m pytest -q -p no:cacheprovider --with-mpi -m "mpi and gpu" -rs \
    tests/test_halo_exchange.py 2>&1 | tee "$OUT/pytest-halo.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
# staged/device halos of real Numba-CUDA device arrays (the same tests CI runs in the simulator)
timeout 300 "$MPIEXEC" -n 2 "$PY" -m pytest -q -p no:cacheprovider --with-mpi -m "mpi and numba_cuda" -rs \
    tests/test_halo_device_sim.py 2>&1 | tee "$OUT/pytest-halo-numba.txt"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1

timeout 240 "$PY" -c "import sys; from hpcml.cli import main; sys.exit(main())" \
    bench kernels --device gpu --repeat 6 --out "$OUT" 2>&1 | tail -40 | tee "$OUT/bench.txt"
echo "bench exit status ${PIPESTATUS[0]}; tests exit status $rc"
timeout 200 "$MPIEXEC" -n 2 "$PY" -c "import sys; from hpcml.cli import main; sys.exit(main())" \
    bench datatypes --device gpu --repeat 10 --out "$OUT" 2>&1 | tail -20 | tee "$OUT/bench-datatypes.txt"
exit "$rc"
