# app-pki: `make run` runs it, `make test` tests it. Both install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

CA_PORT ?= 9000
CRL_PORT ?= 9080
GUI_PORT ?= 8502
export CA_PORT CRL_PORT GUI_PORT

SHELL_SCRIPTS := $(wildcard scripts/*.sh) $(wildcard ca/*.sh) .ci/run

.PHONY: help packages tools run test lint screenshots bench reset clean

help:
	@echo "make run     start step-ca and the GUI (http://127.0.0.1:$(GUI_PORT)); Ctrl-C stops both"
	@echo "make test    run every test and check against a real step-ca"
	@echo "make lint    ruff, mypy (strict, streamlit/pki) and shellcheck only"
	@echo "make screenshots  refresh docs/screenshots/ with the browser test"
	@echo "make bench   the inventory, one issue against raw step, the pages with 100,000 certificates, bulk enrolment"
	@echo "make reset   stop nothing, DELETE the local CA and data/ (asks first)"
	@echo "make clean   remove .venv and the tool links (the cache outside the clone stays)"

# Before anything is built: the Debian packages the tests use (installed as root, else named).
packages:
	@scripts/test-packages.sh

tools:
	@scripts/install-step.sh

# The runtime environment (make run) and the test tools (make test), each installed once.
$(VENV)/.runtime: streamlit/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r streamlit/requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

# dclint (compose linter) from npm, at the version package-lock.json pins.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: tools $(VENV)/.runtime
	@scripts/run-local.sh

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	shellcheck $(SHELL_SCRIPTS)

test: packages tools $(VENV)/.dev node_modules/.installed lint
	$(VENV)/bin/pytest

screenshots: tools $(VENV)/.dev
	SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(VENV)/bin/pytest tests/test_browser.py

bench: tools $(VENV)/.dev
	$(VENV)/bin/python bench/inventory_bench.py
	$(VENV)/bin/python bench/issue_bench.py --count 20
	$(VENV)/bin/python bench/issue_bench.py --count 20 --existing 10000
	$(VENV)/bin/python bench/pages_bench.py --count 100000 --runs 3
	$(VENV)/bin/python bench/bulk_bench.py --count 1000 --loop-count 100

DATA_DIR := $(or $(PKI_DATA_DIR),$(CURDIR)/data)

reset:
	@read -r -p "Delete the local CA in $(DATA_DIR) (every certificate it issued stops being trusted)? [y/N] " answer; \
	  if [ "$$answer" = y ]; then rm -rf "$(DATA_DIR)" && echo "$(DATA_DIR) removed."; else echo "Nothing removed."; fi

clean:
	rm -rf $(VENV) .tools node_modules
