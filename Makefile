# waihu — make demo | make test | make lint | make bench | make install | make uninstall
# Each development target sets up what it needs and is safe to run twice: Debian
# packages (once, with apt-get), a virtual environment in .venv/, the project
# installed into it editable. make install puts a non-editable installation in
# its own virtual environment for production (see "install" below).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := sip-tester espeak-ng sox baresip-core kamailio graphviz systemd procps man-db socat
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench deps venv clean install uninstall

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
	$(BIN)/python benchmarks/bench_sip_setup.py
	$(BIN)/python benchmarks/bench_nlu.py
	$(BIN)/python benchmarks/nlu_eval.py
	$(BIN)/python benchmarks/nlu_eval.py --replies tests/data/nlu_holdout_zh.toml
	$(BIN)/python benchmarks/nlu_eval.py --replies tests/data/nlu_blind2_zh.toml

# The long fuzz run of the SIP plugin's parsers (figures: benchmarks/README.md); the
# suite runs a few hundred inputs per parser (tests/test_sip_fuzz.py). Exit 1 on a finding.
.PHONY: fuzz
fuzz: venv
	$(BIN)/python benchmarks/fuzz_sip.py --inputs 40000

# Turn-taking and who-answered figures on the wire, from scripted callees (issue 9;
# figures: benchmarks/README.md). Minutes each, up to 100 calls at once: not in make bench.
.PHONY: bench-turns bench-who-answered
bench-turns: deps venv
	$(BIN)/python benchmarks/bench_turns.py all

bench-who-answered: deps venv
	$(BIN)/python benchmarks/bench_who_answered.py

# Voice activity detectors compared, webrtcvad against Silero (figures: benchmarks/README.md).
.PHONY: bench-vad
bench-vad: deps venv
	$(BIN)/python benchmarks/bench_vad.py

deps:
	@missing=""; \
	for cmd in sipp espeak-ng sox baresip kamailio dot systemd-analyze /bin/kill man socat; do \
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

# ── install / uninstall ─────────────────────────────────────────────────────
# make install [PREFIX=/usr/local] [DESTDIR=] [VENVDIR=/opt/waihu] [SYSCONFDIR=/etc]
#
# waihu and its dependencies (from PyPI, non-editable) go into their own
# virtual environment VENVDIR; waihud and waihuctl are linked into BINDIR; the
# systemd unit (its ExecStart rewritten to BINDIR/waihud and CONFDIR), the
# sysusers.d and tmpfiles.d snippets and the man pages go under PREFIX; the
# sample configuration and scripts go to CONFDIR, never over existing files.
# With DESTDIR (packaging), everything lands under DESTDIR but names its final
# path: the environment is built in DESTDIR/VENVDIR, then its scripts are
# rewritten to name VENVDIR (contrib/install/relocate_venv.py). Installed to
# the live system as root under systemd, install also creates the waihu user,
# the state directories and reloads systemd (SYSTEMD_SETUP=no: print how instead).
PREFIX ?= /usr/local
VENVDIR ?= /opt/waihu
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/waihu
SYSCONFDIR ?= /etc
CONFDIR := $(SYSCONFDIR)/waihu
# $(PREFIX)/lib/...: /usr/local/lib/{systemd/system,sysusers.d,tmpfiles.d} are
# in systemd's search paths as /usr/lib/... are (PREFIX=/usr for a package)
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
# the daemon's default state_dir; never installed to nor removed, only named
STATEDIR := /var/lib/waihu
SYSTEMD_SETUP ?= auto
STAGED_VENV = $(DESTDIR)$(VENVDIR)
MAN_PAGES := $(wildcard man/*.[158])
# root, no DESTDIR, systemd running: the live system, where install may create users
LIVE = $(if $(DESTDIR),,$(filter auto,$(SYSTEMD_SETUP)))
LIVE_CHECK = [ -n "$(LIVE)" ] && [ "$$(id -u)" = 0 ] && [ -d /run/systemd/system ]

install:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "install: waihu needs Python 3.11 or newer as $(PYTHON) (PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	  { echo "install: $(PYTHON) cannot make virtual environments: apt-get install python3-venv"; exit 1; }
	@# a new Python minor version cannot use the old environment: rebuild it
	@want=$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])'); \
	have=$$($(STAGED_VENV)/bin/python -c 'import sys; print(sys.version_info[:2])' 2>/dev/null); \
	if [ "$$want" != "$$have" ]; then \
	  echo "install: virtual environment $(STAGED_VENV)"; \
	  $(PYTHON) -m venv --clear $(STAGED_VENV) || exit 1; \
	fi
	@echo "install: waihu and its dependencies into $(STAGED_VENV)"
	@# --no-compile: relocate_venv.py compiles, naming the final path in the bytecode.
	@# setuptools builds in build/ and never empties it: a module removed from the
	@# source would still be installed from there
	rm -rf build
	$(STAGED_VENV)/bin/python -m pip install -q --no-compile --upgrade-strategy only-if-needed .
	$(PYTHON) contrib/install/relocate_venv.py $(STAGED_VENV) $(VENVDIR)
	install -d $(DESTDIR)$(BINDIR)
	ln -sfn $(VENVDIR)/bin/waihud $(DESTDIR)$(BINDIR)/waihud
	ln -sfn $(VENVDIR)/bin/waihuctl $(DESTDIR)$(BINDIR)/waihuctl
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	sed -e 's|^ExecStart=.*|ExecStart=$(BINDIR)/waihud --config $(CONFDIR)/waihud.toml|' \
	  systemd/waihud.service > $(DESTDIR)$(UNITDIR)/waihud.service
	chmod 644 $(DESTDIR)$(UNITDIR)/waihud.service
	install -m 644 systemd/waihu.sysusers $(DESTDIR)$(SYSUSERSDIR)/waihu.conf
	sed -e 's|/etc/waihu/|$(CONFDIR)/|' systemd/waihu.tmpfiles > $(DESTDIR)$(TMPFILESDIR)/waihu.conf
	chmod 644 $(DESTDIR)$(TMPFILESDIR)/waihu.conf
	@for page in $(MAN_PAGES); do \
	  section=$${page##*.}; \
	  install -d $(DESTDIR)$(MANDIR)/man$$section && \
	  install -m 644 $$page $(DESTDIR)$(MANDIR)/man$$section/ || exit 1; \
	done
	install -d $(DESTDIR)$(DOCDIR)/examples
	install -m 644 etc/waihu/waihud.toml etc/waihu/campaigns/example.toml $(DESTDIR)$(DOCDIR)/examples/
	@# configuration: never over a file already there (the sysadmin's)
	@install -d -m 755 $(DESTDIR)$(CONFDIR)
	@if [ -e $(DESTDIR)$(CONFDIR)/waihud.toml ]; then \
	  echo "install: kept the existing $(CONFDIR)/waihud.toml (the new sample: $(DOCDIR)/examples/waihud.toml)"; \
	else \
	  echo "install: sample configuration $(CONFDIR)/waihud.toml"; \
	  install -m 640 etc/waihu/waihud.toml $(DESTDIR)$(CONFDIR)/waihud.toml; \
	fi
	@kept=0; for file in $$(cd etc/waihu && find scripts campaigns -type f | sort); do \
	  if [ -e $(DESTDIR)$(CONFDIR)/$$file ]; then kept=$$((kept + 1)); \
	  else install -D -m 644 etc/waihu/$$file $(DESTDIR)$(CONFDIR)/$$file || exit 1; fi; \
	done; \
	if [ $$kept -gt 0 ]; then \
	  echo "install: kept $$kept existing file(s) under $(CONFDIR)/scripts and $(CONFDIR)/campaigns"; \
	fi
	@if $(LIVE_CHECK); then \
	  echo "install: the waihu user and group, $(STATEDIR), and reloading systemd"; \
	  systemd-sysusers $(SYSUSERSDIR)/waihu.conf && \
	  systemd-tmpfiles --create $(TMPFILESDIR)/waihu.conf && \
	  systemctl daemon-reload; \
	elif [ -z "$(DESTDIR)" ]; then \
	  echo "install: as root under systemd, then run: systemd-sysusers $(SYSUSERSDIR)/waihu.conf;" \
	    "systemd-tmpfiles --create $(TMPFILESDIR)/waihu.conf; systemctl daemon-reload"; \
	fi
	@echo "install: done. Next: edit $(CONFDIR)/waihud.toml, check it with" \
	  "'waihud --check-config', then 'systemctl enable --now waihud'" \
	  "(after an upgrade: 'systemctl restart waihud')"

uninstall:
	@if $(LIVE_CHECK) && [ "$$(systemctl show -P FragmentPath waihud.service)" = "$(UNITDIR)/waihud.service" ]; then \
	  echo "uninstall: stopping and disabling waihud.service"; \
	  systemctl disable --now waihud.service; \
	fi
	@# only links that point into this environment, only a directory that is one
	@for name in waihud waihuctl; do \
	  link=$(DESTDIR)$(BINDIR)/$$name; \
	  if [ "$$(readlink $$link)" = "$(VENVDIR)/bin/$$name" ]; then rm -f $$link; fi; \
	done
	@if [ -f $(STAGED_VENV)/pyvenv.cfg ] && [ -e $(STAGED_VENV)/bin/waihud ]; then \
	  echo "uninstall: removing $(STAGED_VENV)"; rm -rf $(STAGED_VENV); \
	elif [ -e $(STAGED_VENV) ]; then \
	  echo "uninstall: left $(STAGED_VENV) alone: not a waihu virtual environment"; \
	fi
	rm -f $(DESTDIR)$(UNITDIR)/waihud.service $(DESTDIR)$(SYSUSERSDIR)/waihu.conf \
	  $(DESTDIR)$(TMPFILESDIR)/waihu.conf
	rm -f $(foreach page,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(page)))/$(notdir $(page)))
	rm -rf $(DESTDIR)$(DOCDIR)
	@if $(LIVE_CHECK); then systemctl daemon-reload; fi
	@echo "uninstall: kept $(CONFDIR) (configuration, scripts) and $(STATEDIR) (database," \
	  "recordings, models) and the waihu user and group; remove them by hand if you no longer want them"
