"""The one way to start Spark.

Works the same under `spark-submit` (the master and resources come from its command line)
and from plain Python (tests, `python -m jobs.X`), where the master and driver memory come
from the configuration. Session settings that make the jobs' results independent of the
machine (UTC time zone, the strict time parser) are applied in both cases.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from common import storage
from common.config import Config
from common.errors import UserInputError


def _under_spark_submit() -> bool:
    # spark-submit starts the Python driver with a gateway to its JVM already running.
    return "PYSPARK_GATEWAY_PORT" in os.environ


LOCAL_SHUFFLE_PARTITIONS = 8


def is_local(master: str) -> bool:
    return master.startswith("local")


def session_settings(cfg: Config, local: bool = True) -> dict[str, str]:
    """Spark SQL settings every job runs with. `spark.shuffle_partitions` 0 leaves the
    cluster's own setting alone (spark-defaults.conf or --conf); a local run then gets
    LOCAL_SHUFFLE_PARTITIONS instead of Spark's 200, which only suit a cluster."""
    settings = {
        "spark.sql.session.timeZone": "UTC",
        # A malformed time is a rejected row (null), never an exception from the parser.
        "spark.sql.legacy.timeParserPolicy": "CORRECTED",
        "spark.sql.ansi.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # Grouped vector means (Summarizer, collect_list) are object aggregates; Spark's default
        # falls back to sorting every row after 128 keys per task, which dominates their cost.
        "spark.sql.objectHashAggregate.sortBased.fallbackThreshold": "65536",
    }
    partitions = cfg["spark.shuffle_partitions"] or (LOCAL_SHUFFLE_PARTITIONS if local else 0)
    if partitions:
        settings["spark.sql.shuffle.partitions"] = str(partitions)
    settings.update({str(k): str(v) for k, v in cfg["spark.extra"].items()})
    return settings


def hive_settings(cfg: Config) -> dict[str, str]:
    """Warehouse and metastore settings for jobs that write tables."""
    warehouse = cfg["spark.warehouse_dir"] or storage.join(cfg["paths.work"], "warehouse")
    settings = {"spark.sql.warehouse.dir": storage.to_uri(warehouse)}
    if cfg["spark.metastore"] == "embedded":
        metastore = storage.to_uri(storage.join(cfg["paths.work"], "metastore_db"))
        if not metastore.startswith("file://"):
            raise ValueError("spark.metastore 'embedded' needs a local paths.work; on a cluster "
                             "set spark.metastore to 'external'")
        settings["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={metastore[len('file://'):]};create=true")
    elif cfg["spark.metastore"] != "external":
        raise ValueError(f"spark.metastore must be 'embedded' or 'external', got {cfg['spark.metastore']!r}")
    return settings


def get_spark(cfg: Config, app_name: str, hive: bool = False, check_paths: bool = True):
    """Return the active SparkSession, creating it from `cfg` when there is none. On a
    cluster, first check that the executors see the config's local paths (`check_paths`)."""
    submitted = _under_spark_submit()
    if not submitted and is_local(cfg["spark.master"]):
        # quiets the loopback warning; on a cluster driver it would advertise localhost
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if not submitted:
        os.environ.setdefault("PYSPARK_SUBMIT_ARGS",
                              f"--driver-memory {cfg['spark.driver_memory']} pyspark-shell")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if not submitted:   # (spark-submit.sh decides this from its own stderr)
        builder = builder.master(cfg["spark.master"]).config(
            "spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower())
    for key, value in session_settings(cfg).items():
        if key != "spark.sql.shuffle.partitions":   # set below, once the master is known
            builder = builder.config(key, value)
    if hive:
        builder = builder.enableHiveSupport()
        for key, value in hive_settings(cfg).items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in session_settings(cfg, is_local(spark.sparkContext.master)).items():
        # getOrCreate may return an existing session (tests): make the SQL settings hold
        # (static ones, fixed when the session started, cannot change and are left alone).
        if key.startswith("spark.sql.") and spark.conf.isModifiable(key):
            spark.conf.set(key, value)
    spark.sparkContext.setLogLevel("WARN")
    if check_paths and not is_local(spark.sparkContext.master):
        check_paths_visible(spark, cfg)
    return spark


# Configured paths the executors read or write. A `file://` one of them works on a cluster only
# if every node mounts it at the same place.
SHARED_PATH_KEYS = ("paths.work", "paths.train", "paths.dev", "paths.log",
                    "embed.precomputed_path", "spark.warehouse_dir")


PATH_PROBE_TASKS = 16


def check_paths_visible(spark, cfg: Config) -> None:
    """On a cluster, fail early and clearly when a local path of the config exists on the
    driver but not on the executors (otherwise a task fails later with a FileNotFoundError
    deep in a Java stack). `paths.work` is probed with a file the driver writes into it."""
    import uuid

    checks: dict[str, str] = {}
    probe_dir = storage.to_uri(cfg["paths.work"])
    if probe_dir.startswith("file://"):
        os.makedirs(probe_dir[len("file://"):], exist_ok=True)
        probe = os.path.join(probe_dir[len("file://"):], f".visible-{uuid.uuid4().hex}")
        open(probe, "w").close()
        checks["paths.work"] = probe
    for key in SHARED_PATH_KEYS[1:]:
        uri = storage.to_uri(cfg[key]) if cfg[key] else ""
        if uri.startswith("file://") and os.path.exists(uri[len("file://"):]):
            checks[key] = uri[len("file://"):]
    if not checks:
        return
    wanted = sorted(checks.items())

    def missing_here(_):
        import socket
        gone = [key for key, path in wanted if not os.path.exists(path)]
        yield socket.gethostname(), gone

    try:
        # Many tiny tasks, so that most likely every running executor gets one.
        tasks = PATH_PROBE_TASKS
        seen = spark.sparkContext.parallelize(range(tasks), tasks).mapPartitions(missing_here) \
            .filter(lambda host_gone: host_gone[1]).take(1)
    finally:
        if "paths.work" in checks:
            os.remove(checks["paths.work"])
    if seen:
        host, gone = seen[0]
        listed = "; ".join(f"{key} = {cfg[key]}" for key in gone)
        raise UserInputError(
            f"the executors cannot see {listed} (exists on the driver, not on executor host "
            f"{host}): on a cluster every path must be on storage all nodes share (hdfs://, "
            "s3a://, or a mount at the same place on every node)")


@contextmanager
def cached_for_job(spark):
    """Drop every cached table when the block ends, however it ends. A job caches what it
    reads more than once (parsed files, intermediate tables); a long process that runs job
    after job in one session (a backfill of many days, the tests) would otherwise fill the
    driver's and executors' memory with tables no one reads again."""
    try:
        yield spark
    finally:
        spark.catalog.clearCache()


# How a locked embedded metastore shows: Derby's own words, or (all that reaches Python) Hive
# failing to create its metastore client.
DERBY_LOCKED = ("XSDB6", "Another instance of Derby may have already booted",
                "Unable to instantiate org.apache.hadoop.hive.ql.metadata.SessionHiveMetaStoreClient")


@contextmanager
def metastore_errors(cfg: Config):
    """Turn the embedded Derby metastore's lock failure (a Hive stack trace from the first
    table operation) into one line that says which process holds what."""
    try:
        yield
    except Exception as err:  # noqa: BLE001  (py4j and Spark raise many kinds)
        text = f"{err!r} {getattr(err, 'desc', '')} {getattr(err, 'java_exception', '')}"
        cause = getattr(err, "__cause__", None) or getattr(err, "__context__", None)
        text += f" {cause!r}" if cause is not None else ""
        if cfg["spark.metastore"] == "embedded" and (
                any(marker in text for marker in DERBY_LOCKED)):
            path = storage.join(cfg["paths.work"], "metastore_db")
            raise UserInputError(
                f"another process holds the embedded metastore at {path} (Derby admits one "
                "process at a time): wait for it to finish, or set spark.metastore: external "
                "to use a shared metastore") from None
        raise
