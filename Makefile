# sdlora: the two set-up commands are `make demo` and `make test`; both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sdlora-installed

.PHONY: install demo ui test test-all bench lint format clean

# torch first (pinned: a CPU build where one is on disk; set TORCH=... for another build), then the package with the
# test tools, the sweep extra (Optuna sweeper, SLURM/joblib launchers, matplotlib), the wandb extra (logger=wandb) and
# the ui extra (Gradio), which the tests use.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,sweep,wandb,ui]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## train a LoRA on the tiny model and the bundled example dataset (CPU, about a minute)
	$(PY) train.py experiment=demo

ui: $(STAMP)  ## the web UI on http://127.0.0.1:7860 (sdlora-ui; README "The web UI")
	$(VENV)/bin/sdlora-ui

test: $(STAMP)  ## the test suite (CPU, offline)
	$(PY) -m pytest -q

test-all: $(STAMP)  ## also the slow tests on full-size architectures
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)  ## sdlora's training step vs a plain PyTorch loop, and precision costs (prints ratios; minutes)
	$(PY) benchmarks/step_overhead.py

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
