# The project image: every `arb` command (producers, streaming jobs, dashboard). docker-compose.yml runs it.
#   docker build -t arb .        docker run --rm arb --help

# Stage 1: the JVM jars Spark needs beyond pyspark (Delta, the Kafka source), from the same pom as `make setup`.
# The broker itself is the official apache/kafka image (docker-compose.yml), so the `kafka` profile is not fetched.
FROM maven:3.9-eclipse-temurin-17 AS jars
WORKDIR /build
COPY jvm/ jvm/
RUN mvn -q -B -s jvm/settings.xml -f jvm/pom.xml -P spark dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory=/build/jars/spark

# Stage 2: Python 3.11 + a headless JRE for Spark.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ARB_DATA_DIR=/app/data
WORKDIR /app

COPY pyproject.toml README.md ./
COPY arb/ arb/
COPY arbitrage/ arbitrage/
COPY producers/ producers/
COPY streaming/ streaming/
COPY dashboard/ dashboard/
COPY data/markets/ data/markets/
COPY data/scenarios/ data/scenarios/
# Editable, as in `make setup`: the code finds data/ (market snapshots, scenarios, jars) beside itself.
RUN pip install -e .
COPY --from=jars /build/jars/ data/jars/

# The lake, checkpoints, alert log and run files are volumes (docker-compose.yml); owned by an unprivileged user.
RUN useradd --system --uid 10001 --home-dir /app arb \
 && mkdir -p data/lake data/checkpoints data/alerts data/run \
 && chown arb:arb /app \
 && chown -R arb:arb data/lake data/checkpoints data/alerts data/run
USER arb

ENTRYPOINT ["arb"]
CMD ["--help"]
