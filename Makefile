# Two commands do everything on a fresh machine: `make demo` and `make test`. Both run `make setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MVN := mvn -q -B -s jvm/settings.xml -f jvm/pom.xml
JARS := data/jars

.PHONY: setup demo run test test-unit chaos browser clean-data help

help:
	@echo "make demo   - everything on embedded defaults (Kafka, Spark, Delta, exchange emulator, dashboard)"
	@echo "make run    - the same against the live Coinbase and Binance feeds"
	@echo "make test   - unit and integration tests (real Kafka, Spark, Delta, browser)"
	@echo "make setup  - .venv + JVM jars (idempotent; offline once done)"

setup: $(VENV)/.installed $(JARS)/.fetched

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

$(JARS)/.fetched: jvm/pom.xml jvm/settings.xml
	rm -rf $(JARS)/spark $(JARS)/kafka
	$(MVN) -P spark dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=../$(JARS)/spark
	$(MVN) -P kafka dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=../$(JARS)/kafka
	touch $@

# Debian's headless Chromium for the dashboard's browser test (root on these machines).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: setup
	$(BIN)/arb up --source emulator

run: setup
	$(BIN)/arb up --source live

test: setup browser
	$(BIN)/pytest

test-unit: setup
	$(BIN)/pytest -m "not integration"

chaos: setup
	$(BIN)/pytest -m chaos

clean-data:
	rm -rf data/lake data/checkpoints data/kafka data/run data/alerts
