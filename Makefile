# make run, test, test-stock, lint, matrix, trial, fuzz, bench, changelog, docs.  Everything runs from .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= etc/suite.toml
STAMP  := $(VENV)/.installed

.PHONY: run test test-stock trial lint matrix fuzz bench changelog tools certs docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when packaging or code changes; regenerate twistd's plugin cache.
$(STAMP): $(BIN)/python pyproject.toml $(shell find suite twisted -name '*.py' -o -name '*.c')
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

# What etc/suite.toml names beside it: a self-signed TLS pair (every [tls] file is checked at
# start), log/ and data/; `suite init` writes only what is missing.
etc/tls/server.crt: $(STAMP)
	$(BIN)/suite init etc >/dev/null

certs: etc/tls/server.crt

run: $(STAMP) certs
	$(BIN)/twistd --nodaemon --pidfile= suite --config $(CONFIG)

# docs/configuration.md is written from the settings declarations; a test fails when it is stale.
docs: $(STAMP)
	$(BIN)/python -m suite.app.reference > docs/configuration.md.new
	mv docs/configuration.md.new docs/configuration.md

# As root (CI), install the outside tools the end-to-end tests drive.
tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    missing=""; \
	    for t in openssl:openssl nc:netcat-openbsd logger:bsdutils taskset:util-linux \
	             systemd-socket-activate:systemd systemd-analyze:systemd rsyslogd:rsyslog \
	             dig:bind9-dnsutils dnsperf:dnsperf unbound:unbound curl:curl \
	             prometheus:prometheus promtool:prometheus etcd:etcd-server etcdctl:etcd-client \
	             chromium:chromium; do \
	        command -v $${t%%:*} >/dev/null || missing="$$missing $${t##*:}"; \
	    done; \
	    ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || missing="$$missing rsyslog-gnutls"; \
	    ls /usr/lib/*/rsyslog/imrelp.so >/dev/null 2>&1 || missing="$$missing rsyslog-relp"; \
	    if [ -n "$$missing" ]; then \
	        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
	            || echo "could not install$$missing: the tests that need them will skip"; \
	    fi; \
	fi

# Every test, with branch coverage of the suite and of the twistd and suite-client processes the
# end-to-end tests start; the floor (fail_under in pyproject.toml) fails the run below it.
# The figures are printed after failing tests too; the run fails if the tests or the floor do.
# Two workers (pytest-xdist), each file's tests on one of them in order: the tests mostly wait
# on the processes they start, so two halve the time on two cores.
test: $(STAMP) tools
	@$(BIN)/coverage erase
	@status=0; \
	$(BIN)/coverage run -m pytest -q -n 2 --dist loadfile || status=$$?; \
	{ $(BIN)/coverage combine --quiet && $(BIN)/coverage report; } || [ $$status -ne 0 ] || status=1; \
	exit $$status

# Every test again on Twisted's stock transports, ports and AMP parser: the path the suite takes
# when the Twisted internals its fast paths lean on are missing or misbehave; and on the
# collector's pure-Python path, the one it takes where its C extension could not be built.
test-stock: $(STAMP) tools
	SUITE_STOCK_TWISTED=1 SUITE_PURE_PYTHON=1 $(BIN)/python -m pytest -q

$(VENV)/.installed-lint: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

# All four checks run, so one pass shows everything that is wrong.
lint: $(VENV)/.installed-lint
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/lint-imports || status=1; \
	exit $$status

$(VENV)/.installed-matrix: $(STAMP)
	$(BIN)/pip install --quiet -e '.[matrix]'
	touch $@

# Python 3.11, 3.12 and 3.13 (pyenv's) x the lowest and the newest Twisted in range: the tests
# but tests/e2e, see noxfile.py.  One cell: .venv/bin/nox -s "tests-3.13(twisted='lowest')".
matrix: $(VENV)/.installed-matrix
	$(BIN)/nox $(NOX_ARGS)

# The same tests under Twisted's own runner.
trial: $(STAMP) tools
	$(BIN)/trial tests

# The parsers under hypothesis, 100,000 examples per target (make test runs 1,000).
fuzz: $(STAMP)
	SUITE_FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest -q tests/fuzz

# The suite next to its peers (bench/run.py, about 10 minutes), then registrations/s, the HTTP
# API, the relay (RELP next to rsyslog's imrelp, forwarding through a disk queue; 3 minutes),
# and the collector's msg/s with 10,000 identities watched by logs checks next to none (silence).
# uvloop is a reference server only: measured when it installs, skipped otherwise.
# Every module runs even when one before it misses a bar; the target fails if any did.
bench: $(STAMP) tools
	$(BIN)/pip install --quiet uvloop || echo "uvloop not installable: its row is skipped"
	@status=0; \
	for module in run names consul relay silence workers status_page; do \
	    (cd bench && ../$(BIN)/python $$module.py) || { echo "bench/$$module.py: a bar was missed"; status=1; }; \
	done; \
	exit $$status

# CHANGELOG.md gains a section from newsfragments/ (which empties): `make changelog VERSION=0.2.0`.
changelog: $(STAMP)
	@test -n "$(VERSION)" || { echo "usage: make changelog VERSION=x.y.z"; exit 2; }
	$(BIN)/pip install --quiet -e '.[release]'
	$(BIN)/towncrier build --yes --version $(VERSION)

clean:
	rm -rf $(VENV) build *.egg-info .nox .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
