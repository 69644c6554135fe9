"""The candidate pool as of a moment: the news shown in the recent window that have a
vector, with their side features as of that moment (what the daily scoring ranks), and the
news catalogue it is drawn from."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession, functions as F

from common import columns as C
from common import schemas
from common.config import Config
from features import behavior_log as log
from features import side_features as side
from features import user_state
from features.news_vectors import load_categories


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



def side_summary(cfg: Config) -> dict:
    """The settings that shape the side features (the model records them: scoring with other
    settings would feed it other features)."""
    return {"category_buckets": cfg["features.category_buckets"],
            "popularity_window_hours": cfg["features.popularity_window_hours"],
            "ctr_prior": cfg["features.ctr_prior"],
            "ctr_prior_impressions": cfg["features.ctr_prior_impressions"],
            "user_dense": list(side.USER_DENSE_NAMES), "news_dense": list(side.NEWS_DENSE_NAMES),
            "pair_dense": list(side.PAIR_DENSE_NAMES)}
