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
data goes to the driver. Parquet is written for Petastorm: the two wide vectors packed
(common/packed_vectors.py), at least `features.min_row_groups` row groups per table (sized
from the table's estimated bytes, at most `features.row_group_mb`), impressions spread over
`features.files` files by a hash of (src, impression_id), so no shard holds one time range.
"""
from __future__ import annotations

import datetime as dt
import json
import sys

from pyspark.sql import Column, DataFrame, SparkSession, functions as F

from common import columns as C
from common import outputs, packed_vectors as packed, schemas, storage
from common.cli import StageTimer, UserInputError, run_main
from common.config import Config
from common.spark import cached_for_job, get_spark
from jobs import behavior_log as log
from jobs import side_features as side
from jobs import user_state
from jobs.embed_news import load_categories, load_vectors

TRAIN, VALID, DEV = "train", C.SPLIT_VALID, "dev"
NEWS_VEC_PACKED = "news_vec_packed"
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
    chosen = F.slice(F.sort_array(keyed), 1, F.greatest(F.size(positives) * npratio, F.lit(1)))
    return F.concat(positives, F.transform(chosen, lambda k: k["c"]))


def news_table(spark: SparkSession, cfg: Config, vectors: DataFrame, vectors_summary: dict,
               news_index: user_state.NewsIndex,
               first_seen: DataFrame) -> tuple[DataFrame, side.Topics]:
    """(news, topics). news, per news with a vector (`vectors`, of the run of
    `vectors_summary`): news_vec, category and subcategory buckets, its category's topic_vec
    and topic_index (side.Topics, from `news_index`: the same vectors on the driver),
    first_seen (null if not seen). A catalogue, broadcast to the joins."""
    categories = side.news_categories(load_categories(spark, vectors_summary),
                                      cfg["features.category_buckets"])
    topics = side.Topics.of_catalogue(news_index.ids, news_index.matrix, categories)
    news = (vectors.withColumnRenamed(C.VECTOR, C.NEWS_VEC)
            .join(categories, C.NEWS_ID, "left")
            .fillna(0, [C.CATEGORY, C.SUBCATEGORY])
            .join(F.broadcast(topics.vectors(spark)), C.CATEGORY, "left")
            .join(first_seen, C.NEWS_ID, "left"))
    return news, topics


IMPRESSION_KEYS = ["src", C.IMPRESSION_ID]


def by_impression(impressions: DataFrame, cfg: Config) -> DataFrame:
    """`impressions` hash-partitioned by (src, impression_id) into `features.files`
    partitions: the layout of every impression-level input of feature_rows, so their joins
    need no further shuffle and each partition becomes one file of rows. A hash, so no file
    holds one time range."""
    return impressions.repartition(cfg["features.files"], *IMPRESSION_KEYS)


def feature_rows(behaviors: DataFrame, impression_vectors: DataFrame, news: DataFrame,
                 popularity: DataFrame, cfg: Config, npratio: int) -> DataFrame:
    """One row per kept candidate with a vector (candidates without one are dropped), with its
    side features as of the impression's time.

    The user vector and the candidates' popularity (side.candidate_popularity) join at the
    impression level, all three partitioned alike (by_impression), before the candidates are
    exploded; the news table joins map-side (broadcast). No exploded row is shuffled, and
    `impression_vectors` and `popularity` (cached by the caller) are shuffled once for every
    split. `news` carries its vectors packed as well
    (NEWS_VEC_PACKED): the rows store them packed
    (common/packed_vectors.py). `impression_vectors` comes from side.with_topic_dots: its
    user_vec is packed and its topic_dots give each row's topic affinity."""
    seed = cfg["features.seed"]
    counts = F.col(side.POPULARITY)
    candidates = F.transform("candidates", lambda c, i: F.struct(
        c[C.NEWS_ID].alias(C.NEWS_ID), c[C.LABEL].alias(C.LABEL),
        counts[i][C.POP_IMPRESSIONS].alias(C.POP_IMPRESSIONS),
        counts[i][C.POP_CLICKS].alias(C.POP_CLICKS)))
    impressions = (by_impression(behaviors, cfg).join(popularity, IMPRESSION_KEYS, "left").select(
        "src", C.IMPRESSION_ID, C.USER_ID, "t",
        sample_candidates(candidates, F.col(C.IMPRESSION_ID), npratio, seed).alias("kept"))
        .join(impression_vectors, IMPRESSION_KEYS))
    rows = impressions.select(C.IMPRESSION_ID, C.USER_ID, C.USER_VEC, side.TOPIC_DOTS,
                              C.HISTORY_LEN, "t", C.USER_IMPRESSIONS,
                              F.explode("kept").alias("c")).select(
        "*", *[F.col("c")[name].alias(name) for name in
               (C.NEWS_ID, C.LABEL, C.POP_IMPRESSIONS, C.POP_CLICKS)])
    rows = rows.join(F.broadcast(news), C.NEWS_ID, "inner")
    age = side.age_hours(F.col("t"), F.col(C.FIRST_SEEN))
    rows = rows.select("*", age.alias(C.AGE_HOURS)).select(
        "*", side.news_dense(F.col(C.AGE_HOURS), F.col(C.POP_IMPRESSIONS), F.col(C.POP_CLICKS),
                             cfg).alias(C.NEWS_DENSE),
        side.user_dense(F.col(C.HISTORY_LEN), F.col(C.USER_IMPRESSIONS)).alias(C.USER_DENSE),
        side.pair_dense(F.col(side.TOPIC_DOTS), F.col(side.TOPIC_INDEX)).alias(C.PAIR_DENSE))
    rows = rows.drop(C.NEWS_VEC).withColumnRenamed(NEWS_VEC_PACKED, C.NEWS_VEC)
    return schemas.conform(rows, schemas.FEATURE_ROWS)


def pool_window_start(as_of: dt.datetime, cfg: Config) -> dt.datetime:
    """Start of the impressions the pool reads: its candidate window and the popularity
    window, whichever reaches further back."""
    hours = max(cfg["features.candidate_window_hours"], cfg["features.popularity_window_hours"])
    return as_of - dt.timedelta(hours=hours)


def candidate_pool(recent: DataFrame, news: DataFrame, as_of: dt.datetime, cfg: Config) -> DataFrame:
    """The news shown within `features.candidate_window_hours` before `as_of` that have a
    vector, with their impressions and clicks there and their side features as of `as_of`.
    `recent` holds the impressions from pool_window_start; `news` is news_table's (its
    first_seen from impressions before `as_of`)."""
    moment = log.epoch_seconds(as_of)
    hours = lambda key: moment - cfg[key] * 3600  # noqa: E731
    counts = side.pool_counts(recent, hours("features.candidate_window_hours"),
                              hours("features.popularity_window_hours"))
    # the news shown in the window are few: they are broadcast to the catalogue, not the
    # catalogue (every news with its vector and topic vector) to them
    pool = (news.join(F.broadcast(counts), C.NEWS_ID, "inner")
            .withColumn(C.AGE_HOURS, side.age_hours(F.lit(moment), F.col(C.FIRST_SEEN))))
    pool = pool.withColumn(C.NEWS_DENSE, side.news_dense(
        F.col(C.AGE_HOURS), F.col(C.POP_IMPRESSIONS), F.col(C.POP_CLICKS), cfg))
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


def write_state(state: DataFrame, uri: str, cfg: Config, by_user: bool = False) -> int:
    """Write a user state table, hash-partitioned by user_id into `features.files` files, and
    return its row count. `by_user`: `state` is hash-partitioned by user_id already (a day's
    state from user_state.advance_state, in its own number of partitions), and is written
    as it is, a file per partition, without another shuffle."""
    if not by_user:
        state = state.repartition(cfg["features.files"], C.USER_ID)
    write_parquet(state, uri, cfg["features.row_group_mb"] * 1024 * 1024)
    return state.sparkSession.read.schema(schemas.USER_STATE).parquet(uri).count()


def with_split(behaviors: DataFrame, cfg: Config, as_of: dt.datetime,
               time_split: bool = False) -> tuple[DataFrame, dt.datetime]:
    """(`behaviors` with `split`, the end of the train split). `split`: for MIND folders, the
    folder's; for a daily log or a time split, dev for the last `features.dev_days` days
    before the as-of moment (`--time-split DATE`: the day DATE) and train before them. The
    last `features.validation_hours` of the train split are `valid`: held out from training,
    they choose the epoch to export (the dev split is only reported)."""
    if log.is_daily(cfg) or time_split:
        days = 1 if time_split else cfg["features.dev_days"]
        train_end = as_of - dt.timedelta(days=days)
        split = F.when(F.col("t") >= log.epoch_seconds(train_end), F.lit(DEV)).otherwise(F.lit(TRAIN))
    else:
        last = behaviors.where(F.col("source") == TRAIN).agg(F.max("t")).first()[0]
        train_end = log.from_epoch(last) + dt.timedelta(seconds=1) if last is not None else as_of
        split = F.col("source")
    valid_start = log.epoch_seconds(train_end - dt.timedelta(hours=cfg["features.validation_hours"]))
    if cfg["features.validation_hours"]:
        split = F.when((split == TRAIN) & (F.col("t") >= valid_start), F.lit(VALID)).otherwise(split)
    return behaviors.withColumn("split", split), train_end


def reference_counts(spark: SparkSession, cfg: Config, references: DataFrame,
                     vectors: DataFrame) -> tuple[dict, int]:
    """Per source and kind, the ids not in that source's news.tsv (its first field;
    embed_news validated the rest), and the candidates without a vector, counted from
    side.news_references (catalogue-sized): both lookups are broadcast."""
    if log.is_daily(cfg):
        catalogues = [("log", log.news_folders(cfg)[0])]
    else:
        catalogues = [(source, storage.to_uri(cfg[f"paths.{source}"]))
                      for source, _ in log.folder_sources(cfg)]
    news_ids = None
    for source, folder in catalogues:
        ids = (spark.read.text(f"{folder}/news.tsv")
               .select(F.lit(source).alias("source"),
                       F.substring_index("value", "\t", 1).alias(C.NEWS_ID)))
        news_ids = ids if news_ids is None else news_ids.unionByName(ids)
    listed = news_ids.distinct().withColumn("listed", F.lit(True))
    with_vector = vectors.select(C.NEWS_ID, F.lit(True).alias("has_vector"))
    counts = (references.join(F.broadcast(listed), ["source", C.NEWS_ID], "left")
              .join(F.broadcast(with_vector), C.NEWS_ID, "left")
              .groupBy("source", "kind")
              .agg(F.sum(F.when(F.col("listed").isNull(), F.col("refs"))).alias("unlisted"),
                   F.sum(F.when(F.col("has_vector").isNull(), F.col("refs"))).alias("no_vector"))
              .collect())   # at most 4 rows
    missing = {source: {"history": 0, "candidates": 0} for source, _ in catalogues}
    without_vector = 0
    for row in counts:
        missing[row["source"]][row["kind"]] = int(row["unlisted"] or 0)
        if row["kind"] == "candidates":
            without_vector += int(row["no_vector"] or 0)
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


def run(cfg: Config, spark: SparkSession | None = None, as_of: dt.datetime | None = None,
        time_split: dt.date | None = None) -> dict:
    """`time_split` D (one MIND folder cut the way MIND was): train before D, dev on D; the
    features are as of D + 1 day."""
    if time_split is not None:
        if as_of is not None:
            raise UserInputError("--time-split and --as-of exclude each other: --time-split D "
                                 "builds as of D + 1 day")
        as_of = outputs.day_start(time_split + dt.timedelta(days=1))
    spark = spark or get_spark(cfg, "build_features")
    with cached_for_job(spark):
        return _run(cfg, spark, as_of, time_split is not None)


def _dense_stats(rows: DataFrame) -> dict:
    """Mean and standard deviation of every entry of the dense arrays over `rows` (the train
    rows), in one pass: the trainer standardizes the model's dense inputs with them."""
    columns = ((C.USER_DENSE, side.USER_DENSE_NAMES), (C.NEWS_DENSE, side.NEWS_DENSE_NAMES),
               (C.PAIR_DENSE, side.PAIR_DENSE_NAMES))
    aggs = [agg(F.col(column)[i]) for column, names in columns
            for agg in (F.avg, F.stddev_pop) for i in range(len(names))]
    values, stats, at = rows.agg(*aggs).first(), {}, 0
    for column, names in columns:
        n = len(names)
        stats[column] = {"names": list(names),
                         "mean": [float(v or 0.0) for v in values[at:at + n]],
                         "std": [float(v) if v else 1.0 for v in values[at + n:at + 2 * n]]}
        at += 2 * n
    return stats


def _sampling(split_rows: DataFrame, npratio: int) -> dict:
    """Candidates, positives and kept candidates of the train split: the rate at which its
    negatives were kept (the trainer corrects the logits for it)."""
    size = F.size("candidates")
    positives = F.aggregate("candidates", F.lit(0), lambda n, c: n + c[C.LABEL])
    # what sample_candidates keeps, counted without sampling: every positive and
    # min(negatives, max(positives * npratio, 1)) negatives (all when npratio <= 0)
    kept = size if npratio <= 0 else positives + F.least(
        size - positives, F.greatest(positives * npratio, F.lit(1)))
    stats = split_rows.select(size.alias("n"), positives.alias("p"), kept.alias("k")).agg(
        F.sum("n").alias("candidates"), F.sum("p").alias("positives"),
        F.sum("k").alias("kept")).first()
    candidates, positives, kept = (int(stats[k] or 0) for k in ("candidates", "positives", "kept"))
    negatives = candidates - positives
    rate = (kept - positives) / negatives if negatives else 1.0
    return {"candidates": candidates, "positives": positives, "kept": kept,
            "negative_keep_rate": rate}


def _run(cfg: Config, spark: SparkSession, as_of: dt.datetime | None,
         time_split: bool = False) -> dict:
    mode = user_state.check_mode(cfg["features.user_clicks"])
    timer = StageTimer()
    seed, npratio = cfg["features.seed"], cfg["features.npratio"]
    run_id = storage.new_run_id()

    with timer.stage("read_inputs"):
        vectors, dim, vectors_summary = load_vectors(spark, cfg)
        vectors = vectors.cache()
        as_of, read, data_end, first_day = read_as_of(spark, cfg, as_of)
        news = user_state.NewsIndex.read(spark, vectors_summary["vectors_uri"])
        behaviors, train_end = with_split(read.behaviors, cfg, as_of, time_split)
        behaviors = behaviors.cache()
        references = side.news_references(behaviors).cache()
        seen = side.first_seen(references).cache()
        news_side, topics = news_table(spark, cfg, vectors, vectors_summary, news, seen)
        news_side = packed.with_packed(news_side, C.NEWS_VEC, NEWS_VEC_PACKED).cache()
        missing, dropped = reference_counts(spark, cfg, references, vectors)
    for kind in (outputs.STATE, outputs.ROWS, outputs.POOL):   # leased until published
        storage.begin_run(storage.runs_dir(outputs.as_of_root(cfg, as_of, kind)), run_id)
    lineage = {"as_of": outputs.as_of_key(as_of), "data_end": data_end.isoformat(),
               "user_clicks": mode, "news_vectors": vectors_summary["identity"],
               "news_vectors_run": vectors_summary["run_id"], "dim": dim,
               "side_features": side_summary(cfg)}
    with timer.stage("user_state"):
        impression_vectors, state = user_state.advance(
            user_state.empty_state(spark), behaviors, news, mode)
        impression_vectors = by_impression(side.with_topic_dots(impression_vectors, topics),
                                           cfg).cache()
        state_root = outputs.as_of_root(cfg, as_of, outputs.STATE)
        state_out = storage.run_dir(state_root, run_id)
        users = write_state(state, f"{state_out}/{outputs.STATE}", cfg)
        write_first_seen(seen, f"{state_out}/{outputs.FIRST_SEEN}")
    counts = {}
    rows_root = outputs.as_of_root(cfg, as_of, outputs.ROWS)
    out = storage.run_dir(rows_root, run_id)
    with timer.stage("popularity"):
        popularity = side.candidate_popularity(
            behaviors, cfg["features.popularity_window_hours"],
            int(spark.conf.get("spark.sql.shuffle.partitions")), cfg["features.files"]).cache()
        sampling = _sampling(behaviors.where(F.col("split") == TRAIN), npratio)
    for split, split_npratio in ((TRAIN, npratio), (VALID, 0), (DEV, 0)):
        with timer.stage(f"{split}_rows"):
            split_rows = behaviors.where(F.col("split") == split)
            expected = sampling["kept"] if split == TRAIN else split_rows.agg(F.sum(F.size(
                "candidates"))).first()[0] or 0   # valid and dev keep every candidate
            rows = feature_rows(split_rows, impression_vectors, news_side, popularity, cfg,
                                split_npratio)
            write_parquet(rows, f"{out}/{split}", row_group_bytes(expected, dim, cfg))
            written = spark.read.schema(schemas.FEATURE_ROWS).parquet(f"{out}/{split}")
            stats = written.agg(F.count("*").alias("rows"), F.sum(C.LABEL).alias("positives"),
                                F.countDistinct(C.IMPRESSION_ID).alias("impressions")).first()
            counts[split] = {"rows": stats["rows"], "impressions": stats["impressions"],
                             "positive_share": round((stats["positives"] or 0) / max(stats["rows"], 1), 5),
                             "files": len(written.inputFiles())}
            if split == TRAIN:
                dense_stats = _dense_stats(written)
    with timer.stage("dev_impressions"):
        listing = behaviors.where(F.col("split") == DEV).select(
            C.IMPRESSION_ID, F.transform("candidates", lambda c: c[C.NEWS_ID]).alias(C.CANDIDATES))
        schemas.conform(listing, schemas.DEV_IMPRESSIONS).coalesce(1).write.parquet(
            f"{out}/{DEV_IMPRESSIONS}")
    with timer.stage("candidate_pool"):
        pool_root = outputs.as_of_root(cfg, as_of, outputs.POOL)
        pool_out = storage.run_dir(pool_root, run_id)
        recent = behaviors.where(F.col("t") >= log.epoch_seconds(pool_window_start(as_of, cfg)))
        pool_size = write_pool(candidate_pool(recent, news_side, as_of, cfg), pool_out)
        # the train period's counts (the popularity baseline): train and validation rows
        popularity = side.impression_counts(behaviors.where(F.col("split").isin(TRAIN, VALID)))
        schemas.conform(popularity, schemas.NEWS_POPULARITY).coalesce(1).write.parquet(
            f"{out}/news_popularity")
    with timer.stage("rejected_rows"):
        read.write_rejected(f"{out}/rejected")

    summary = {
        "run_id": run_id, "output": out, **lineage, "npratio": npratio, "seed": seed,
        "train_end": train_end.isoformat(), "time_split": time_split,
        "validation_hours": cfg["features.validation_hours"],
        "sampling": sampling, "dense_stats": dense_stats,
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


def side_summary(cfg: Config) -> dict:
    """The settings that shape the side features (the model records them: scoring with other
    settings would feed it other features)."""
    return {"category_buckets": cfg["features.category_buckets"],
            "popularity_window_hours": cfg["features.popularity_window_hours"],
            "ctr_prior": cfg["features.ctr_prior"],
            "ctr_prior_impressions": cfg["features.ctr_prior_impressions"],
            "user_dense": list(side.USER_DENSE_NAMES), "news_dense": list(side.NEWS_DENSE_NAMES),
            "pair_dense": list(side.PAIR_DENSE_NAMES)}


def write_first_seen(seen: DataFrame, uri: str) -> None:
    schemas.conform(seen, schemas.NEWS_FIRST_SEEN).coalesce(1).write.parquet(uri)


def write_pool(pool: DataFrame, out: str) -> int:
    pool.coalesce(1).write.parquet(f"{out}/candidate_pool")
    return pool.sparkSession.read.schema(schemas.CANDIDATE_POOL).parquet(
        f"{out}/candidate_pool").count()


def parse_as_of_argument(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return outputs.parse_as_of(text)
    except outputs.AsOfError as err:
        raise UserInputError(f"--as-of: {err}") from None


def parse_time_split(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UserInputError(f"--time-split {text!r} is not a date YYYY-MM-DD") from None


def _arguments(parser) -> None:
    parser.add_argument("--as-of", help="use only impressions before this moment, "
                                        "YYYY-MM-DD[THH:MM:SS] UTC (default: the end of the data)")
    parser.add_argument("--time-split", help="one MIND folder cut by time: train on the "
                                             "impressions before DATE, evaluate on DATE (YYYY-MM-DD)")


def main(argv: list[str] | None = None) -> int:
    return run_main("Build the train/dev feature rows, user state and candidate pool as of a moment.",
                    lambda cfg, args: run(cfg, as_of=parse_as_of_argument(args.as_of),
                                          time_split=parse_time_split(args.time_split)),
                    argv, extra_arguments=_arguments)


if __name__ == "__main__":
    sys.exit(main())
