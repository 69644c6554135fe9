"""Every stage on a real Spark standalone cluster (a master and two 1-core workers on
127.0.0.1, deploy/local_cluster.py), through ./spark-submit.sh in client mode with the packed
environment shipped by the launcher (spark.ship_environment: pack).

The workers start in their own mount namespace where the driver's venv/bin and one
driver-only folder are empty: an executor that fell back on the driver's interpreter, or a job
that read a path only the driver has, would fail. The tables come out row-identical to the
same stages run on local[2] (the test session's Spark), and the trained model is scored and
evaluated on both sides.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from common import outputs, storage
from common.cli import printed_summary
from common.config import load_config
from deploy import local_cluster
from features.news_vectors import current_vectors
from jobs import build_features, daily, embed_news, evaluate
from synthetic.generate import generate
from synthetic.writer import write_daily_log

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.spark]

ROOT = Path(__file__).resolve().parent.parent
AS_OF = dt.datetime(2019, 11, 15)
RUN_DATE = "2019-11-15"
STAGE_TIMEOUT_S = 900
# One setting list for both sides; only paths.work and the table differ. A cluster's own
# spark.sql.shuffle.partitions (200 by default) would make this tiny sample a thousand tiny
# tasks; the local side runs with the same 4 partitions.
SETTINGS = ["spark.shuffle_partitions=4", "embed.encoder=hashing", "embed.postprocess=project", "embed.hashing_dim=16", "embed.projection_dim=0",
            "features.min_row_groups=4", "features.files=4", "features.candidate_window_hours=24",
            "score.k=5", "train.epochs=1", "train.batch_size=64", "train.spark_num_proc=2",
            "train.validation_rows=500", "model.deep_units=[16]"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    driver_only = root / "driver-only"
    driver_only.mkdir()
    hide = (str(driver_only), str(Path(sys.prefix) / "bin")) if local_cluster.can_hide() else ()
    url = local_cluster.start(root / "daemons", workers=2, cores=1, memory="3g", hide=hide)
    try:
        yield {"url": url, "root": root, "driver_only": driver_only if hide else None}
    finally:
        local_cluster.stop(root / "daemons")


def submit(cluster, job, *args, check=True) -> subprocess.CompletedProcess:
    command = [str(ROOT / "spark-submit.sh"), job, "--set", "spark.ship_environment=pack",
               *args, "--", "--master", cluster["url"], "--conf", "spark.executor.memory=1g"]
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("SPARK_LOCAL_IP", None)   # the launcher decides; a cluster driver must not bind lo
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=STAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{job} on the cluster did not end within {STAGE_TIMEOUT_S} s; the end of "
                    f"its driver's log, then of its executors':\n{_tail(err.stderr)}\n"
                    + executor_logs(cluster))
    stages = [line for line in result.stderr.splitlines() if line.startswith(f"[{job}] ")]
    print(f"cluster: {job} took {time.monotonic() - started:.1f} s", *stages, sep="\n  ",
          file=sys.stderr)
    if check and result.returncode != 0:
        pytest.fail(f"{job} on the cluster failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def _tail(text, lines: int = 60, info: bool = False) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    kept = [line for line in (text or "").splitlines() if info or " INFO " not in line]
    return "\n".join(kept[-lines:])


def executor_logs(cluster) -> str:
    """The end of each executor's stderr of the cluster's latest application: where a stage
    that never ended was waiting."""
    daemons = cluster["root"] / "daemons"
    apps = sorted(daemons.glob("worker-*/app-*"), key=lambda p: p.name)
    if not apps:
        return "(no executor logs)"
    latest = apps[-1].name
    return "\n".join(f"--- {log}\n{_tail(log.read_text(errors='replace'), 40, info=True)}"
                     for log in sorted(daemons.glob(f"worker-*/{latest}/*/stderr")))


def summary_of(result: subprocess.CompletedProcess) -> dict:
    return printed_summary(result.stdout)


@contextlib.contextmanager
def beside(work):
    """Run `work()` in a thread while the block runs; re-raise its error at the end."""
    errors = []

    def target():
        try:
            work()
        except BaseException as err:  # noqa: BLE001  re-raised below
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if errors:
        raise errors[0]


def as_settings(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def read_table(folder: str, keys: list[str]) -> pd.DataFrame:
    path = folder[len("file://"):] if folder.startswith("file://") else folder
    frame = pq.read_table(path).to_pandas()
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for column in a.columns:
        first, second = a[column], b[column]
        if len(first) and isinstance(first.iloc[0], (np.ndarray, list)):
            assert [list(x) for x in first] == [list(x) for x in second], column
        else:
            assert list(first) == list(second), column


@pytest.fixture(scope="module")
def pipelines(spark, cluster, tmp_path_factory):
    """The same stages on the cluster (through spark-submit.sh) and on local[2]."""
    root = tmp_path_factory.mktemp("cluster_pipeline")
    generate("tiny", str(root / "mind"), seed=11)
    write_daily_log(str(root / "mind"), str(root / "log"))
    common = [f"paths.log={root / 'log'}", *SETTINGS]
    on_cluster = [*common, f"paths.work={root / 'cluster'}",
                  f"score.table_location={root / 'cluster_table'}", "score.table=recs_cluster"]
    local = load_config(overrides=[*common, f"paths.work={root / 'local'}",
                                   f"score.table_location={root / 'local_table'}",
                                   "score.table=recs_local"])
    cluster_cfg = load_config(overrides=on_cluster)
    results = {"cluster_cfg": cluster_cfg, "local_cfg": local}

    # The local side runs in a thread beside the cluster's spark-submit processes (which wait
    # on JVM starts and archive unpacking more than they compute).
    def local_inputs():
        embed_news.run(local, spark)
        build_features.run(local, spark, as_of=AS_OF)

    def local_outputs():
        results["local_evaluate"] = evaluate.evaluate(local, spark)
        served = local.with_overrides([f"score.model_version={results['train']['version']}"])
        results["local_daily"] = daily.run(served, dt.date.fromisoformat(RUN_DATE), spark=spark)

    with beside(local_inputs):
        submit(cluster, "embed_news", *as_settings(on_cluster))
        submit(cluster, "build_features", *as_settings(on_cluster), "--as-of", RUN_DATE)
        results["train"] = summary_of(submit(cluster, "train", *as_settings(on_cluster)))
    # The local side evaluates and scores the model the cluster trained.
    shutil.copytree(root / "cluster" / "models", root / "local" / "models")
    with beside(local_outputs):
        results["evaluate"] = summary_of(submit(cluster, "evaluate", *as_settings(on_cluster)))
        results["daily"] = summary_of(submit(
            cluster, "daily", *as_settings(on_cluster), "--date", RUN_DATE,
            "--set", f"score.model_version={results['train']['version']}"))
    return results


def test_executors_run_the_shipped_environment_and_see_no_driver_only_path(cluster):
    """doctor reports the executors' Python (the unpacked archive, not the driver's venv,
    whose bin/ the workers cannot even see), then fails in one line on a path only the
    driver has."""
    hidden = cluster["driver_only"]
    args = []
    if hidden is not None:
        logs = hidden / "log"
        logs.mkdir()
        (logs / "news.tsv").write_text("N1\tnews\tsports\tA title\t\t\t\t\n")
        args = ["--set", f"paths.log={logs}"]
    result = submit(cluster, "doctor", *args, check=False)
    report = summary_of(result)
    executors = report["executors"]
    assert len({e["cwd"].split("/worker-")[1].split("/")[0] for e in executors}) == 2
    for executor in executors:
        assert executor["python"].startswith(str(cluster["root"] / "daemons" / "worker-"))
        assert executor["python"].endswith("/environment/bin/python")
        assert executor["project"].endswith("newsrec.zip")
        assert executor["packages"] == report["driver"]["packages"]
    assert report["driver"]["python"] == str(Path(sys.prefix) / "bin" / "python")
    if hidden is None:
        assert result.returncode == 0
        pytest.skip("this machine does not let the workers run in their own mount namespace: "
                    "the driver-only path was not tried")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    shown = "\n".join(line for line in result.stderr.splitlines() if " INFO " not in line)
    assert result.returncode == 1 and len(errors) == 1, shown[-3000:]
    assert f"the executors cannot see paths.log = {logs}" in errors[0]
    assert "hdfs://" in errors[0]


def test_news_vectors_and_features_are_row_identical(pipelines):
    cluster_cfg, local_cfg = pipelines["cluster_cfg"], pipelines["local_cfg"]
    vectors = [read_table(current_vectors(c)["vectors_uris"][0], ["news_id"])
               for c in (cluster_cfg, local_cfg)]
    assert_same_rows(*vectors)
    rows = [outputs.current_as_of(c, AS_OF, outputs.ROWS, "") for c in (cluster_cfg, local_cfg)]
    for table, keys in (("train", ["impression_id", "news_id"]),
                        ("dev", ["impression_id", "news_id"]),
                        ("dev_impressions", ["impression_id"]), ("news_popularity", ["news_id"])):
        assert_same_rows(*[read_table(f"{r['path']}/{table}", keys) for r in rows])
    for kind, table, key in ((outputs.STATE, "state", "user_id"),
                             (outputs.POOL, "candidate_pool", "news_id")):
        pointers = [outputs.current_as_of(c, AS_OF, kind, "") for c in (cluster_cfg, local_cfg)]
        assert_same_rows(*[read_table(f"{p['path']}/{table}", [key]) for p in pointers])


def test_training_ran_as_two_ranks_on_the_executors(pipelines):
    summary = pipelines["train"]
    assert summary["status"] == "trained" and summary["ranks"] == 2
    assert summary["spark_num_proc"] == 2


def test_evaluation_and_recommendations_are_identical(pipelines):
    ours, theirs = [storage.current_run(outputs.evaluation_root(pipelines[c]),
                                        "evaluate")["summary"] for c in ("cluster_cfg", "local_cfg")]
    assert ours["model_version"] == theirs["model_version"] == pipelines["train"]["version"]
    # every scored row is identical (above); the metrics are sums over impressions merged in
    # the order the tasks finish, so they agree to the last bits of a double, not the bits
    assert set(ours["metrics"]) == set(theirs["metrics"]) and "dcn" in ours["metrics"]
    for scorer, metrics in ours["metrics"].items():
        for name, value in metrics.items():
            assert value == pytest.approx(theirs["metrics"][scorer][name], rel=1e-12, abs=1e-15)
    on_cluster = pipelines["daily"]["score"]
    local = pipelines["local_daily"]["score"]
    assert on_cluster["rows_written"] == local["rows_written"] > 0
    keys = ["user_id", "rank"]
    tables = [read_table(s["partition_location"], keys).drop(columns=["scored_at"])
              for s in (on_cluster, local)]
    # the same lists, rank for rank; the scores are float32 model outputs and agree to a few
    # units in their last place (up to 3 ulps apart between the two sides, seen on
    # 2026-12-03; the cause is not isolated)
    scores = [t.pop("score").to_numpy() for t in tables]
    assert_same_rows(*tables)
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-6, atol=0)
