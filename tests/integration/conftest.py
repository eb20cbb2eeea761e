"""Integration fixtures of the streaming jobs: one small Spark session for the whole test session."""

from __future__ import annotations

import pytest

from arb.settings import REPO_ROOT


@pytest.fixture(scope="session")
def spark():
    """A local[2] SparkSession from `streaming.session` with 2 shuffle partitions (modules may override it)."""
    from streaming.config import SparkConfig
    from streaming.session import create_session

    session = create_session(SparkConfig(
        master="local[2]", app_name="arb-tests", jars_dir=str(REPO_ROOT / "data" / "jars" / "spark"),
        shuffle_partitions=2, driver_memory="1g",
        extra={"spark.sql.streaming.numRecentProgressUpdates": "1000"},
    ))
    yield session
    session.stop()
