#!/bin/bash
# hpcml on a laptop or workstation without a scheduler.
# Usage:  jobscripts/mpirun_local.sh [NRANKS] [CONFIG.toml] [extra hpcml run args...]
# EDIT: MPIEXEC to use another MPI (mpiexec.mpich, or a cluster module's mpirun).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
MPIEXEC="${MPIEXEC:-$here/.venv/bin/mpiexec}"
HPCML="${HPCML:-$here/.venv/bin/hpcml}"
NRANKS="${1:-4}"
CONFIG="${2:-}"
shift $(( $# > 2 ? 2 : $# ))

cores="$(nproc)"
threads=$(( cores / NRANKS > 0 ? cores / NRANKS : 1 ))
export NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-$threads}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

log="hpcml-$(date +%Y%m%d-%H%M%S).log"
echo "running $NRANKS ranks x $NUMBA_NUM_THREADS thread(s) on $cores cores; log: $log"
"$MPIEXEC" -n "$NRANKS" "$HPCML" run ${CONFIG:+"$CONFIG"} "$@" 2>&1 | tee "$log"
