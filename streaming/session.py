"""The one SparkSession factory: local by default, any master on request, Delta and Kafka from the local jar cache.

Jars come from `data/jars/spark` (fetched once by `make setup`); nothing is downloaded at run time. The state store
provider is a per-query choice (see `streaming.jobs.start_query`): Spark records it in each query's checkpoint.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
import tempfile
from typing import TYPE_CHECKING

from arb.settings import ConfigError
from streaming.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def local_cores(master: str) -> int:
    """Cores a `local[N]` / `local[*]` master uses; 2 for anything else (a cluster sets its own partitions)."""
    match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master)
    if master == "local" or (match is None and master.startswith("local")):
        return 1
    if match is None:
        return 2
    if match.group(1) == "*":
        return os.cpu_count() or 2
    return int(match.group(1))


# FAIR scheduling between the queries of one application: the hot path's pool is served first (minShare 1 core) and
# outweighs the default pool, so on 2 cores its micro-batch does not queue behind a bronze or silver Delta write.
HOTPATH_POOL = "hotpath"
POOLS_XML = f"""<?xml version="1.0"?>
<allocations>
  <pool name="{HOTPATH_POOL}"><schedulingMode>FIFO</schedulingMode><weight>8</weight><minShare>1</minShare></pool>
  <pool name="default"><schedulingMode>FIFO</schedulingMode><weight>1</weight><minShare>0</minShare></pool>
</allocations>
"""


# Generated classes kept per JVM: the working set of all queries with room to spare (a static conf: set at start).
CODEGEN_CACHE_ENTRIES = 1000


def pools_file() -> str:
    """The allocation file, written once per content under the temp dir (the driver reads it at start)."""
    digest = hashlib.sha256(POOLS_XML.encode()).hexdigest()[:12]
    path = os.path.join(tempfile.gettempdir(), f"arb-spark-pools-{digest}.xml")
    if not os.path.exists(path):
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), delete=False, suffix=".xml") as f:
            f.write(POOLS_XML)
        os.replace(f.name, path)
    return path


def spark_conf(config: SparkConfig) -> dict[str, str]:
    """Every setting the factory applies, as a plain dict (tested, and logged at start)."""
    jars = sorted(glob.glob(os.path.join(config.jars_dir, "*.jar")))
    if not any("delta-spark" in j for j in jars) or not any("spark-sql-kafka" in j for j in jars):
        raise ConfigError(f"Delta / Kafka jars not found in {config.jars_dir}: run `make setup`")
    partitions = config.shuffle_partitions or local_cores(config.master)
    conf = {
        "spark.jars": ",".join(jars),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.driver.memory": config.driver_memory,
        "spark.ui.enabled": str(config.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.default.parallelism": str(partitions),
        "spark.sql.session.timeZone": "UTC",
        # Delta's log replay otherwise runs 50 tasks per snapshot: seconds on 2 cores.
        "spark.databricks.delta.snapshotPartitions": str(max(1, partitions)),
        "spark.sql.adaptive.enabled": "false",  # AQE re-plans each micro-batch; nothing to gain on tiny batches
        # Every micro-batch generates its code again and looks it up in this cache by source text. The default 100
        # entries are fewer than the classes `arb stream all`'s queries cycle through, so each batch compiled them
        # anew (Janino) and the JIT compiled those new classes again: ~0.3 core on 2 (docs/BENCHMARKS.md).
        "spark.sql.codegen.cache.maxEntries": str(CODEGEN_CACHE_ENTRIES),
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.streaming.stateStore.stateSchemaCheck": "true",
        "spark.sql.streaming.metricsEnabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
        # Python workers connect back within this; 15 s (the default) is not enough on an overloaded 2-core box.
        "spark.python.authenticate.socketTimeout": "120s",
        # Python workers run the driver's interpreter (the venv: pandas, pyarrow, arbitrage).
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.databricks.delta.optimizeWrite.enabled": "false",
        "spark.databricks.delta.autoCompact.enabled": "false",
        "spark.sql.streaming.minBatchesToRetain": "20",
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": pools_file(),
    }
    if config.master.startswith("local"):
        # The driver's RPC and block manager otherwise listen on the machine's address; locally nothing needs that.
        conf["spark.driver.bindAddress"] = config.driver_host
        conf["spark.driver.host"] = config.driver_host
    conf.update(config.extra)
    return conf


def create_session(config: SparkConfig) -> "SparkSession":
    """Build (or return the running) SparkSession for `config`."""
    from pyspark.sql import SparkSession

    # PySpark ships PYSPARK_PYTHON with every Python UDF: without it workers run `python3` from PATH, not the venv.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(config.master).appName(config.app_name)
    for key, value in spark_conf(config).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.log_level)
    return spark
