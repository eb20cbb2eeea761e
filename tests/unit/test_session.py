"""The session factory's scheduling: the hot path's pool is served before the other queries'."""

from __future__ import annotations

import xml.etree.ElementTree as ET

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
