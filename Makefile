# The platform's entry points. `make demo` and `make test` install what they need first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
TOOLS := .stack/tools
UV := $(TOOLS)/bin/uv
VENV := .venv
MLOPS := $(VENV)/bin/mlops
# Prints how long each phase took.
define timed
	@start=$$(date +%s); $(2); rc=$$?; echo "[phase] $(1): $$(( $$(date +%s) - start ))s"; exit $$rc
endef

.PHONY: setup setup-postgres setup-test demo test lint format stack-up stack-down clean

setup: ## Create .venv from uv.lock and make the lakeFS server available (idempotent)
	$(call timed,setup,$(MAKE) --no-print-directory _setup)

_setup: $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	$(UV) sync --frozen --project feature_store --compile-bytecode --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"
	$(MLOPS) stack install

$(UV):
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (python3.11 not found)"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

setup-postgres: setup ## Also install PostgreSQL (Debian packages) for the postgres backend
	$(call timed,setup-postgres,$(MLOPS) stack install --backend postgres)

setup-test: setup ## What the tests need: PostgreSQL and Chromium (Debian packages)
	$(call timed,setup-test,$(MLOPS) stack install --backend postgres --browser)

demo: setup ## The main job: stack up, the platform's DAGs run by the scheduler, URLs printed
	$(call timed,demo,$(MLOPS) demo)

test: setup-test ## The whole test suite: lint, unit, DAG integrity, integration on the real stack
	$(call timed,lint,$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .)
	$(call timed,pytest,$(VENV)/bin/pytest)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

stack-up: setup
	$(MLOPS) stack up

stack-down:
	$(MLOPS) stack down

clean: stack-down
	rm -rf .stack $(VENV)
