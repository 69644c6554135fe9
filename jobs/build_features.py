"""build_features: the log as of a moment -> the trainer's, evaluator's and scorer's inputs.

    ./spark-submit.sh build_features [--as-of YYYY-MM-DD[THH:MM:SS]] [--config FILE] [--set ...]

Uses only impressions strictly before the as-of moment T (default: just after the last
impression of the log), read from MIND folders or a daily log (jobs/behavior_log.py). The
user vector of every impression and every user's state come from the one definition of a
user's state (jobs/user_state.py). Outputs, each published atomically under
`paths.work/features/as_of=<T>/` (common/outputs.py):

- `rows/`: `train/` and `dev/` feature rows (schemas.FEATURE_ROWS): one row per kept candidate
  with a vector; `features.npratio` non-clicked candidates per clicked one in train, chosen by
  a seeded hash so a rerun keeps the same ones, every candidate in dev. With MIND folders an
  impression keeps its folder's split; with a daily log the last `features.dev_days` days
  before T are dev. Also `news_popularity/` (train impressions and clicks per news, a
  baseline), `dev_impressions/` (each dev impression's candidates in listed order, for the
  evaluation), `rejected/` (malformed input rows with file, line, column and reason).
- `state/`: every user's state as of T (schemas.USER_STATE): the scoring profiles.
- `pool/`: `candidate_pool/`, the news shown within `features.candidate_window_hours` before T
  with their impressions and clicks there.

Set logic is DataFrame expressions and the vector means a vectorized Arrow kernel; no per-user
data goes to the driver. Parquet is written for Petastorm: vectors as array<float>, at least
`features.min_row_groups` row groups per table (sized from the table's estimated bytes, at most
`features.row_group_mb`), impressions spread over `features.files` files by a seeded hash, so
no shard holds one time range.
"""
from __future__ import annotations

import datetime as dt
import json
import sys

from pyspark.sql import Column, DataFrame, SparkSession, functions as F

from common import columns as C
from common import outputs, schemas, storage
from common.cli import StageTimer, UserInputError, run_main
from common.config import Config
from common.spark import cached_for_job, get_spark
from jobs import behavior_log as log
from jobs import user_state
from jobs.embed_news import load_vectors

TRAIN, DEV = "train", "dev"
DEV_IMPRESSIONS = "dev_impressions"
BUILD_COMMAND = "./spark-submit.sh build_features --as-of {as_of}"


def current_rows(cfg: Config, as_of: dt.datetime | None = None) -> dict:
    """The rows run as of `as_of`, or of the newest as-of when None."""
    if as_of is None:
        return outputs.latest_rows(cfg)
    return outputs.current_as_of(cfg, as_of, outputs.ROWS,
                                 BUILD_COMMAND.format(as_of=outputs.as_of_key(as_of)))


def sample_candidates(candidates: Column, impression_id: Column, npratio: int, seed: int) -> Column:
    """All clicked candidates plus `npratio` non-clicked ones per clicked one, chosen by a
    seeded hash of (impression, news): reproducible and independent of row order."""
    if npratio <= 0:
        return candidates
    positives = F.filter(candidates, lambda c: c[C.LABEL] == 1)
    negatives = F.filter(candidates, lambda c: c[C.LABEL] == 0)
    keyed = F.transform(negatives, lambda c: F.struct(
        F.xxhash64(F.lit(seed), impression_id, c[C.NEWS_ID]).alias("h"), c.alias("c")))
    chosen = F.slice(F.array_sort(keyed), 1, F.greatest(F.size(positives) * npratio, F.lit(1)))
    return F.concat(positives, F.transform(chosen, lambda k: k["c"]))


def feature_rows(behaviors: DataFrame, impression_vectors: DataFrame, vectors: DataFrame,
                 npratio: int, seed: int, partitions: int) -> DataFrame:
    """One row per kept candidate with a vector (candidates without one are dropped).

    The user vector joins at the impression level and the impressions are spread over
    `partitions` by a seeded hash before the candidates are exploded, so the only shuffle
    moves impressions, not candidate rows; the news vectors join map-side (broadcast)."""
    impressions = (behaviors.select(
        "src", C.IMPRESSION_ID, C.USER_ID,
        sample_candidates(F.col("candidates"), F.col(C.IMPRESSION_ID), npratio, seed).alias("kept"))
        .join(impression_vectors, ["src", C.IMPRESSION_ID])
        .repartition(partitions, F.xxhash64(F.lit(seed), F.col("src"), F.col(C.IMPRESSION_ID))))
    rows = impressions.select(C.IMPRESSION_ID, C.USER_ID, C.USER_VEC, C.HISTORY_LEN,
                              F.explode("kept").alias("c")).select(
        "*", F.col("c")[C.NEWS_ID].alias(C.NEWS_ID), F.col("c")[C.LABEL].alias(C.LABEL))
    news = vectors.withColumnRenamed(C.VECTOR, C.NEWS_VEC)
    return schemas.conform(rows.join(F.broadcast(news), C.NEWS_ID, "inner"), schemas.FEATURE_ROWS)


def impression_counts(behaviors: DataFrame) -> DataFrame:
    """Impressions and clicks per news over the given behaviors."""
    shown = behaviors.select(F.explode("candidates").alias("c"))
    return (shown.groupBy(F.col("c")[C.NEWS_ID].alias(C.NEWS_ID))
            .agg(F.count("*").alias(C.IMPRESSIONS), F.sum(F.col("c")[C.LABEL]).alias(C.CLICKS)))


def pool_window_start(as_of: dt.datetime, cfg: Config) -> dt.datetime:
    return as_of - dt.timedelta(hours=cfg["features.candidate_window_hours"])


def candidate_pool(recent: DataFrame, vectors: DataFrame) -> DataFrame:
    """The news shown in `recent` (the window's impressions) that have a vector, with their
    impressions and clicks there."""
    pool = impression_counts(recent).join(
        vectors.withColumnRenamed(C.VECTOR, C.NEWS_VEC), C.NEWS_ID, "inner")
    return schemas.conform(pool, schemas.CANDIDATE_POOL)


MIN_ROW_GROUP_BYTES = 64 * 1024


def row_group_bytes(rows: int, dim: int, cfg: Config) -> int:
    """Row-group size giving at least `features.min_row_groups` groups for `rows` rows of two
    `dim`-float vectors, capped at `features.row_group_mb`."""
    estimated = rows * (2 * dim * 4 + 64)
    wanted = estimated // max(cfg["features.min_row_groups"], 1)
    return int(max(MIN_ROW_GROUP_BYTES, min(wanted, cfg["features.row_group_mb"] * 1024 * 1024)))


def write_parquet(df: DataFrame, uri: str, block_bytes: int, dictionary: bool = False) -> None:
    """Write Parquet (one file per partition) with row groups of about `block_bytes`.

    Dictionary encoding is off: on float vectors it saves almost nothing (MIND-small's
    train rows: 702 MB without, 727 MB with) and more than doubles the write time (27 s
    against 63 s for those rows on 2 cores, bench/spark_copy_floor.py)."""
    (df.write.option("parquet.block.size", block_bytes)
     .option("parquet.enable.dictionary", str(dictionary).lower()).parquet(uri))


def write_state(state: DataFrame, uri: str, cfg: Config) -> int:
    """Write a user state table (partitioned by user) and return its row count."""
    write_parquet(state.repartition(cfg["features.files"], C.USER_ID), uri,
                  cfg["features.row_group_mb"] * 1024 * 1024)
    return state.sparkSession.read.parquet(uri).count()


def with_split(behaviors: DataFrame, cfg: Config, as_of: dt.datetime) -> DataFrame:
    """`split`: the folder's for MIND folders; for a daily log, dev for the last
    `features.dev_days` days before the as-of moment and train before them."""
    if not log.is_daily(cfg):
        return behaviors.withColumn("split", F.col("source"))
    dev_start = log.epoch_seconds(as_of - dt.timedelta(days=cfg["features.dev_days"]))
    return behaviors.withColumn("split", F.when(F.col("t") >= dev_start, F.lit(DEV))
                                .otherwise(F.lit(TRAIN)))


def reference_counts(spark: SparkSession, cfg: Config, behaviors: DataFrame,
                     vectors: DataFrame) -> tuple[dict, int]:
    """One pass over every history and candidate id: per source and kind, the ids not in that
    source's news.tsv (its first field; embed_news validated the rest), and the candidates
    without a vector. News ids are a catalogue, small beside the behaviors: both lookups are
    broadcast."""
    if log.is_daily(cfg):
        catalogues = [("log", log.news_folders(cfg)[0])]
    else:
        catalogues = [(source, storage.to_uri(cfg[f"paths.{source}"]))
                      for source, _ in log.FOLDER_SOURCES]
    news_ids = None
    for source, folder in catalogues:
        ids = (spark.read.text(f"{folder}/news.tsv")
               .select(F.lit(source).alias("source"),
                       F.substring_index("value", "\t", 1).alias(C.NEWS_ID)))
        news_ids = ids if news_ids is None else news_ids.unionByName(ids)
    listed = news_ids.distinct().withColumn("listed", F.lit(True))
    with_vector = vectors.select(C.NEWS_ID, F.lit(True).alias("has_vector"))
    refs = (behaviors.select("source", F.explode("history").alias(C.NEWS_ID),
                             F.lit("history").alias("kind"))
            .unionByName(behaviors.select("source", F.explode("candidates").alias("c"))
                         .select("source", F.col("c")[C.NEWS_ID].alias(C.NEWS_ID),
                                 F.lit("candidates").alias("kind"))))
    counts = (refs.join(F.broadcast(listed), ["source", C.NEWS_ID], "left")
              .join(F.broadcast(with_vector), C.NEWS_ID, "left")
              .groupBy("source", "kind")
              .agg(F.count(F.when(F.col("listed").isNull(), 1)).alias("unlisted"),
                   F.count(F.when(F.col("has_vector").isNull(), 1)).alias("no_vector"))
              .collect())   # at most 4 rows
    missing = {source: {"history": 0, "candidates": 0} for source, _ in catalogues}
    without_vector = 0
    for row in counts:
        missing[row["source"]][row["kind"]] = row["unlisted"]
        if row["kind"] == "candidates":
            without_vector += row["no_vector"]
    return missing, without_vector


def read_as_of(spark: SparkSession, cfg: Config, as_of: dt.datetime | None):
    """(as-of moment, the log read before it, time of its last impression, the log's first
    day). The default as-of is just after the log's last impression. The log is parsed once."""
    read = log.read_impressions(spark, cfg, end=as_of)
    span = read.behaviors.agg(F.min("t").alias("lo"), F.max("t").alias("hi")).first()
    if span["lo"] is None:
        where = f"before --as-of {outputs.as_of_key(as_of)}" if as_of else "in the log"
        raise UserInputError(f"no impressions {where}: there is nothing to build")
    first, last = log.from_epoch(span["lo"]), log.from_epoch(span["hi"])
    first_day = log.log_days(cfg)[0] if log.is_daily(cfg) else first.date()
    return as_of or last + dt.timedelta(seconds=1), read, last, first_day


def run(cfg: Config, spark: SparkSession | None = None, as_of: dt.datetime | None = None) -> dict:
    spark = spark or get_spark(cfg, "build_features")
    with cached_for_job(spark):
        return _run(cfg, spark, as_of)


def _run(cfg: Config, spark: SparkSession, as_of: dt.datetime | None) -> dict:
    mode = user_state.check_mode(cfg["features.user_clicks"])
    timer = StageTimer()
    seed, npratio, files = cfg["features.seed"], cfg["features.npratio"], cfg["features.files"]
    run_id = storage.new_run_id()

    with timer.stage("read_inputs"):
        vectors, dim, vectors_summary = load_vectors(spark, cfg)
        vectors = vectors.cache()
        as_of, read, data_end, first_day = read_as_of(spark, cfg, as_of)
        news = user_state.NewsIndex.build(spark, vectors)
        behaviors = with_split(read.behaviors, cfg, as_of)
        missing, dropped = reference_counts(spark, cfg, behaviors, vectors)
    for kind in (outputs.STATE, outputs.ROWS, outputs.POOL):   # leased until published
        storage.begin_run(storage.runs_dir(outputs.as_of_root(cfg, as_of, kind)), run_id)
    lineage = {"as_of": outputs.as_of_key(as_of), "data_end": data_end.isoformat(),
               "user_clicks": mode, "news_vectors": vectors_summary["identity"],
               "news_vectors_run": vectors_summary["run_id"], "dim": dim}
    with timer.stage("user_state"):
        impression_vectors, state = user_state.advance(
            user_state.empty_state(spark), behaviors, news, mode)
        impression_vectors = impression_vectors.cache()
        state_root = outputs.as_of_root(cfg, as_of, outputs.STATE)
        state_out = storage.run_dir(state_root, run_id)
        users = write_state(state, f"{state_out}/{outputs.STATE}", cfg)
    counts = {}
    rows_root = outputs.as_of_root(cfg, as_of, outputs.ROWS)
    out = storage.run_dir(rows_root, run_id)
    for split, split_npratio in ((TRAIN, npratio), (DEV, 0)):
        with timer.stage(f"{split}_rows"):
            split_rows = behaviors.where(F.col("split") == split)
            expected = split_rows.agg(F.sum(F.size(sample_candidates(
                F.col("candidates"), F.col(C.IMPRESSION_ID), split_npratio, seed)))).first()[0] or 0
            rows = feature_rows(split_rows, impression_vectors, vectors, split_npratio, seed, files)
            write_parquet(rows, f"{out}/{split}", row_group_bytes(expected, dim, cfg))
            written = spark.read.parquet(f"{out}/{split}")
            stats = written.agg(F.count("*").alias("rows"), F.sum(C.LABEL).alias("positives"),
                                F.countDistinct(C.IMPRESSION_ID).alias("impressions")).first()
            counts[split] = {"rows": stats["rows"], "impressions": stats["impressions"],
                             "positive_share": round((stats["positives"] or 0) / max(stats["rows"], 1), 5),
                             "files": len(written.inputFiles())}
    with timer.stage("dev_impressions"):
        listing = behaviors.where(F.col("split") == DEV).select(
            C.IMPRESSION_ID, F.transform("candidates", lambda c: c[C.NEWS_ID]).alias(C.CANDIDATES))
        schemas.conform(listing, schemas.DEV_IMPRESSIONS).coalesce(1).write.parquet(
            f"{out}/{DEV_IMPRESSIONS}")
    with timer.stage("candidate_pool"):
        pool_root = outputs.as_of_root(cfg, as_of, outputs.POOL)
        pool_out = storage.run_dir(pool_root, run_id)
        recent = behaviors.where(F.col("t") >= log.epoch_seconds(pool_window_start(as_of, cfg)))
        pool_size = write_pool(candidate_pool(recent, vectors), pool_out)
        popularity = impression_counts(behaviors.where(F.col("split") == TRAIN))
        schemas.conform(popularity, schemas.NEWS_POPULARITY).coalesce(1).write.parquet(
            f"{out}/news_popularity")
    with timer.stage("rejected_rows"):
        read.rejected.coalesce(1).write.parquet(f"{out}/rejected")

    summary = {
        "run_id": run_id, "output": out, **lineage, "npratio": npratio, "seed": seed,
        "rows": counts, "users": users, "candidate_pool": pool_size,
        "sources": {"layout": "daily" if log.is_daily(cfg) else "folders",
                    "dev": storage.to_uri(cfg["paths.log"] or cfg["paths.dev"])},
        "rejected_rows": {c.file: c.rejected for c in read.checks},
        "duplicate_impression_ids": {c.file: c.duplicates for c in read.checks},
        "input_rows": {c.file: c.lines for c in read.checks},
        "ids_missing_from_news_tsv": missing,
        "candidates_without_vector": dropped,
        "seconds": timer.seconds,
    }
    storage.write_text(f"{out}/summary.json", json.dumps(summary, indent=2, sort_keys=True))
    keep = cfg["paths.keep_runs"]
    state_summary = dict(lineage, users=users, kind="full")
    if as_of == outputs.day_start(as_of.date()):   # a midnight: a valid base for the daily chain
        state_summary["chain"] = log.chain_fingerprint(
            cfg, first_day, as_of.date(), user_state.state_salt(mode, vectors_summary["identity"]))
    storage.publish_run(state_root, run_id, state_summary, keep)
    storage.publish_run(pool_root, run_id, dict(lineage, candidates=pool_size), keep)
    storage.publish_run(rows_root, run_id, summary, keep)
    news.release()
    return summary


def write_pool(pool: DataFrame, out: str) -> int:
    pool.coalesce(1).write.parquet(f"{out}/candidate_pool")
    return pool.sparkSession.read.parquet(f"{out}/candidate_pool").count()


def parse_as_of_argument(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return outputs.parse_as_of(text)
    except outputs.AsOfError as err:
        raise UserInputError(f"--as-of: {err}") from None


def main(argv: list[str] | None = None) -> int:
    return run_main("Build the train/dev feature rows, user state and candidate pool as of a moment.",
                    lambda cfg, args: run(cfg, as_of=parse_as_of_argument(args.as_of)), argv,
                    extra_arguments=lambda p: p.add_argument(
                        "--as-of", help="use only impressions before this moment, "
                                        "YYYY-MM-DD[THH:MM:SS] UTC (default: the end of the data)"))


if __name__ == "__main__":
    sys.exit(main())
