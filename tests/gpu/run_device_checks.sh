#!/usr/bin/env bash
# Every GPU check of hpcml.kernels in one short call on a lent GPU machine:
# the CuPy / Numba-CUDA tests in tests/gpu, then `hpcml bench kernels --device gpu`.
#
#   bash tests/gpu/run_device_checks.sh            # results in ${OUT:-gpu-results}
#
# Needs a Python with hpcml, CuPy (cupy-cuda12x) and a Numba CUDA target that
# finds NVVM (numba-cuda[cu12] or a CUDA toolkit); PY overrides the interpreter.
# Exit status: that of the tests (the benchmark's is reported but not fatal).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$OUT/device.txt" || true
"$PY" - <<'PYEOF' 2>&1 | tee -a "$OUT/device.txt"
import cupy, numba
from numba import cuda
print("cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount())
print("numba", numba.__version__, "cuda target", getattr(cuda, "implementation", "?"), "available", cuda.is_available())
PYEOF

timeout 420 "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 | tee "$OUT/pytest-gpu.txt"
rc=${PIPESTATUS[0]}

timeout 240 "$PY" -c "import sys; from hpcml.cli import main; sys.exit(main())" \
    bench kernels --device gpu --repeat 6 --out "$OUT" 2>&1 | tail -40 | tee "$OUT/bench.txt"
echo "bench exit status ${PIPESTATUS[0]}; tests exit status $rc"
exit "$rc"
