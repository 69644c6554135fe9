"""Feature rows: one row per kept candidate of an impression, with the user's vector as of
the impression, the candidate's vector and the side features as of the impression's time
(schemas.FEATURE_ROWS), split into train, validation and dev."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, SparkSession, functions as F

from common import columns as C
from common import outputs, schemas, storage
from common.config import Config
from common.errors import UserInputError
from features import behavior_log as log
from features import side_features as side


TRAIN, VALID, DEV = "train", C.SPLIT_VALID, "dev"



NEWS_VEC_PACKED = "news_vec_packed"



DEV_IMPRESSIONS = "dev_impressions"



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
        catalogues = [("log", folder) for folder in log.news_folders(cfg)]
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



def dense_stats(rows: DataFrame) -> dict:
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



def sampling_counts(split_rows: DataFrame, npratio: int) -> dict:
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
