"""score: every user's top-k news for day D, into a table partitioned by run_date.

    ./spark-submit.sh score [--run-date YYYY-MM-DD] [--config FILE] [--set key=value ...]

Reads the user state and candidate pool as of D 00:00 UTC and the exported model
(serving/inputs.py), scores the users in Spark tasks (serving/tasks.py) and swaps the date's
partition in one metastore operation (serving/table.py). The specification: README.md,
"Scoring and the recommendations table".
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time

from pyspark.sql import SparkSession, functions as F

from common import columns as C
from common import outputs, schemas, storage
from common.cli import StageTimer, run_main
from common.config import Config
from common.dates import day_or_today
from common.spark import get_spark, metastore_errors
from features import side_features as side
from serving import table, tasks
from features.arrays import load_pool
from serving.inputs import serving_inputs, serving_model


def _pause_for_tests() -> None:
    """Tests that kill the job between writing and publishing set this (seconds)."""
    pause = float(os.environ.get("NEWSREC_TEST_PAUSE_BEFORE_PUBLISH", "0"))
    if pause:
        print("score: rows written, publishing paused", file=sys.stderr, flush=True)
        time.sleep(pause)


def run(cfg: Config, run_date: str | None = None, spark: SparkSession | None = None) -> dict:
    run_date = day_or_today(run_date, "--run-date").isoformat()
    state, pool_pointer = serving_inputs(cfg, run_date)
    spark = spark or get_spark(cfg, "score", hive=True)
    timer = StageTimer("score")
    with timer.stage("load_inputs"):
        model_dir, metadata = serving_model(cfg, state, pool_pointer)
        pool = load_pool(f"{pool_pointer['path']}/candidate_pool")
        found = tasks.check_cascade(cfg, model_dir)
        tasks.check_memory_budget(cfg, metadata, len(pool["ids"]), found)
        writer = table.TableWriter(spark, cfg)
        with metastore_errors(cfg):
            table_location = writer.ensure_table()
            writer.owned_partition_location(run_date)
    settings = tasks.task_settings(cfg)
    if settings["mode"] == "cascade":
        with timer.stage("retrieval_index"):
            # the cascade's index of the pool, once per run (a cost of the pool, not the users)
            pool["retrieval_index"] = tasks.pool_index(model_dir, settings, pool)
    date_folder = f"{table_location.rstrip('/')}/{C.RUN_DATE}={run_date}"
    run_id = storage.begin_run(date_folder)     # leased: a concurrent run leaves it alone
    folder = f"{date_folder}/{run_id}"
    scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    with timer.stage("score_and_write"):
        # the schema is known: no job that reads the files' footers to infer it
        profiles = spark.read.schema(schemas.USER_STATE).parquet(f"{state['path']}/{outputs.STATE}")
        partitions = cfg["score.partitions"]
        # only what the scorer reads travels to Python (not the state's float64 vector sums)
        needed = profiles.select(C.USER_ID, C.CLICKED_NEWS, C.HISTORY_LEN, C.USER_VEC,
                                 side.user_dense(F.col(C.HISTORY_LEN),
                                                 F.col(C.IMPRESSIONS)).alias(C.USER_DENSE))
        # sorted within each task: a task's users fill the same batches in the same order on
        # every run, whatever order the shuffle delivered them in
        recs = needed.repartition(partitions, C.USER_ID).sortWithinPartitions(C.USER_ID).mapInPandas(
            tasks.score_partitions(spark.sparkContext.broadcast(pool), model_dir,
                                   metadata["version"], settings, scored_at),
            schema=table.RECOMMENDATIONS)
        recs.write.parquet(folder)
    with timer.stage("count") as stage:
        written = spark.read.parquet(folder)
        stats = written.agg(F.count("*").alias("rows"), F.countDistinct(C.USER_ID).alias("users"),
                            F.sum((F.col(C.MODEL_VERSION) == tasks.POPULARITY_VERSION).cast("int"))
                            .alias("popularity_rows")).first()
        stage.rows = int(stats["rows"])
        profile_stats = profiles.agg(F.count("*").alias("users"),
                                     F.sum((F.col(C.HISTORY_LEN) == 0).cast("int")).alias("cold")).first()
    _pause_for_tests()
    with timer.stage("publish"):
        previous = writer.swap_partition(run_date, folder)
        storage.end_run(date_folder, run_id)
        removed = table.remove_stale_attempts(writer, run_date, date_folder)
    cold = int(profile_stats["cold"] or 0)
    warm_users = int(profile_stats["users"]) - (cold if cfg["score.cold_users"] != "model" else 0)
    pairs = warm_users * len(pool["ids"])
    summary = {
        "run_id": run_id, "run_date": run_date, "table": f"{writer.database}.{writer.table}",
        "partition_location": folder, "replaced_location": previous,
        "superseded": run_id in removed, "removed_runs": sorted(set(removed) - {run_id}),
        "model_version": metadata["version"], "state_run": state["run_id"],
        "pool_run": pool_pointer["run_id"], "as_of": state["summary"]["as_of"],
        "users": int(profile_stats["users"]), "users_scored_by_model": warm_users,
        "cold_users": cold, "cold_policy": cfg["score.cold_users"],
        "users_written": int(stats["users"]), "rows_written": int(stats["rows"]),
        "candidates": len(pool["ids"]), "mode": cfg["score.mode"],
        "retrieve": cfg["score.retrieve"] if cfg["score.mode"] == "cascade" else None,
        "pairs_scored": pairs,
        "pairs_per_second": round(pairs / max(timer.seconds["score_and_write"], 1e-9)),
        "seconds": timer.seconds,
    }
    storage.write_text(
        outputs.score_summary_uri(cfg, run_date, run_id),
        json.dumps(summary, indent=2, sort_keys=True))
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_main("Write every user's top-k news into the recommendations table.",
                    lambda cfg, args: run(cfg, args.run_date), argv,
                    extra_arguments=lambda p: p.add_argument(
                        "--run-date", help="partition to (re)write, YYYY-MM-DD (default: today, UTC)"))


if __name__ == "__main__":
    sys.exit(main())
