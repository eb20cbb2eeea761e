# Two commands do everything on a fresh machine: `make demo` and `make test`. Both run `make setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MVN := mvn -q -B -s jvm/settings.xml -f jvm/pom.xml
JARS := data/jars
PYTEST_ARGS ?=

.PHONY: setup setup-s3 tools demo run test test-unit test-integration chaos browser clean-data help

help:
	@echo "make demo   - everything on embedded defaults (Kafka, exchange emulator, producers, Spark, Delta, dashboard)"
	@echo "make run    - the same against the live Coinbase and Binance feeds"
	@echo "make test   - unit and integration tests (real Kafka, Spark, Delta, browser)"
	@echo "make setup  - .venv + JVM jars (idempotent; offline once done)"

setup: tools $(VENV)/.installed $(JARS)/.fetched

# A JDK and Maven (present on these machines; installed from Debian's packages where they are not).
tools:
	@command -v java >/dev/null && command -v mvn >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null; }

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# Fetched beside the current jars and swapped in at the end: a failed fetch leaves the working set as it was.
$(JARS)/.fetched: jvm/pom.xml jvm/settings.xml
	rm -rf $(JARS)/.new && mkdir -p $(JARS)/.new
	$(MVN) -P spark dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=../$(JARS)/.new/spark
	$(MVN) -P kafka dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=../$(JARS)/.new/kafka
	rm -rf $(JARS)/spark $(JARS)/kafka
	mv $(JARS)/.new/spark $(JARS)/.new/kafka $(JARS)/ && rmdir $(JARS)/.new
	touch $@

# Optional: hadoop-aws + the AWS SDK bundle for a lake and checkpoints on s3a:// (README, "Running in production").
# Linked into data/jars/spark, where the session factory picks up every jar; run it again after `make setup` re-fetches.
setup-s3: setup
	rm -rf $(JARS)/s3 && $(MVN) -P s3 dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=../$(JARS)/s3
	for jar in $(JARS)/s3/*.jar; do ln -sf ../s3/$$(basename $$jar) $(JARS)/spark/; done

# Debian's headless Chromium for the dashboard's browser test (root on these machines).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: setup
	$(BIN)/arb up --source emulator

run: setup
	$(BIN)/arb up --source live

test: setup browser
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/pytest -m "not integration and not live" $(PYTEST_ARGS)

test-integration: setup browser
	$(BIN)/pytest -m "integration and not live" $(PYTEST_ARGS)

chaos: setup
	$(BIN)/pytest -m chaos $(PYTEST_ARGS)

clean-data:
	rm -rf data/lake data/checkpoints data/kafka data/run data/alerts
