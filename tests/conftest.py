"""Shared fixtures: one real local SparkSession for the whole test session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(config, items):
    """The standalone-cluster module first: run-tests.sh runs the files on two workers
    (pytest-xdist, --dist loadfile), and this longest file then runs beside the others
    rather than after them."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("cluster") else 1)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from common.config import load_config
    from common.spark import get_spark

    work = tmp_path_factory.mktemp("spark-session")
    # One session runs hundreds of jobs: keep the UI's per-query history small, or its plan
    # metrics fill the driver's heap long before the tests end.
    retained = ("{spark.sql.ui.retainedExecutions: 20, spark.ui.retainedJobs: 50, "
                "spark.ui.retainedStages: 50, spark.ui.retainedTasks: 2000}")
    cfg = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=4",
                                 "spark.driver_memory=2g", f"paths.work={work}",
                                 f"spark.extra={retained}"])
    session = get_spark(cfg, "newsrec-tests", hive=True)
    yield session
    session.stop()
