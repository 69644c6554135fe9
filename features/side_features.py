"""Side features of a (user, news) pair beside the two vectors, each as of a moment, from the
same log and the same as-of machinery as the user state (features/user_state.py):

- news side: `category` and `subcategory` (news.tsv's own columns, hashed into
  `features.category_buckets` buckets; bucket 0 is "none"), the news item's age (hours since
  its first appearance in the log, as a candidate or in a history), and its popularity
  (impressions and clicks in the `features.popularity_window_hours` before the moment);
- user side: the clicked-set size (`history_len`) and the impressions before this one
  (`user_impressions`, from the user state's kernel);
- pair: the user's affinity to the news item's topic, `topic_dot = user_vec . topic_vec`,
  where `topic_vec` is the mean vector of every news of the news item's category (titles
  only: content, no behavior, so it sees no future). Where `user_vec . news_vec` compares
  the user with one title, this compares the user with the whole category.

"As of t" means strictly before t, in seconds: an impression's candidates see the
impressions of earlier seconds only, the same rule as the user state. A train or dev row's
moment is its impression's time; the scoring pool's moment is the as-of moment (the run date,
00:00), so popularity as of the run date is a news-side feature.

The dense features reach the model as two small arrays, `user_dense` and `news_dense`, made
by `user_dense` and `news_dense` below (the one definition of their transforms; rows, pool and
scoring profiles all use it). Counts enter as log1p, the click rate smoothed toward
`features.ctr_prior` with the weight of `features.ctr_prior_impressions` impressions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, functions as F
from pyspark.sql.types import (ArrayType, FloatType, IntegerType, LongType, StructField,
                               StructType)

from common import columns as C
from common import packed_vectors as packed
from common.config import Config

# The order of the entries of the dense arrays (the model's metadata records them).
USER_DENSE_NAMES = ("log1p_history_len", "log1p_user_impressions")
NEWS_DENSE_NAMES = ("log1p_age_hours", "log1p_pop_impressions", "log1p_pop_clicks", "smoothed_ctr")
PAIR_DENSE_NAMES = ("topic_dot",)


def bucket(value: Column, buckets: int) -> Column:
    """A category name's bucket in 1..buckets-1 (seeded hash), 0 for none or empty."""
    hashed = F.pmod(F.xxhash64(F.lit("category"), value), F.lit(buckets - 1)) + 1
    return F.when(value.isNull() | (F.trim(value) == ""), F.lit(0)).otherwise(hashed).cast("int")


def news_categories(categories: DataFrame, buckets: int) -> DataFrame:
    """(news_id, category, subcategory) buckets of every news of `categories`
    (schemas.NEWS_CATEGORIES: embed_news's, where a news id's row in the first folder that
    lists it won, as for its vector)."""
    return categories.select(C.NEWS_ID, bucket(F.col(C.CATEGORY), buckets).alias(C.CATEGORY),
                             bucket(F.col(C.SUBCATEGORY), buckets).alias(C.SUBCATEGORY))


TOPIC_INDEX, TOPIC_DOTS = "topic_index", "topic_dots"


@dataclass(frozen=True)
class Topics:
    """Every category's topic vector (at most `features.category_buckets` rows): row i of
    `matrix` is the mean news vector of category `categories[i]` (ascending), over every news
    with a vector (a news without a category counts in bucket 0)."""
    categories: np.ndarray
    matrix: np.ndarray

    @classmethod
    def of_catalogue(cls, ids: np.ndarray, matrix: np.ndarray, categories: DataFrame) -> "Topics":
        """From the news vectors (`ids`, `matrix`: user_state.NewsIndex's, on the driver) and
        `categories` (news_id, category bucket: news_categories). Catalogue-sized, so computed
        on the driver with numpy rather than by exploding every vector element in Spark."""
        table = categories.select(C.NEWS_ID, C.CATEGORY).toPandas()
        bucket = (pd.Series(table[C.CATEGORY].to_numpy(), index=table[C.NEWS_ID].to_numpy())
                  .reindex(ids).fillna(0).to_numpy().astype(np.int64))
        if not len(bucket):
            return cls(np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
        used, slot = np.unique(bucket, return_inverse=True)
        sums = np.zeros((len(used), matrix.shape[1]), np.float64)
        np.add.at(sums, slot, matrix.astype(np.float64))
        means = sums / np.bincount(slot, minlength=len(used))[:, None]
        return cls(used, means.astype(np.float32))

    def vectors(self, spark: SparkSession) -> DataFrame:
        """(category, topic_vec, topic_index): each category's topic vector, and where its dot
        sits in a row's topic_dots."""
        return spark.createDataFrame(
            [(int(c), [float(x) for x in vec], i)
             for i, (c, vec) in enumerate(zip(self.categories, self.matrix))],
            StructType([StructField(C.CATEGORY, IntegerType(), False),
                        StructField(C.TOPIC_VEC, ArrayType(FloatType(), False), False),
                        StructField(TOPIC_INDEX, IntegerType(), False)]))


def with_topic_dots(impressions: DataFrame, topics: Topics) -> DataFrame:
    """`impressions` with `user_vec` packed (common/packed_vectors.py) and `topic_dots`: the
    user's affinity to every topic, `user_vec . topic_vec`, in float64 then float32, in
    Topics order. A row's pair feature is then one element, `topic_dots[topic_index]` of its
    news (pair_dense): one numpy matrix product per impression instead of a dot per
    candidate with Spark's array functions."""
    fields = [StructField(f.name, packed.PACKED_TYPE, False) if f.name == C.USER_VEC else f
              for f in impressions.schema.fields]
    schema = StructType(fields + [StructField(TOPIC_DOTS, ArrayType(FloatType(), False), False)])
    matrix = topics.matrix.astype(np.float64)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            at = batch.schema.get_field_index(C.USER_VEC)
            users = packed.decode(batch.column(at), C.USER_VEC)
            if not len(users):
                users = np.zeros((0, matrix.shape[1]), np.float32)
            dots = (users.astype(np.float64) @ matrix.T).astype(np.float32)
            dot_lists = pa.ListArray.from_arrays(
                pa.array(np.arange(len(dots) + 1, dtype=np.int32) * len(matrix)),
                pa.array(dots.reshape(-1)))
            columns = list(batch.columns)
            columns[at] = packed.encode(users) if len(users) else pa.array([], pa.binary())
            yield pa.RecordBatch.from_arrays(columns + [dot_lists],
                                             names=batch.schema.names + [TOPIC_DOTS])
    return impressions.mapInArrow(run, schema)


def pair_dense(topic_dots: Column, topic_index: Column) -> Column:
    """The pair's dense features, in PAIR_DENSE_NAMES order (float): [user_vec . topic_vec],
    read off the impression's topic_dots (with_topic_dots) at the news's topic_index."""
    return F.array(topic_dots[topic_index]).cast("array<float>")


def news_mentions(behaviors: DataFrame) -> DataFrame:
    """(source, kind, news_id, t): every reference of a news by an impression, "history"
    (in its history) or "candidates" (shown), with the impression's time (epoch seconds)."""
    return (behaviors.select("source", "t", F.explode("history").alias(C.NEWS_ID),
                             F.lit("history").alias("kind"))
            .unionByName(behaviors.select("source", "t", F.explode("candidates").alias("c"))
                         .select("source", "t", F.col("c")[C.NEWS_ID].alias(C.NEWS_ID),
                                 F.lit("candidates").alias("kind"))))


def news_references(behaviors: DataFrame) -> DataFrame:
    """(source, kind, news_id, first_seen, refs): per source, kind and news id, the time of
    the first impression that references it that way and the number of references (over
    news_mentions). One pass over every id of the log; the result is catalogue-sized (news x
    sources x 2), and first_seen and build_features.reference_counts are read off it."""
    return news_mentions(behaviors).groupBy("source", "kind", C.NEWS_ID).agg(
        F.min("t").alias(C.FIRST_SEEN), F.count("*").alias("refs"))


def first_seen(references: DataFrame) -> DataFrame:
    """(news_id, first_seen): the time of the first impression that shows the news or has it
    in its history, from news_references (or any rows with news_id and first_seen). A
    catalogue-sized table."""
    return references.groupBy(C.NEWS_ID).agg(F.min(C.FIRST_SEEN).alias(C.FIRST_SEEN))


def merge_first_seen(prior: DataFrame, behaviors: DataFrame) -> DataFrame:
    """The first-seen table after `behaviors` (a day's impressions), from the one before
    them (`prior`): first_seen over the prior's rows and the day's news_mentions, in one
    aggregation keyed by news id alone."""
    mentions = news_mentions(behaviors).select(C.NEWS_ID, F.col("t").alias(C.FIRST_SEEN))
    return first_seen(prior.unionByName(mentions))


POPULARITY = "popularity"
_POPULARITY_KERNEL_OUTPUT = StructType([
    StructField("src", IntegerType(), False), StructField(C.IMPRESSION_ID, LongType(), False),
    StructField("pos", IntegerType(), False), StructField(C.POP_IMPRESSIONS, LongType(), False),
    StructField(C.POP_CLICKS, LongType(), False)])


def windowed_counts(news: np.ndarray, t: np.ndarray, label: np.ndarray,
                    window_seconds: int) -> tuple[np.ndarray, np.ndarray]:
    """For every shown candidate i: the impressions and clicks of the same news with
    t_i - window <= t < t_i (so nothing of its own second), over the given arrays.

    Sorting the occurrences by (news, t) turns each count into a difference of two
    positions found by binary search, and each click count into a difference of a running
    sum: O(n log n) with numpy, whatever the window."""
    n = len(t)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = pd.factorize(news)[0].astype(np.int64)
    offset = t.astype(np.int64) - int(t.min())          # >= 0, below 2**33 for any real log
    key = codes * (1 << 33) + offset
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    running = np.concatenate([[0], np.cumsum(label.astype(np.int64)[order])])
    lower = codes * (1 << 33) + np.maximum(offset - int(window_seconds), 0)
    hi = np.searchsorted(sorted_key, key, side="left")   # first occurrence of its own second
    lo = np.searchsorted(sorted_key, lower, side="left")
    return hi - lo, running[hi] - running[lo]


def _popularity_kernel(window_seconds: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # a partition holds every occurrence of its news ids: it is counted whole
        batches = [b for b in batches if b.num_rows]
        if not batches:               # an empty partition (fewer news than partitions)
            return
        table = pa.Table.from_batches(batches).combine_chunks()
        impressions, clicks = windowed_counts(
            table.column(C.NEWS_ID).to_numpy(zero_copy_only=False),
            table.column("t").to_numpy(), table.column(C.LABEL).to_numpy(), window_seconds)
        out = pa.table({"src": table.column("src"), C.IMPRESSION_ID: table.column(C.IMPRESSION_ID),
                        "pos": table.column("pos"), C.POP_IMPRESSIONS: pa.array(impressions),
                        C.POP_CLICKS: pa.array(clicks)})
        yield from out.to_batches(max_chunksize=1 << 16)
    return run


def candidate_popularity(behaviors: DataFrame, window_hours: int, partitions: int,
                         impression_partitions: int | None = None) -> DataFrame:
    """(src, impression_id, popularity): per impression, one struct(pop_impressions,
    pop_clicks) per candidate in listed order: the candidate news's impressions and clicks
    in [t - window, t), so nothing of its own second.

    One shuffle sends every shown candidate to its news's partition, where a numpy kernel
    counts them (windowed_counts); a second, of the same narrow rows, brings the counts back
    to their impressions. Nothing wide (no vector) moves. The kernel holds one partition's
    candidates at once, a few tens of bytes each, so `partitions` (the job passes
    spark.sql.shuffle.partitions) bounds its memory.
    The result is hash-partitioned by (src, impression_id) into `impression_partitions`
    (default: `partitions`) partitions, so a join on those keys with a table partitioned the
    same way needs no shuffle."""
    shown = (behaviors.select("src", C.IMPRESSION_ID, "t",
                              F.posexplode("candidates").alias("pos", "c"))
             .select(F.col("src").cast("int").alias("src"), C.IMPRESSION_ID, "t",
                     F.col("pos").cast("int").alias("pos"),
                     F.col("c")[C.NEWS_ID].alias(C.NEWS_ID), F.col("c")[C.LABEL].alias(C.LABEL)))
    counted = shown.repartition(partitions, C.NEWS_ID).mapInArrow(
        _popularity_kernel(int(window_hours) * 3600), _POPULARITY_KERNEL_OUTPUT)
    entries = F.sort_array(F.collect_list(F.struct("pos", C.POP_IMPRESSIONS, C.POP_CLICKS)))
    counted = counted.repartition(impression_partitions or partitions, "src", C.IMPRESSION_ID)
    return (counted.groupBy("src", C.IMPRESSION_ID).agg(entries.alias("e"))
            .select("src", C.IMPRESSION_ID, F.transform("e", lambda e: F.struct(
                e[C.POP_IMPRESSIONS].alias(C.POP_IMPRESSIONS),
                e[C.POP_CLICKS].alias(C.POP_CLICKS))).alias(POPULARITY)))


def impression_counts(behaviors: DataFrame) -> DataFrame:
    """(news_id, impressions, clicks) over the given behaviors."""
    shown = behaviors.select(F.explode("candidates").alias("c"))
    return (shown.groupBy(F.col("c")[C.NEWS_ID].alias(C.NEWS_ID))
            .agg(F.count("*").alias(C.IMPRESSIONS),
                 F.sum(F.col("c")[C.LABEL]).cast("long").alias(C.CLICKS)))


def pool_counts(recent: DataFrame, shown_since: int, popular_since: int) -> DataFrame:
    """(news_id, impressions, clicks, pop_impressions, pop_clicks) of every news shown since
    `shown_since` (epoch seconds): its impressions and clicks since then, and since
    `popular_since` (the popularity window), in one pass over `recent`'s candidates."""
    shown = recent.select("t", F.explode("candidates").alias("c")).where(
        F.col("t") >= min(shown_since, popular_since))
    label = F.col("c")[C.LABEL]

    def counted(since: int, impressions: str, clicks: str) -> list[Column]:
        inside = F.col("t") >= since
        return [F.count(F.when(inside, 1)).alias(impressions),
                F.coalesce(F.sum(F.when(inside, label)), F.lit(0)).cast("long").alias(clicks)]

    return (shown.groupBy(F.col("c")[C.NEWS_ID].alias(C.NEWS_ID))
            .agg(*counted(shown_since, C.IMPRESSIONS, C.CLICKS),
                 *counted(popular_since, C.POP_IMPRESSIONS, C.POP_CLICKS))
            .where(F.col(C.IMPRESSIONS) > 0))


def age_hours(moment_seconds: Column, seen: Column) -> Column:
    """Hours from the news item's first appearance to the moment (0 if not seen before)."""
    return F.greatest(F.lit(0.0), (moment_seconds - F.coalesce(seen, moment_seconds)) / 3600.0)


def news_dense(age: Column, impressions: Column, clicks: Column, cfg: Config) -> Column:
    """The news side's dense features, in NEWS_DENSE_NAMES order (float)."""
    prior, weight = cfg["features.ctr_prior"], cfg["features.ctr_prior_impressions"]
    impressions, clicks = F.coalesce(impressions, F.lit(0)), F.coalesce(clicks, F.lit(0))
    ctr = (clicks + F.lit(prior * weight)) / (impressions + F.lit(float(weight)))
    return F.array(*[F.log1p(age), F.log1p(impressions), F.log1p(clicks), ctr]).cast("array<float>")


def user_dense(history_len: Column, impressions: Column) -> Column:
    """The user side's dense features, in USER_DENSE_NAMES order (float)."""
    return F.array(F.log1p(history_len), F.log1p(F.coalesce(impressions, F.lit(0)))).cast("array<float>")


def user_dense_values(history_len: np.ndarray, impressions: np.ndarray) -> np.ndarray:
    """`user_dense` on numpy arrays ([N, 2] float32), for code that reads profiles without
    Spark (features/arrays.py); tests/test_cascade.py checks that the two agree."""
    return np.stack([np.log1p(history_len), np.log1p(impressions)], axis=1).astype(np.float32)
