# Fovea: `make demo` runs the loop on built-in defaults, `make test` the test suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Pin the CPU build of torch unless this machine has an NVIDIA GPU (then bring your own torch).
CONSTRAINTS := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 || echo "-c constraints-cpu.txt")
PYTEST_ARGS ?=

WORKER_PY38 := $(addprefix edge_agent/runtime/,trt_build.py trt_run.py cuda_buffers.py worker.py)

.PHONY: install demo test test-fast test-timm lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip || true
	$(PY) -m pip install --quiet $(CONSTRAINTS) -e '.[server,agent,fl,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fovea demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests" >&2; [ $$rc -eq 0 ] || exit $$rc
	if [ "$$CI" = true ] || [ "$$FOVEA_TEST_TIMM" = 1 ]; then $(MAKE) test-timm; fi

# timm and torchvision import only beside PyPI's own torch build (it runs on the CPU too), not
# beside the small CPU wheel the main venv pins: their model-source tests and the timm loop
# (teacher -> student -> QAT -> export -> bundle -> agents -> a federated round) get a venv of
# their own (about 5 GB, about a minute to install). CI runs them; elsewhere FOVEA_TEST_TIMM=1.
TIMM_VENV := .venv-timm
TIMM_PY := $(TIMM_VENV)/bin/python
TIMM_STAMP := $(TIMM_VENV)/.installed-stamp
TIMM_PINS := torch==2.13.0 torchvision==0.28.0 timm==1.0.31

$(TIMM_STAMP): pyproject.toml Makefile
	test -x $(TIMM_PY) || $(PYTHON) -m venv $(TIMM_VENV)
	# this machine's pip settings point at the CPU wheel: ask PyPI itself for torch
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(TIMM_PY) -m pip install --quiet $(TIMM_PINS) \
		-e '.[server,agent]' 'flwr==1.42.*' pytest pytest-timeout httpx
	touch $(TIMM_STAMP)

test-timm: $(TIMM_STAMP)
	FOVEA_REQUIRE_TIMM=1 $(TIMM_PY) -m pytest -q -p no:cacheprovider \
		tests/models/test_adapters.py tests/server/compress/test_compress_source_vits.py \
		tests/e2e/test_timm_loop.py tests/benchmarks/test_clinical_models.py -k "timm or torchvision"

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	# package boundaries (contracts in pyproject.toml) and how the code reads (tools/code_stats.py)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m tools.code_stats --check
	# the inference worker's modules must load under JetPack 5's Python 3.8 (ruff parses them as
	# 3.8 above; vermin finds library calls newer than 3.8; the test, imports and annotations)
	$(VENV)/bin/vermin --target=3.8- --no-tips --violations --quiet $(WORKER_PY38)
	$(PY) -m pytest -q -p no:cacheprovider tests/edge_agent/runtime/test_trt_build_py38.py

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) $(TIMM_VENV) .pytest_cache .mypy_cache .ruff_cache
