"""Session factory and query scheduling: the hot path is served first, the queries beside it leave it cores."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from arb.settings import REPO_ROOT
from streaming.config import SparkConfig
from streaming.session import HOTPATH_POOL, spark_conf


def test_the_session_schedules_fairly_with_a_hot_path_pool_that_gets_a_core_first():
    conf = spark_conf(SparkConfig(master="local[2]", jars_dir=str(REPO_ROOT / "data" / "jars" / "spark")))

    pools = {p.get("name"): p for p in ET.parse(conf["spark.scheduler.allocation.file"]).getroot()}

    assert conf["spark.scheduler.mode"] == "FAIR"
    hot, default = pools[HOTPATH_POOL], pools["default"]
    assert int(hot.findtext("minShare")) == 1 and int(default.findtext("minShare")) == 0
    assert int(hot.findtext("weight")) > int(default.findtext("weight"))


def test_spark_settings_from_the_environment_win_over_ours_and_a_malformed_one_is_refused():
    from arb.settings import ConfigError, Settings
    from streaming.config import from_settings

    config = from_settings(Settings(), environ={"ARB_SPARK_CONF": "spark.sql.shuffle.partitions=8; spark.ui.enabled=true"})
    conf = spark_conf(config.spark)

    assert conf["spark.sql.shuffle.partitions"] == "8" and conf["spark.ui.enabled"] == "true"
    with pytest.raises(ConfigError, match="spark.key=value"):
        from_settings(Settings(), environ={"ARB_SPARK_CONF": "shuffle=8"})


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_hot_path_partition_count_below_one_or_not_a_number_is_refused(value):
    from arb.settings import ConfigError, Settings
    from streaming.config import from_settings

    assert from_settings(Settings(), environ={"ARB_HOTPATH_PARTITIONS": "3"}).hotpath.shuffle_partitions == 3
    with pytest.raises(ConfigError, match="partitions|ARB_HOTPATH_PARTITIONS"):
        from_settings(Settings(), environ={"ARB_HOTPATH_PARTITIONS": value})


def test_on_a_local_master_the_queries_beside_the_hot_path_take_half_the_partitions_and_a_cluster_all():
    from streaming.config import JobConfig
    from streaming.jobs import shuffle_partitions

    default, pinned = JobConfig(), JobConfig(shuffle_partitions=3)

    assert [shuffle_partitions(name, default, 2, "local[2]") for name in ("hotpath", "silver", "analytics_mid")] \
        == [2, 1, 1]
    assert shuffle_partitions("silver", default, 8, "local[*]") == 4
    assert shuffle_partitions("silver", default, 1, "local[1]") == 1
    assert shuffle_partitions("silver", default, 6, "spark://10.0.0.5:7077") == 6
    assert shuffle_partitions("silver", pinned, 2, "local[2]") == 3
    assert shuffle_partitions("hotpath", pinned, 2, "local[2]") == 3


def test_the_codegen_cache_holds_more_classes_than_spark_s_default_of_100():
    conf = spark_conf(SparkConfig(master="local[2]", jars_dir=str(REPO_ROOT / "data" / "jars" / "spark")))

    assert int(conf["spark.sql.codegen.cache.maxEntries"]) >= 1000


def test_the_queries_beside_the_hot_path_run_on_pairwise_co_prime_intervals_and_every_one_has_one():
    """Spark starts a processing-time batch at multiples of its interval: co-prime intervals rarely start together."""
    from math import gcd

    from streaming.analytics import JOB_CONFIG
    from streaming.config import TIMER_INTERVALS_S, StreamingConfig

    seconds = list(TIMER_INTERVALS_S.values())
    assert all(gcd(a, b) == 1 for i, a in enumerate(seconds) for b in seconds[i + 1:])
    config = StreamingConfig(lake="l", checkpoints="c", alert_log="a", metrics_dir="m", kafka_options={}, topics=None,
                             rules=None)
    triggers = {"bronze": config.bronze.trigger, "silver": config.silver.trigger,
                **{name: job.trigger for name, job in JOB_CONFIG.items()}}
    assert triggers == {name: f"{s} seconds" for name, s in TIMER_INTERVALS_S.items()}
