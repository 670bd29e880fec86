# A thin menu over the `churn` command line. Every target works from a fresh clone:
# it creates .venv and installs the pinned dependencies when needed.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHURN := $(BIN)/churn
DATA ?= data/demo
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=
MLFLOW_BACKEND ?= postgresql+psycopg://postgres@127.0.0.1:5432/mlflow
MLFLOW_ARTIFACTS ?= mlartifacts
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_WORKERS ?= 2
MLFLOW_SERVER_ARGS ?=

.PHONY: help install run data train score serve test test-fast bench lint format browser reliability clean mlflow-server

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned dependencies

browser: ## install Debian's chromium for the browser tests (needs root or sudo)
	@test -x $(CHROMIUM) || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

$(DATA)/accounts.csv: | $(STAMP)
	$(CHURN) demo-data --out $(DATA)

data: $(STAMP) ## generate the demo data set into data/demo (replaces it)
	$(CHURN) demo-data --out $(DATA)

train: $(STAMP) $(DATA)/accounts.csv ## train, evaluate, register and export a model (demo data by default)
	$(CHURN) train --data $(DATA)

score: $(STAMP) $(DATA)/accounts.csv ## score every active account into the store
	$(CHURN) score --data $(DATA) --history-months 12

serve: $(STAMP) ## serve the API and dashboard on http://127.0.0.1:8000
	$(CHURN) serve

run: $(STAMP) $(DATA)/accounts.csv ## quick start: install, demo data, train, score, serve
	$(CHURN) validate --data $(DATA)
	$(CHURN) quickstart --data $(DATA)

test: $(STAMP) browser ## install what the tests need and run them all
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-fast: $(STAMP) ## the inner loop: every test but PostgreSQL, browser, slow and reliability ones
	$(BIN)/python -m pytest -n 2 -m "not postgres and not browser and not slow and not reliability" $(PYTEST_ARGS)

reliability: $(STAMP) ## fault, load and hostile-input checks with a table of figures
	$(BIN)/python -m pytest -m reliability -s $(PYTEST_ARGS)

bench: $(STAMP) ## benchmarks with side-by-side ratios into bench/results.json
	$(BIN)/python -m bench

lint: $(STAMP) ## ruff lint and format check; import-linter: which package may import which
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

mlflow-server: $(STAMP) ## team MLflow server on PostgreSQL (MLFLOW_BACKEND), see docs/mlflow-team.md
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true $(BIN)/mlflow server \
	  --backend-store-uri '$(MLFLOW_BACKEND)' \
	  --serve-artifacts --artifacts-destination '$(if $(findstring ://,$(MLFLOW_ARTIFACTS)),$(MLFLOW_ARTIFACTS),$(abspath $(MLFLOW_ARTIFACTS)))' \
	  --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers $(MLFLOW_WORKERS) $(MLFLOW_SERVER_ARGS)

clean: ## remove generated data, runs and models (keeps .venv)
	rm -rf data mlruns models/*/ models/champion test-output bench/results.json
