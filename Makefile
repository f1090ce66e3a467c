# hpcml — the two commands a new user needs:
#   make run    create .venv, install hpcml, run the main job on 4 ranks (built-in defaults)
#   make test   create .venv if missing, lint, run the serial and the MPI test suites (1-4 ranks)
# and the release check CI runs after them:
#   make test-wheel   build the wheel, install it into a fresh venv and, from outside the
#                     checkout, run the default job on 2 ranks and the serial tests against it
#                     (all but the `slow` ones -- the full HipFT cases -- which `make test` ran)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MPIEXEC := $(VENV)/bin/mpiexec
NP ?= 4
CONFIG ?=
RANKS ?= 1 2 3 4
MPI_TIMEOUT ?= 1800
SERIAL_TIMEOUT ?= 2700
# pytest `-m` expression for the serial stage (empty: every serial test).  CI sets it to
# "slow or torch" because `make test-wheel` runs every other serial test from the wheel.
SERIAL_SELECT ?=
TORCH_VERSION ?= 2.13.0
PYTEST_MPI := -p no:cacheprovider -q -rs --durations=8 --with-mpi --timeout=600 -o timeout_method=thread
# only rank 0 of an MPI pytest run reports (the others print their output only if they fail)
RANK0 := tests/rank0_output.sh
# each stage's closing pytest line, printed together at the end of `make test`
SUMMARY := $(VENV)/test-summary.txt
WHEEL_DIR ?= dist
WHEEL_VENV ?= .venv-wheel
# stage NAME, COMMAND...: run it, keep its last line (pytest's "N passed ...") for the summary
define stage
	@set -o pipefail; echo "== $(1)"; \
	  { $(2); } 2>&1 | tee $(VENV)/stage.log; rc=$${PIPESTATUS[0]}; \
	  printf '%-34s %s\n' "$(1):" "$$(grep -E '(passed|failed|error|no tests ran)' $(VENV)/stage.log | tail -1)" >> $(SUMMARY); \
	  if [ $$rc -ne 0 ]; then echo "$(1) failed (exit $$rc)"; cat $(SUMMARY); exit $$rc; fi
endef
export NUMBA_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: run test venv lint format test-serial test-sim test-mpi test-wheel summary bench clean

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

test: venv lint
	@rm -f $(SUMMARY)
	@$(MAKE) --no-print-directory test-serial test-sim test-mpi
	@echo "== summary"; cat $(SUMMARY)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# -rs prints the reason of every skipped test (a missing GPU, SLURM or shellcheck is named).
test-serial: venv
	$(call stage,serial,timeout $(SERIAL_TIMEOUT) $(PY) -m pytest -p no:cacheprovider -q -rs --durations=15 --timeout=600 $(if $(SERIAL_SELECT),-m "$(SERIAL_SELECT)") tests)

# GPU kernels on the CPU: Numba's CUDA simulator must be switched on before numba is imported.
# The MPI part runs the GPU halo paths (staged, device) on simulated device arrays, 1-4 ranks.
test-sim: venv
	$(call stage,CUDA simulator,NUMBA_ENABLE_CUDASIM=1 timeout $(MPI_TIMEOUT) $(PY) -m pytest -p no:cacheprovider -q -rs --timeout=600 -m cudasim tests)
	@for n in $(RANKS); do \
	  $(MAKE) --no-print-directory _sim-ranks N=$$n || exit $$?; \
	done

_sim-ranks:
	$(call stage,CUDA simulator MPI $(N) rank(s),NUMBA_ENABLE_CUDASIM=1 timeout -k 20 $(MPI_TIMEOUT) $(MPIEXEC) -n $(N) $(RANK0) $(PY) -m pytest $(PYTEST_MPI) -m "mpi and numba_cuda" tests)

# Every MPI run is bounded by `timeout`, so a deadlock fails in minutes, not at the CI limit.
test-mpi: venv
	@for n in $(RANKS); do \
	  $(MAKE) --no-print-directory _mpi-ranks N=$$n || exit $$?; \
	done

_mpi-ranks:
	$(call stage,MPI $(N) rank(s),timeout -k 20 $(MPI_TIMEOUT) $(MPIEXEC) -n $(N) $(RANK0) $(PY) -m pytest $(PYTEST_MPI) -m mpi tests)

# The package as users receive it: a wheel in a fresh venv, used from outside the checkout.
test-wheel: venv
	rm -rf $(WHEEL_DIR) $(WHEEL_VENV)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_DIR) .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --upgrade pip
	# no torch here (its tests ran in `make test`; they skip with the reason): saves minutes of install
	$(WHEEL_VENV)/bin/python -m pip install -q "$$(ls $(WHEEL_DIR)/hpcml-*.whl)[mpi,test,plot]"
	@set -e; out=$$(mktemp -d); cd "$$out"; \
	  echo "== wheel: from $$out"; \
	  $(CURDIR)/$(WHEEL_VENV)/bin/python -c "import hpcml, sys; assert 'site-packages' in hpcml.__file__, hpcml.__file__; print('hpcml from', hpcml.__file__)"; \
	  $(CURDIR)/$(WHEEL_VENV)/bin/hpcml --version; \
	  $(CURDIR)/$(WHEEL_VENV)/bin/hpcml bench flux --help > /dev/null; \
	  timeout $(MPI_TIMEOUT) $(CURDIR)/$(WHEEL_VENV)/bin/mpiexec -n 2 $(CURDIR)/$(WHEEL_VENV)/bin/hpcml run; \
	  ls flux_output; \
	  HPCML_EXPECT_INSTALLED=1 timeout $(SERIAL_TIMEOUT) $(CURDIR)/$(WHEEL_VENV)/bin/python -m pytest -p no:cacheprovider -q -rs --durations=15 \
	    --timeout=600 -m "not slow" $(CURDIR)/tests

bench: venv
	$(MPIEXEC) -n 2 $(VENV)/bin/hpcml bench halo

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache bench-results $(WHEEL_VENV)
