#!/usr/bin/env bash
# Run one MPI rank's command so that only rank 0 reports: pytest under `mpiexec -n N` would
# otherwise print its header, the MPI banner and the summary N times.  Other ranks write to
# a private log that is printed (prefixed with the rank) only if that rank's command fails.
#   mpiexec -n 4 tests/rank0_output.sh python -m pytest --with-mpi -m mpi tests
set -u
rank=${PMI_RANK:-${PMIX_RANK:-${OMPI_COMM_WORLD_RANK:-0}}}
if [ "$rank" = 0 ]; then
    exec "$@"
fi
log=$(mktemp "${TMPDIR:-/tmp}/hpcml-rank$rank.XXXXXX")
"$@" >"$log" 2>&1
rc=$?
if [ "$rc" -ne 0 ]; then
    sed "s/^/[rank $rank] /" "$log" >&2
fi
rm -f "$log"
exit "$rc"
