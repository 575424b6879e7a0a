# waihu — make demo | make test | make lint | make bench
# Each target sets up what it needs and is safe to run twice: Debian packages
# (once, with apt-get), a virtual environment in .venv/, the project installed
# into it editable.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := sip-tester espeak-ng sox baresip-core kamailio graphviz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench deps venv clean

demo: deps venv
	$(BIN)/python -m waihu.testing.demo

test: deps venv
	$(BIN)/ruff check daemon plugins tests contrib benchmarks
	$(BIN)/python -m pytest -ra

lint: venv
	$(BIN)/ruff check daemon plugins tests contrib benchmarks
	$(BIN)/ruff format --check daemon plugins tests contrib benchmarks

bench: deps venv
	$(BIN)/python benchmarks/bench_media.py
	$(BIN)/python benchmarks/bench_asr.py
	$(BIN)/python benchmarks/bench_calls.py --calls 10
	$(BIN)/python benchmarks/bench_import.py
	$(BIN)/python benchmarks/bench_campaign.py --calls 400 --lines 100
	$(BIN)/python benchmarks/bench_campaign_store.py
	$(BIN)/python benchmarks/bench_nlu.py
	$(BIN)/python benchmarks/nlu_eval.py
	$(BIN)/python benchmarks/nlu_eval.py --replies tests/data/nlu_holdout_zh.toml

deps:
	@missing=""; \
	for cmd in sipp espeak-ng sox baresip kamailio dot; do \
	  command -v $$cmd >/dev/null || test -x /usr/sbin/$$cmd || missing=1; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 $(APT_PACKAGES) >/dev/null && \
	  if [ -d /run/systemd/system ]; then \
	    echo "stopping the kamailio service the package enabled (the tests run their own)"; \
	    $(SUDO) systemctl disable --now kamailio >/dev/null 2>&1 || true; \
	  fi; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,demo]'
	touch $@

clean:
	rm -rf $(VENV) var/ build/ *.egg-info daemon/*.egg-info
