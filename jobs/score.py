"""score: every user's top-k news for day D, into a table partitioned by run_date.

    ./spark-submit.sh score [--run-date YYYY-MM-DD] [--config FILE] [--set key=value ...]

Recommends for day D (default: today, UTC) from the user state and candidate pool as of D
00:00 UTC (common/outputs.py), built by `./spark-submit.sh daily --date D` or
`./spark-submit.sh build_features --as-of D`; without them, or when D is more than
`score.max_staleness_hours` after the log's last impression, it fails and writes nothing.
The model must have been trained on the same news vectors as that state (its metadata
records their identity).
Users are spread over Spark tasks; each task scores batches of users against the whole pool
matrix with vectorized numpy (dcn/scoring.py: factorized where the model allows, else the
plain model call), removes the news each user already clicked and keeps the exact top k by
partial selection. User x news pairs never become Spark rows. The model is loaded once per
Python worker.

Safe to rerun: the rows of a run go to a new folder `<table location>/run_date=<date>/<run_id>`
and only when it is complete does one metastore operation point the date's partition at it
(ADD PARTITION or SET LOCATION). A rerun replaces that date only; a run killed before that
step leaves the partition as it was (its folder is deleted by the next run of that date).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession, functions as F

from common import columns as C
from common import schemas, storage
from common.cli import StageTimer, run_main
from common.errors import UserInputError
from common.config import Config
from common.dates import day_or_today
from common.names import validated_identifier
from common.spark import get_spark, metastore_errors
from common import outputs
from dcn import export
from features import side_features as side

MODEL_VERSION, SCORED_AT, RUN_DATE = C.MODEL_VERSION, C.SCORED_AT, C.RUN_DATE
POPULARITY_VERSION = "popularity"
RECOMMENDATIONS = schemas.RECOMMENDATIONS
TABLE_DDL = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in RECOMMENDATIONS.fields)

# per Python worker: model folder -> scorer
_SCORERS: dict = {}


def load_pool(uri: str) -> dict:
    """The candidate pool as numpy arrays sorted by news id (bounded by the news shown in one
    window, not by users, so it is read on the driver and broadcast)."""
    import pyarrow.parquet as pq
    fs, path = storage.filesystem(uri)
    table = pq.read_table(path, filesystem=fs).sort_by(C.NEWS_ID)
    if table.num_rows == 0:
        raise UserInputError(f"the candidate pool {uri} is empty: nothing to recommend "
                             "(widen features.candidate_window_hours?)")
    vectors = np.stack(table.column(C.NEWS_VEC).to_numpy(zero_copy_only=False)).astype(np.float32)
    dense = np.stack(table.column(C.NEWS_DENSE).to_numpy(zero_copy_only=False)).astype(np.float32)
    return {"ids": np.asarray(table.column(C.NEWS_ID).to_pylist(), dtype=object),
            "vectors": vectors, "dense": dense,
            "category": table.column(C.CATEGORY).to_numpy().astype(np.int32),
            "subcategory": table.column(C.SUBCATEGORY).to_numpy().astype(np.int32),
            "topic": np.stack(table.column(C.TOPIC_VEC).to_numpy(zero_copy_only=False)).astype(np.float32),
            # the smoothed click rate as of the run date (side_features.NEWS_DENSE_NAMES)
            "ctr": dense[:, side.NEWS_DENSE_NAMES.index("smoothed_ctr")].astype(np.float64)}


def _get_scorer(model_folder: str, mode: str, threads: int):
    if model_folder not in _SCORERS:
        if threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
            os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
        # numpy only when the export holds the factorized scorer's arrays
        scorer = export.load_factorized(model_folder) if mode != "plain" else None
        if scorer is None:
            if threads:
                import tensorflow as tf
                try:
                    tf.config.threading.set_intra_op_parallelism_threads(threads)
                    tf.config.threading.set_inter_op_parallelism_threads(threads)
                except RuntimeError:  # TensorFlow already initialized in this reused worker
                    pass
            from dcn.scoring import make_scorer
            model, _ = export.load_model(model_folder)
            scorer = make_scorer(model, mode)
        _SCORERS[model_folder] = scorer
    return _SCORERS[model_folder]


def _rows(users, indices, valid, scores, pool_ids, version, scored_at) -> pd.DataFrame:
    user_col, rank_col, news_col, score_col = [], [], [], []
    for row, user in enumerate(users):
        keep = indices[row][valid[row]]
        user_col.extend([user] * len(keep))
        rank_col.extend(range(1, len(keep) + 1))
        news_col.extend(pool_ids[keep])
        score_col.extend(scores[row, keep])
    return pd.DataFrame({C.USER_ID: user_col, C.RANK: np.asarray(rank_col, dtype=np.int32),
                         C.NEWS_ID: news_col, C.SCORE: np.asarray(score_col, dtype=np.float32),
                         MODEL_VERSION: version, SCORED_AT: scored_at})


def task_settings(cfg: Config) -> dict:
    """The settings `score_partitions` reads, as plain values shipped to the tasks."""
    return {key: cfg[f"score.{key}"] for key in
            ("k", "user_batch_size", "mode", "cold_users", "threads_per_task",
             "memory_budget_mb")}


def score_partitions(pool_broadcast, model_folder: str, version: str, settings: dict,
                     scored_at: dt.datetime):
    """The mapInPandas function: profiles in, recommendation rows out."""
    k, cap, mode = settings["k"], settings["user_batch_size"], settings["mode"]
    budget = settings["memory_budget_mb"] * 2 ** 20
    cold_policy, threads = settings["cold_users"], settings["threads_per_task"]

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from dcn.scoring import top_k, users_per_batch
        pool = pool_broadcast.value
        n_news = len(pool["ids"])
        position = {news_id: i for i, news_id in enumerate(pool["ids"])}
        scorer, batch, news = None, None, None
        for frame in frames:
            if scorer is None:
                scorer = _get_scorer(model_folder, mode, threads)
                batch = users_per_batch(scorer.memory(n_news), n_news, budget, cap)
                news = scorer.news_side(pool["vectors"], pool["dense"], pool["category"],
                                        pool["subcategory"], pool["topic"])
            for start in range(0, len(frame), batch):
                part = frame.iloc[start:start + batch]
                excluded = np.zeros((len(part), n_news), dtype=bool)
                for row, clicked in enumerate(part[C.CLICKED_NEWS]):
                    cols = [position[n] for n in clicked if n in position]
                    excluded[row, cols] = True
                cold = part[C.HISTORY_LEN].to_numpy() == 0
                warm = ~cold if cold_policy != "model" else np.ones(len(part), dtype=bool)
                if warm.any():
                    users = scorer.user_side(
                        np.stack(part[C.USER_VEC].to_numpy()[warm]).astype(np.float32),
                        np.stack(part[C.USER_DENSE].to_numpy()[warm]).astype(np.float32))
                    logits = scorer.logits(users, news)
                    idx, ok = top_k(logits, k, excluded[warm])
                    yield _rows(part[C.USER_ID].to_numpy()[warm], idx, ok,
                                1.0 / (1.0 + np.exp(-logits)), pool["ids"], version, scored_at)
                    del logits
                if cold.any() and cold_policy == "popularity":
                    # ranked by the smoothed click rate, which is also the score
                    popularity = np.broadcast_to(pool["ctr"], (int(cold.sum()), n_news))
                    idx, ok = top_k(popularity, k, excluded[cold])
                    yield _rows(part[C.USER_ID].to_numpy()[cold], idx, ok, popularity,
                                pool["ids"], POPULARITY_VERSION, scored_at)
    return run


class TableWriter:
    """The recommendations table and the atomic replacement of one date's partition."""

    def __init__(self, spark: SparkSession, cfg: Config):
        self.spark = spark
        self.database = validated_identifier(cfg["score.database"], "score.database")
        self.table = validated_identifier(cfg["score.table"], "score.table")
        self.name = f"`{self.database}`.`{self.table}`"
        self.location = cfg["score.table_location"]

    def ensure_table(self) -> str:
        """Create the database and table if needed; return the table's location."""
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        location = f" LOCATION '{storage.to_uri(self.location)}'" if self.location else ""
        self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.name} ({TABLE_DDL}, `{RUN_DATE}` string) "
                       f"USING parquet PARTITIONED BY (`{RUN_DATE}`){location}")
        described = self.spark.sql(f"DESCRIBE TABLE EXTENDED {self.name}").collect()
        return next(r["data_type"] for r in described if r["col_name"] == "Location")

    def partition_location(self, run_date: str) -> str | None:
        try:
            rows = self.spark.sql(f"DESCRIBE TABLE EXTENDED {self.name} "
                                  f"PARTITION (`{RUN_DATE}`='{run_date}')").collect()
        except Exception:  # noqa: BLE001  (Spark raises NoSuchPartitionException)
            return None
        return next((r["data_type"] for r in rows if r["col_name"] == "Location"), None)

    def swap_partition(self, run_date: str, folder: str) -> str | None:
        """Point the date's partition at `folder` in one metastore operation; return the
        previous location (None if the date is new)."""
        previous = self.partition_location(run_date)
        spec = f"PARTITION (`{RUN_DATE}`='{run_date}')"
        if previous is None:
            self.spark.sql(f"ALTER TABLE {self.name} ADD {spec} LOCATION '{folder}'")
        else:
            self.spark.sql(f"ALTER TABLE {self.name} {spec} SET LOCATION '{folder}'")
        self.spark.sql(f"REFRESH TABLE {self.name}")
        return previous


def _pause_for_tests() -> None:
    """Tests that kill the job between writing and publishing set this (seconds)."""
    pause = float(os.environ.get("NEWSREC_TEST_PAUSE_BEFORE_PUBLISH", "0"))
    if pause:
        print("score: rows written, publishing paused", file=sys.stderr, flush=True)
        time.sleep(pause)


def remove_stale_attempts(writer: "TableWriter", run_date: str, date_folder: str) -> list[str]:
    """Delete the folders of this date that nothing points at: earlier, replaced or killed
    runs. Safe against a concurrent run of the same date: a folder whose lease is alive is
    left alone, and the partition's location is read from the metastore after the lease (a
    run marks its lease published only after its swap), right before each deletion."""
    removed = []
    for name, is_dir in storage.list_dir(date_folder):
        if not is_dir or storage.may_be_in_progress(date_folder, name):
            continue
        current = writer.partition_location(run_date)
        if current is not None and current.rstrip("/").rsplit("/", 1)[-1] == name:
            continue
        storage.delete_dir(f"{date_folder}/{name}")
        storage.delete_file(storage.lease_uri(date_folder, name))
        removed.append(name)
    return removed


def check_memory_budget(cfg: Config, metadata: dict, n_news: int) -> None:
    """On the driver: a budget in which not even one user fits next to the pool is an error
    now, not in every task later."""
    from dcn.scoring import MemoryBudgetTooSmall, spec_memory, users_per_batch
    if "model_spec" not in metadata:
        return
    try:
        users_per_batch(spec_memory(metadata["model_spec"], n_news, cfg["score.mode"]), n_news,
                        cfg["score.memory_budget_mb"] * 2 ** 20, cfg["score.user_batch_size"])
    except MemoryBudgetTooSmall as err:
        raise UserInputError(str(err)) from None


def serving_inputs(cfg: Config, run_date: str) -> tuple[dict, dict]:
    """(state pointer, pool pointer) as of the run date's 00:00 UTC, checked for staleness."""
    as_of = outputs.day_start(dt.date.fromisoformat(run_date))
    how = (f"./spark-submit.sh daily --date {run_date} (or ./spark-submit.sh build_features "
           f"--as-of {run_date})")
    try:
        state = outputs.current_as_of(cfg, as_of, outputs.STATE, how)
        pool = outputs.current_as_of(cfg, as_of, outputs.POOL, how)
    except storage.RunNotFound as err:
        raise UserInputError(f"cannot score {run_date}: {err}") from None
    data_end = state["summary"].get("data_end")
    if not data_end:
        raise UserInputError(f"cannot score {run_date}: the log holds no impression before it")
    hours = (as_of - dt.datetime.fromisoformat(data_end)).total_seconds() / 3600
    if hours > cfg["score.max_staleness_hours"]:
        raise UserInputError(
            f"cannot score {run_date}: the log's last impression before it is at {data_end}, "
            f"{hours:.1f} hours earlier (score.max_staleness_hours is "
            f"{cfg['score.max_staleness_hours']}): the log is missing days")
    return state, pool


def run(cfg: Config, run_date: str | None = None, spark: SparkSession | None = None) -> dict:
    run_date = day_or_today(run_date, "--run-date").isoformat()
    state, pool_pointer = serving_inputs(cfg, run_date)
    spark = spark or get_spark(cfg, "score", hive=True)
    timer = StageTimer()
    with timer.stage("load_inputs"):
        try:
            model_dir = export.model_folder(cfg, cfg["score.model_version"])
        except storage.RunNotFound as err:
            raise UserInputError(str(err)) from None
        metadata = export.load_metadata(model_dir)
        dim = state["summary"]["dim"]
        if (metadata["user_dim"], metadata["news_dim"]) != (dim, dim):
            raise UserInputError(
                f"model {metadata.get('version')} expects user_vec width {metadata['user_dim']} and "
                f"news_vec width {metadata['news_dim']}, but the state ({state['path']}) has "
                f"width {dim}: retrain, or score with a model trained on these features")
        try:
            export.check_lineage(metadata, state["summary"].get("news_vectors"), state["path"])
        except ValueError as err:
            raise UserInputError(str(err)) from None
        try:
            export.check_side_features(metadata, pool_pointer["summary"].get("side_features"),
                                       f"the candidate pool {pool_pointer['path']}")
        except ValueError as err:
            raise UserInputError(str(err)) from None
        pool = load_pool(f"{pool_pointer['path']}/candidate_pool")
        check_memory_budget(cfg, metadata, len(pool["ids"]))
        writer = TableWriter(spark, cfg)
        with metastore_errors(cfg):
            table_location = writer.ensure_table()
    date_folder = f"{table_location.rstrip('/')}/{RUN_DATE}={run_date}"
    run_id = storage.begin_run(date_folder)     # leased: a concurrent run leaves it alone
    folder = f"{date_folder}/{run_id}"
    scored_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    settings = task_settings(cfg)
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
            score_partitions(spark.sparkContext.broadcast(pool), model_dir, metadata["version"],
                             settings, scored_at), schema=RECOMMENDATIONS)
        recs.write.parquet(folder)
    with timer.stage("count"):
        written = spark.read.parquet(folder)
        stats = written.agg(F.count("*").alias("rows"), F.countDistinct(C.USER_ID).alias("users"),
                            F.sum((F.col(MODEL_VERSION) == POPULARITY_VERSION).cast("int"))
                            .alias("popularity_rows")).first()
        profile_stats = profiles.agg(F.count("*").alias("users"),
                                     F.sum((F.col(C.HISTORY_LEN) == 0).cast("int")).alias("cold")).first()
    _pause_for_tests()
    with timer.stage("publish"):
        previous = writer.swap_partition(run_date, folder)
        storage.end_run(date_folder, run_id)
        removed = remove_stale_attempts(writer, run_date, date_folder)
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
        "candidates": len(pool["ids"]), "pairs_scored": pairs,
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
