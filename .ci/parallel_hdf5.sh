#!/usr/bin/env bash
# Parallel-HDF5 CI leg: a second venv built against Debian's MPICH and
# libhdf5-mpich-dev, so that h5py has MPI (driver="mpio") and hpcml.io takes the
# collective shared-file path.  The I/O tests then run with mpiexec.mpich on
# 1..4 ranks.  Idempotent: apt packages are installed only when missing, and the
# two source builds (mpi4py, h5py: the slow part, ~5-8 min on 2 cores) are kept
# as wheels under $HPCML_WHEEL_CACHE, keyed by Python, MPICH and HDF5 versions.
#
# `--build-only` stops once the venv is ready (packages, the two builds, hpcml): CI runs
# that slow part in the background while the main suites run, and the tests later.
#
# Environment knobs:
#   HPCML_WHEEL_CACHE   wheel cache dir      (default ~/.cache/hpcml-wheels)
#   HPCML_PHDF5_VENV    venv to create       (default .venv-phdf5)
#   HPCML_PHDF5_PYTHON  interpreter          (default /usr/bin/python3: Debian's, with headers)
#   RANKS               rank counts          (default "1 2 3 4")
#   MPI_TIMEOUT         seconds per pytest run (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_ONLY=0
case "${1:-}" in
  --build-only) BUILD_ONLY=1 ;;
  "") ;;
  *)
    echo "usage: $0 [--build-only]" >&2
    exit 2
    ;;
esac

VENV=${HPCML_PHDF5_VENV:-.venv-phdf5}
CACHE=${HPCML_WHEEL_CACHE:-$HOME/.cache/hpcml-wheels}
PYTHON=${HPCML_PHDF5_PYTHON:-/usr/bin/python3}
RANKS=${RANKS:-1 2 3 4}
MPI_TIMEOUT=${MPI_TIMEOUT:-600}
HDF5_INCLUDEDIR=/usr/include/hdf5/mpich
HDF5_LIBDIR=/usr/lib/x86_64-linux-gnu/hdf5/mpich
export DEBIAN_FRONTEND=noninteractive
export NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
t_start=$SECONDS
log() { printf '== [parallel_hdf5 %4ds] %s\n' "$((SECONDS - t_start))" "$*"; }

# -- 1. system packages (only when missing) ------------------------------------------
APT_PKGS=(mpich libmpich-dev libhdf5-mpich-dev python3-dev python3-venv pkg-config)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v mpicc.mpich >/dev/null || ! command -v mpiexec.mpich >/dev/null; then
  echo "mpicc.mpich / mpiexec.mpich not found after installing mpich" >&2
  exit 1
fi
[[ -f $HDF5_INCLUDEDIR/H5FDmpio.h ]] || {
  echo "parallel HDF5 headers not found in $HDF5_INCLUDEDIR" >&2
  exit 1
}

# -- 2. venv ------------------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY=$VENV/bin/python
PIP=("$PY" -m pip)
pyver=$("$PY" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')
mpichver=$(dpkg-query -W -f='${Version}' libmpich-dev)
hdf5ver=$(dpkg-query -W -f='${Version}' libhdf5-mpich-dev)
KEY="$pyver-mpich_${mpichver}-hdf5_${hdf5ver}"
WHEELS=$CACHE/${KEY//[^A-Za-z0-9._-]/_}
mkdir -p "$WHEELS"
log "wheel cache $WHEELS"

# Build helpers and numpy first: h5py builds without isolation against them.  -U and
# the floor matter: the venv starts with Debian's setuptools 66, too old for h5py's
# pyproject (SPDX license string needs setuptools >= 77).
"${PIP[@]}" install -q -U cython pkgconfig numpy 'setuptools>=77' wheel

# -- 3. mpi4py from source, against Debian's MPICH -----------------------------------------
# --no-cache-dir: pip's own wheel cache is keyed by the sdist, not by CC/HDF5_MPI,
# and would happily hand back a wheel built against another MPI or a serial HDF5.
if ! compgen -G "$WHEELS/mpi4py-*.whl" >/dev/null; then
  log "building mpi4py (CC=MPICC=mpicc.mpich)"
  # MPICC too: mpi4py otherwise takes `mpicc` from PATH, which the Debian
  # alternatives may point at Open MPI once openmpi-bin is installed as well.
  CC=mpicc.mpich MPICC=mpicc.mpich "${PIP[@]}" wheel -q --no-cache-dir --no-deps --no-binary=mpi4py -w "$WHEELS" mpi4py
fi
"${PIP[@]}" install -q --no-index --find-links "$WHEELS" --force-reinstall --no-deps mpi4py

# -- 4. parallel h5py ---------------------------------------------------------------------
if ! compgen -G "$WHEELS/h5py-*.whl" >/dev/null; then
  log "building h5py with HDF5_MPI=ON (several minutes)"
  # Explicit include/lib dirs (not pkg-config: its hdf5.pc alternative may be Open MPI's).
  HDF5_MPI=ON HDF5_INCLUDEDIR=$HDF5_INCLUDEDIR HDF5_LIBDIR=$HDF5_LIBDIR CC=mpicc.mpich MPICC=mpicc.mpich \
    "${PIP[@]}" wheel -q --no-cache-dir --no-deps --no-binary=h5py --no-build-isolation -w "$WHEELS" h5py
fi
"${PIP[@]}" install -q --no-index --find-links "$WHEELS" --force-reinstall --no-deps h5py

# -- 5. hpcml, without the `mpi` extra (the pip mpich wheel would shadow Debian's MPICH) ----
# An editable install writes hpcml.egg-info into the checkout, so it is skipped when the
# marker is newer than the package metadata: a later call must not race a wheel build there.
MARK=$VENV/.hpcml-installed
if [[ ! -f $MARK || setup.cfg -nt $MARK || pyproject.toml -nt $MARK ]]; then
  log "installing hpcml into $VENV"
  "${PIP[@]}" install -q -e '.[test,plot]'
  touch "$MARK"
fi
"$PY" - "$WHEELS" <<'EOF'
import sys

import h5py
from mpi4py import MPI

hint = f"; delete the cached wheels in {sys.argv[1]} and rerun"
assert h5py.get_config().mpi, "h5py in the parallel venv was built without MPI" + hint
lib = MPI.Get_library_version().splitlines()[0]
assert "MPICH" in lib, f"mpi4py is linked to {lib!r}, not Debian's MPICH" + hint
print(f"h5py {h5py.version.version} (HDF5 {h5py.version.hdf5_version}, mpi=True), {lib.strip()}")
EOF

if ((BUILD_ONLY)); then
  log "venv ready (--build-only: the tests come in a later call)"
  exit 0
fi

# -- 6. I/O tests: serial ones once, MPI ones on each rank count ----------------------------
export HPCML_TEST_MPIEXEC=mpiexec.mpich  # serial tests that spawn ranks use Debian's launcher
log "serial I/O tests"
timeout -k 20 "$MPI_TIMEOUT" "$PY" -m pytest -p no:cacheprovider -q --timeout=600 tests/io
for n in $RANKS; do
  log "MPI I/O tests on $n rank(s)"
  timeout -k 20 "$MPI_TIMEOUT" mpiexec.mpich -n "$n" "$PY" -m pytest -p no:cacheprovider -q --with-mpi -m mpi \
    --timeout=600 -o timeout_method=thread tests/io ||
    {
      rc=$?
      echo "parallel-HDF5 I/O tests failed on $n rank(s) (exit $rc)" >&2
      exit "$rc"
    }
done
log "done"
