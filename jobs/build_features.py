"""build_features: MIND behaviors + news vectors -> the trainer's, evaluator's and scorer's inputs.

    ./spark-submit.sh build_features [--config FILE] [--set key=value ...]

Outputs, in one run folder under `paths.work/features/runs/<run_id>/` published atomically
through `paths.work/features/CURRENT.json` (see common/storage.py):

- `train/`: one row per kept candidate of each train impression (schemas.FEATURE_ROWS): the
  user vector is the mean of the vectors of the impression's history news, i.e. only clicks
  made before the impression; `features.npratio` non-clicked candidates are kept per clicked
  one, chosen by a seeded hash so a rerun keeps the same ones.
- `dev/`: the same for dev impressions with every candidate kept.
- `user_profiles/`: each user's latest vector: the history of the user's latest impression plus
  every news the user clicked in the impressions of both splits (distinct ids), and the ids of
  all those clicked news (the scorer excludes them).
- `candidate_pool/`: news shown within `features.candidate_window_hours` before the data's end.
- `news_popularity/`: impressions and clicks per news in the train split (a baseline).
- `rejected/`: malformed input rows with file, line, column and reason.
- `summary.json`: counts and seconds per stage.

Everything is DataFrame expressions: no Python UDF touches the rows, no per-user data goes to
the driver, and each distinct history string is averaged once however many impressions share it.
Parquet is written for Petastorm: vectors as array<float>, at least `features.min_row_groups`
row groups per table (row groups sized from the table's estimated bytes, at most
`features.row_group_mb`), so every shard of up to 16 ranks gets several; impressions are spread
over the `features.files` files by a seeded hash, so no shard holds one time range.
"""
from __future__ import annotations

import datetime as dt
import json
import sys

from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import Column, DataFrame, SparkSession, functions as F

from common import columns as C
from common import schemas, storage
from common.cli import StageTimer, UserInputError, run_main
from common.config import Config
from common.spark import get_spark
from jobs.embed_news import current_vectors_uri
from jobs.mind import check_rejected_share, parse_behaviors

OUTPUT_NAME = "features"
TABLES = ("train", "dev", "user_profiles", "candidate_pool", "news_popularity")


def output_root(cfg: Config) -> str:
    return storage.join(cfg["paths.work"], OUTPUT_NAME)


def current_features(cfg: Config) -> dict:
    """The pointer of the latest finished run: {'path': ..., 'summary': {...}, ...}."""
    return storage.current_run(output_root(cfg), "build_features")


def zero_vector(dim: int) -> Column:
    return F.array_repeat(F.lit(0.0).cast("float"), dim)


def mean_vectors(pairs: DataFrame, key: str, vectors: DataFrame, dim: int) -> DataFrame:
    """(key, user_vec, history_len) for each key of `pairs` (key, news_id): the element-wise mean
    of the vectors of its news that have one. Spark ML's Summarizer averages natively in the JVM
    (no per-element lambdas), in double precision; a key with no known news is absent."""
    known = pairs.join(F.broadcast(vectors), C.NEWS_ID, "inner")
    return (known.groupBy(key)
            .agg(Summarizer.mean(array_to_vector(C.VECTOR)).alias("mean"),
                 F.count("*").cast("int").alias(C.HISTORY_LEN))
            .select(key, vector_to_array("mean", "float32").alias(C.USER_VEC), C.HISTORY_LEN))


def history_vectors(behaviors: DataFrame, vectors: DataFrame, dim: int) -> DataFrame:
    """(history_key, history_ids, user_vec, history_len) for each distinct history: its number
    of ids and the mean of the vectors of its news, skipping ids without a vector (zeros and
    history_len 0 when none is known)."""
    histories = behaviors.select("history_key", "history").dropDuplicates(["history_key"])
    tokens = histories.select("history_key", F.explode("history").alias(C.NEWS_ID))
    means = mean_vectors(tokens, "history_key", vectors, dim)
    return (histories.select("history_key", F.size("history").alias("history_ids"))
            .join(means, "history_key", "left")
            .select("history_key", "history_ids",
                    F.coalesce(C.USER_VEC, zero_vector(dim)).alias(C.USER_VEC),
                    F.coalesce(C.HISTORY_LEN, F.lit(0)).alias(C.HISTORY_LEN)))


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


def feature_rows(behaviors: DataFrame, histories: DataFrame, vectors: DataFrame,
                 npratio: int, seed: int, partitions: int) -> DataFrame:
    """One row per kept candidate with a vector (candidates without one are dropped).

    The user vector joins at the impression level and the impressions are spread over
    `partitions` by a seeded hash before the candidates are exploded, so the only shuffle
    moves impressions, not candidate rows; the news vectors join map-side (broadcast)."""
    impressions = (behaviors.select(
        C.IMPRESSION_ID, C.USER_ID, "history_key",
        sample_candidates(F.col("candidates"), F.col(C.IMPRESSION_ID), npratio, seed).alias("kept"))
        .join(histories, "history_key")
        .repartition(partitions, F.xxhash64(F.lit(seed), F.col(C.IMPRESSION_ID))))
    rows = impressions.select(C.IMPRESSION_ID, C.USER_ID, C.USER_VEC, C.HISTORY_LEN,
                              F.explode("kept").alias("c")).select(
        "*", F.col("c")[C.NEWS_ID].alias(C.NEWS_ID), F.col("c")[C.LABEL].alias(C.LABEL))
    news = vectors.withColumnRenamed(C.VECTOR, C.NEWS_VEC)
    return schemas.conform(rows.join(F.broadcast(news), C.NEWS_ID, "inner"), schemas.FEATURE_ROWS)


def user_profiles(behaviors: DataFrame, vectors: DataFrame, dim: int) -> DataFrame:
    """Each user's latest profile: the latest impression's history plus all clicked news."""
    latest = (behaviors.groupBy(C.USER_ID)
              .agg(F.max_by("history", F.struct(C.TIME, "split_order", C.IMPRESSION_ID))
                   .alias("history")))
    from_history = latest.select(C.USER_ID, F.explode("history").alias(C.NEWS_ID))
    from_clicks = behaviors.select(C.USER_ID, F.explode("candidates").alias("c")).where(
        F.col("c")[C.LABEL] == 1).select(C.USER_ID, F.col("c")[C.NEWS_ID].alias(C.NEWS_ID))
    # one row per user with its distinct clicked ids: the vector means below then need no
    # shuffle of vectors (the rows stay partitioned by user through the broadcast join)
    clicked_ids = (from_history.unionByName(from_clicks).groupBy(C.USER_ID)
                   .agg(F.array_sort(F.collect_set(C.NEWS_ID)).alias(C.CLICKED_NEWS)))
    clicked = clicked_ids.select(C.USER_ID, F.explode(C.CLICKED_NEWS).alias(C.NEWS_ID))
    means = mean_vectors(clicked, C.USER_ID, vectors, dim)
    profiles = (latest.select(C.USER_ID).join(clicked_ids, C.USER_ID, "left")
                .join(means, C.USER_ID, "left")
                .select(C.USER_ID,
                        F.coalesce(C.CLICKED_NEWS, F.array().cast("array<string>")).alias(C.CLICKED_NEWS),
                        F.coalesce(C.HISTORY_LEN, F.lit(0)).alias(C.HISTORY_LEN),
                        F.coalesce(C.USER_VEC, zero_vector(dim)).alias(C.USER_VEC)))
    return schemas.conform(profiles, schemas.USER_PROFILES)


def impression_counts(behaviors: DataFrame) -> DataFrame:
    """Impressions and clicks per news over the given behaviors."""
    shown = behaviors.select(F.explode("candidates").alias("c"))
    return (shown.groupBy(F.col("c")[C.NEWS_ID].alias(C.NEWS_ID))
            .agg(F.count("*").alias(C.IMPRESSIONS), F.sum(F.col("c")[C.LABEL]).alias(C.CLICKS)))


def candidate_pool(behaviors: DataFrame, vectors: DataFrame, data_end: dt.datetime,
                   window_hours: int) -> DataFrame:
    start = data_end - dt.timedelta(hours=window_hours)
    recent = behaviors.where(F.col(C.TIME) > F.lit(start))
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


def output_files(spark: SparkSession, cfg: Config) -> int:
    return cfg["features.files"] or 2 * spark.sparkContext.defaultParallelism


def write_parquet(df: DataFrame, uri: str, block_bytes: int, dictionary: bool = False) -> None:
    """Write Parquet (one file per partition) with row groups of about `block_bytes`.

    Dictionary encoding is off: on float vectors it saves almost nothing (MIND-small's
    train rows: 702 MB without, 727 MB with) and more than doubles the write time (27 s
    against 63 s for those rows on 2 cores, bench/spark_copy_floor.py)."""
    (df.write.option("parquet.block.size", block_bytes)
     .option("parquet.enable.dictionary", str(dictionary).lower()).parquet(uri))


def read_behaviors(spark: SparkSession, cfg: Config) -> tuple[DataFrame, DataFrame, list]:
    frames, rejected, checks = [], [], []
    for order, split in enumerate(("train", "dev")):
        folder = storage.to_uri(cfg[f"paths.{split}"])
        good, bad = parse_behaviors(spark, folder)
        good = good.withColumn("split_order", F.lit(order)).withColumn("split", F.lit(split))
        good = good.cache()
        checks.append(check_rejected_share(good, bad, f"{folder}/behaviors.tsv",
                                           cfg["mind.max_rejected_share"]))
        frames.append(good)
        rejected.append(bad)
    behaviors = frames[0].unionByName(frames[1]).withColumn(
        "history_key", F.array_join("history", " "))
    return behaviors, rejected[0].unionByName(rejected[1]), checks


def reference_counts(spark: SparkSession, cfg: Config, behaviors: DataFrame,
                     vectors: DataFrame) -> tuple[dict, int]:
    """One pass over every history and candidate id of both splits: per split and kind, the
    ids not in that split's news.tsv (its first field; embed_news validated the rest), and
    the candidates without a vector. News ids are a catalogue, small beside the behaviors:
    both lookups are broadcast."""
    news_ids = None
    for split in ("train", "dev"):
        ids = (spark.read.text(f"{storage.to_uri(cfg[f'paths.{split}'])}/news.tsv")
               .select(F.lit(split).alias("split"),
                       F.substring_index("value", "\t", 1).alias(C.NEWS_ID)))
        news_ids = ids if news_ids is None else news_ids.unionByName(ids)
    listed = news_ids.distinct().withColumn("listed", F.lit(True))
    with_vector = vectors.select(C.NEWS_ID, F.lit(True).alias("has_vector"))
    refs = (behaviors.select("split", F.explode("history").alias(C.NEWS_ID),
                             F.lit("history").alias("kind"))
            .unionByName(behaviors.select("split", F.explode("candidates").alias("c"))
                         .select("split", F.col("c")[C.NEWS_ID].alias(C.NEWS_ID),
                                 F.lit("candidates").alias("kind"))))
    counts = (refs.join(F.broadcast(listed), ["split", C.NEWS_ID], "left")
              .join(F.broadcast(with_vector), C.NEWS_ID, "left")
              .groupBy("split", "kind")
              .agg(F.count(F.when(F.col("listed").isNull(), 1)).alias("unlisted"),
                   F.count(F.when(F.col("has_vector").isNull(), 1)).alias("no_vector"))
              .collect())   # at most 4 rows
    missing = {split: {"history": 0, "candidates": 0} for split in ("train", "dev")}
    without_vector = 0
    for row in counts:
        missing[row["split"]][row["kind"]] = row["unlisted"]
        if row["kind"] == "candidates":
            without_vector += row["no_vector"]
    return missing, without_vector


def load_vectors(spark: SparkSession, cfg: Config) -> tuple[DataFrame, int, str]:
    uri, _summary = current_vectors_uri(cfg)
    vectors = spark.read.parquet(uri).select(C.NEWS_ID, C.VECTOR)
    widths = vectors.agg(F.min(F.size(C.VECTOR)).alias("lo"), F.max(F.size(C.VECTOR)).alias("hi")).first()
    if widths["lo"] is None:
        raise UserInputError(f"{uri}: no news vectors")
    if widths["lo"] != widths["hi"]:
        raise UserInputError(f"{uri}: news vectors have different widths "
                             f"({widths['lo']} to {widths['hi']})")
    return vectors, int(widths["hi"]), uri


def run(cfg: Config, spark: SparkSession | None = None) -> dict:
    spark = spark or get_spark(cfg, "build_features")
    timer = StageTimer()
    root = output_root(cfg)
    run_id = storage.new_run_id()
    out = storage.run_dir(root, run_id)
    seed, npratio = cfg["features.seed"], cfg["features.npratio"]

    with timer.stage("read_inputs"):
        vectors, dim, vectors_uri = load_vectors(spark, cfg)
        vectors = vectors.cache()
        behaviors, rejected, checks = read_behaviors(spark, cfg)
        missing, dropped = reference_counts(spark, cfg, behaviors, vectors)
        data_end = behaviors.agg(F.max(C.TIME)).first()[0]
    with timer.stage("history_vectors"):
        histories = history_vectors(behaviors, vectors, dim).cache()
        tokens = histories.agg(F.sum(C.HISTORY_LEN).alias("known"),
                               F.sum("history_ids").alias("all")).first()
        unknown_history_ids = (tokens["all"] or 0) - (tokens["known"] or 0)
    counts = {}
    files = output_files(spark, cfg)
    for split, split_npratio in (("train", npratio), ("dev", 0)):
        with timer.stage(f"{split}_rows"):
            split_rows = behaviors.where(F.col("split") == split)
            expected = split_rows.agg(F.sum(F.size(sample_candidates(
                F.col("candidates"), F.col(C.IMPRESSION_ID), split_npratio, seed)))).first()[0] or 0
            rows = feature_rows(split_rows, histories, vectors, split_npratio, seed, files)
            write_parquet(rows, f"{out}/{split}", row_group_bytes(expected, dim, cfg))
            written = spark.read.parquet(f"{out}/{split}")
            stats = written.agg(F.count("*").alias("rows"), F.sum(C.LABEL).alias("positives"),
                                F.countDistinct(C.IMPRESSION_ID).alias("impressions")).first()
            counts[split] = {"rows": stats["rows"], "impressions": stats["impressions"],
                             "positive_share": round((stats["positives"] or 0) / max(stats["rows"], 1), 5),
                             "files": len(written.inputFiles())}
    with timer.stage("user_profiles"):
        profiles = user_profiles(behaviors, vectors, dim)
        write_parquet(profiles.repartition(files, C.USER_ID), f"{out}/user_profiles",
                      cfg["features.row_group_mb"] * 1024 * 1024)
        counts["user_profiles"] = spark.read.parquet(f"{out}/user_profiles").count()
    with timer.stage("candidate_pool"):
        pool = candidate_pool(behaviors, vectors, data_end, cfg["features.candidate_window_hours"])
        pool.coalesce(1).write.parquet(f"{out}/candidate_pool")
        counts["candidate_pool"] = spark.read.parquet(f"{out}/candidate_pool").count()
        popularity = impression_counts(behaviors.where(F.col("split") == "train"))
        schemas.conform(popularity, schemas.NEWS_POPULARITY).coalesce(1).write.parquet(
            f"{out}/news_popularity")
    with timer.stage("rejected_rows"):
        rejected.coalesce(1).write.parquet(f"{out}/rejected")

    summary = {
        "run_id": run_id, "output": out, "news_vectors": vectors_uri, "dim": dim,
        "data_end": data_end.isoformat(), "npratio": npratio, "seed": seed,
        "rows": counts,
        "rejected_rows": {c.file: c.rejected for c in checks},
        "input_rows": {c.file: c.lines for c in checks},
        "ids_missing_from_news_tsv": missing,
        "history_ids_without_vector": int(unknown_history_ids),
        "candidates_without_vector": dropped,
        "seconds": timer.seconds,
    }
    storage.write_text_atomic(f"{out}/summary.json", json.dumps(summary, indent=2, sort_keys=True))
    storage.publish_run(root, run_id, summary, keep_runs=cfg["paths.keep_runs"])
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_main("Build the train/dev feature rows, user profiles and candidate pool.",
                    lambda cfg, _args: run(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())
