#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by .ci/slurm_up.sh.
set -uo pipefail
scancel --user=root 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
pkill -x munged 2>/dev/null || true
exit 0
