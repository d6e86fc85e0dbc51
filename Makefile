# runform — every target creates .venv and installs what it needs.
#   make demo      simulated runner -> streaming DSP (-> broker, dashboard as they land)
#   make test      the whole test suite (what CI runs)
#   make validate  accuracy against force-plate data  -> docs/accuracy.md
#   make bench     speed                              -> docs/benchmarks.md
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.runform-installed
SYS_STAMP := $(VENV)/.runform-sysdeps
# Debian packages the tests and the demo use (real broker, private D-Bus for the BLE emulator).
APT_PACKAGES ?= mosquitto mosquitto-clients dbus-daemon chromium
SYS_COMMANDS ?= mosquitto dbus-daemon chromium

.PHONY: demo test validate bench peers-venv warmup sysdeps clean screenshots

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "runform needs Python >= 3.11, found " + sys.version' \
	  || { echo "ERROR: Python 3.11+ is required (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=69" wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

sysdeps: $(SYS_STAMP)
$(SYS_STAMP): $(BIN)/python
	@missing=""; for c in $(SYS_COMMANDS); do command -v $$c >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$(APT_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "NOTE: missing system commands:$$missing. Install them (Debian: sudo apt-get install $(APT_PACKAGES));"; \
	    echo "      tests that need them are skipped with a message saying so."; \
	  fi; \
	fi
	@touch $@

install: $(STAMP)

warmup: $(STAMP)
	$(BIN)/runform warmup

demo: $(STAMP) sysdeps
	$(BIN)/runform demo

# The whole suite, then the numerical tests again with numba's JIT off: the kernels must give the same
# results as plain Python (this is also how coverage of kernel bodies is measured).
test: $(STAMP) sysdeps
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q tests/dsp tests/cli/test_analyze.py $(PYTEST_ARGS)

# docs/img/*.png, taken by the dashboard tests (a plain `make test` writes them to a temporary folder)
screenshots: $(STAMP) sysdeps
	RUNFORM_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/python -m pytest -q tests/ui/test_dashboards.py

validate: $(STAMP)
	$(BIN)/runform validate --out docs/accuracy.md

# Peer libraries (gaitmap, gaitmap-mad, mobgap) timed by the bench live in their own venv, never in $(VENV);
# created only here (not by `make test`). A failed install does not stop the bench: it reports the error.
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.peers-installed
peers-venv: $(PEERS_STAMP)
$(PEERS_STAMP): tools/peers/requirements.txt
	@echo "setting up $(PEERS_VENV) (peers for the bench; log in $(PEERS_VENV)/install.log)"
	@mkdir -p $(PEERS_VENV)
	@if { [ -x $(PEERS_VENV)/bin/python ] || $(PYTHON) -m venv $(PEERS_VENV) > $(PEERS_VENV)/install.log 2>&1; } \
	   && $(PEERS_VENV)/bin/python -m pip install --quiet -r tools/peers/requirements.txt >> $(PEERS_VENV)/install.log 2>&1; \
	then touch $@; \
	else echo "WARNING: installing the peers failed (see $(PEERS_VENV)/install.log); the bench reports it and goes on"; fi

bench: $(STAMP) peers-venv
	$(BIN)/runform bench --out docs/benchmarks.md

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
