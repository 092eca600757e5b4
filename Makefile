# aipm-kiro — the two commands that matter: `make run` (local stack + UI) and `make test` (everything).
# Each target builds .venv from requirements.txt when it is missing or older than requirements.txt.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: run test test-fast lint synth bench torture status browser agents venv clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

venv: $(STAMP)

# The local stack: worker pool, PR processor and API (serving the UI) on loopback. No shell stands between make and
# the supervisor, so Ctrl+C or a SIGTERM to make reaches it and it stops all three.
run: $(STAMP) agents
	$(PY) -m aipm_local.run

status: $(STAMP)
	$(PY) -m aipm_local.status

# Debian's Chromium for the UI tests (never a downloaded browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the UI tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null \
	  || echo "could not install chromium: the browser tests will say so and skip"; }

# The unmodified open-source ACP agents (AIPM_AGENT=claude-code; tests/real_agents drives them), pinned by
# agents/package-lock.json and installed from the npm registry alone. Without npm the real-agent tests skip, saying so.
AGENTS_STAMP := agents/node_modules/.installed

$(AGENTS_STAMP): agents/package.json agents/package-lock.json
	@if command -v npm >/dev/null 2>&1; then cd agents && npm ci --no-audit --no-fund --silent && touch node_modules/.installed; \
	  else echo "npm is not installed: the real-agent tests will skip"; fi

agents: $(AGENTS_STAMP)

# Test files run in parallel (pytest-xdist, a file per worker at a time): most tests wait on real processes, so four
# workers on two cores halve the wall time. TEST_WORKERS=0 runs them one after another.
TEST_WORKERS ?= 4

test: $(STAMP) browser agents
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -x -q -m "not browser and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

node_modules/.bin/cdk: package.json
	npm install --no-audit --no-fund --silent
	@touch $@

synth: $(STAMP) node_modules/.bin/cdk
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" node_modules/.bin/cdk synth --quiet

bench: $(STAMP)
	$(PY) -m bench

torture: $(STAMP)
	AIPM_TORTURE=1 $(PY) -m pytest -q tests/reliability

clean:
	rm -rf $(VENV) node_modules agents/node_modules cdk.out .pytest_cache
