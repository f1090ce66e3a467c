# hpcml — the two commands a new user needs:
#   make run    create .venv, install hpcml, run the main job on 4 ranks (built-in defaults)
#   make test   create .venv if missing, lint, run the serial and the MPI test suites (1-4 ranks)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MPIEXEC := $(VENV)/bin/mpiexec
NP ?= 4
CONFIG ?=
RANKS ?= 1 2 3 4
MPI_TIMEOUT ?= 900
TORCH_VERSION ?= 2.13.0
PYTEST_MPI := -p no:cacheprovider -q --with-mpi --timeout=600 -o timeout_method=thread
export NUMBA_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: run test venv lint format test-serial test-sim test-mpi bench clean

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned first: the CPU wheel of this exact release (an open range would pull the CUDA build)
	$(PY) -m pip install -q 'torch==$(TORCH_VERSION)'
	$(PY) -m pip install -q -e '.[mpi,test,plot,dev,torch]'
	touch $@

venv: $(VENV)/.installed

run: venv
	$(MPIEXEC) -n $(NP) $(VENV)/bin/hpcml run $(CONFIG)

test: venv lint test-serial test-sim test-mpi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test-serial: venv
	timeout $(MPI_TIMEOUT) $(PY) -m pytest -p no:cacheprovider -q --timeout=600 tests

# GPU kernels on the CPU: Numba's CUDA simulator must be switched on before numba is imported.
# The MPI part runs the GPU halo paths (staged, device) on simulated device arrays, 1-4 ranks.
test-sim: venv
	NUMBA_ENABLE_CUDASIM=1 timeout $(MPI_TIMEOUT) $(PY) -m pytest -p no:cacheprovider -q --timeout=600 -m cudasim tests
	@set -e; for n in $(RANKS); do \
	  echo "== CUDA-simulator MPI tests on $$n rank(s)"; \
	  NUMBA_ENABLE_CUDASIM=1 timeout -k 20 $(MPI_TIMEOUT) $(MPIEXEC) -n $$n $(PY) -m pytest $(PYTEST_MPI) \
	    -m "mpi and numba_cuda" tests \
	    || { rc=$$?; echo "CUDA-simulator MPI tests failed on $$n rank(s) (exit $$rc)"; exit $$rc; }; \
	done

# Every MPI run is bounded by `timeout`, so a deadlock fails in minutes, not at the CI limit.
test-mpi: venv
	@set -e; for n in $(RANKS); do \
	  echo "== MPI tests on $$n rank(s)"; \
	  timeout -k 20 $(MPI_TIMEOUT) $(MPIEXEC) -n $$n $(PY) -m pytest $(PYTEST_MPI) -m mpi tests \
	    || { rc=$$?; echo "MPI tests failed on $$n rank(s) (exit $$rc)"; exit $$rc; }; \
	done

bench: venv
	$(MPIEXEC) -n 2 $(VENV)/bin/hpcml bench halo

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache bench-results
