"""One schema definition per table the project writes.

Jobs shape their output with `conform(df, SCHEMA)` right before writing, so a table's
columns, order and types are defined here and nowhere else.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, functions as F
from pyspark.sql.types import (ArrayType, DoubleType, FloatType, IntegerType, LongType,
                               StringType, StructField, StructType, TimestampType)

from common import columns as C
from common.packed_vectors import PACKED_TYPE

VECTOR_TYPE = ArrayType(FloatType())

NEWS_VECTORS = StructType([
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.VECTOR, VECTOR_TYPE, False),
])

# Each news's category and subcategory as its news.tsv row has them (embed_news writes them
# beside the vectors; the side features hash them into buckets).
NEWS_CATEGORIES = StructType([
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.CATEGORY, StringType(), True),
    StructField(C.SUBCATEGORY, StringType(), True),
])

# One row per (impression, candidate): what the trainer and the evaluator read.
FEATURE_ROWS = StructType([
    StructField(C.IMPRESSION_ID, LongType(), False),
    StructField(C.USER_ID, StringType(), False),
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.LABEL, IntegerType(), False),
    # packed float32 vectors (common/packed_vectors.py)
    StructField(C.USER_VEC, PACKED_TYPE, False),
    StructField(C.NEWS_VEC, PACKED_TYPE, False),
    StructField(C.HISTORY_LEN, IntegerType(), False),
    # side features (features/side_features.py), as of the impression's time
    StructField(C.CATEGORY, IntegerType(), False),
    StructField(C.SUBCATEGORY, IntegerType(), False),
    StructField(C.AGE_HOURS, FloatType(), False),
    StructField(C.USER_DENSE, VECTOR_TYPE, False),
    StructField(C.NEWS_DENSE, VECTOR_TYPE, False),
    StructField(C.PAIR_DENSE, VECTOR_TYPE, False),
])

# A user's state as of a moment (features/user_state.py): every news the user clicked before it
# (sorted ids; scoring excludes them), and the exact sum (float64) and count of the vectors of
# those that have one; `user_vec` is their mean, what the model and scoring see; and the
# number of the user's impressions before the moment (the user's activity). It is the
# scoring profile, and the previous day's state from which the next day's is computed.
USER_STATE = StructType([
    StructField(C.USER_ID, StringType(), False),
    StructField(C.CLICKED_NEWS, ArrayType(StringType()), False),
    StructField(C.VECTOR_SUM, ArrayType(DoubleType()), False),
    StructField(C.HISTORY_LEN, IntegerType(), False),
    StructField(C.USER_VEC, VECTOR_TYPE, False),
    StructField(C.IMPRESSIONS, LongType(), False),
])

# When each news was first seen in the log (features/side_features.py), kept beside a user state
# so the daily chain advances it a day at a time.
NEWS_FIRST_SEEN = StructType([
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.FIRST_SEEN, LongType(), False),
])

# News eligible for scoring, with their impressions and clicks in the candidate window, and
# their side features as of the pool's moment.
CANDIDATE_POOL = StructType([
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.NEWS_VEC, VECTOR_TYPE, False),
    StructField(C.IMPRESSIONS, LongType(), False),
    StructField(C.CLICKS, LongType(), False),
    StructField(C.CATEGORY, IntegerType(), False),
    StructField(C.SUBCATEGORY, IntegerType(), False),
    StructField(C.AGE_HOURS, FloatType(), False),
    StructField(C.NEWS_DENSE, VECTOR_TYPE, False),
    StructField(C.TOPIC_VEC, VECTOR_TYPE, False),
])

# Each dev impression's candidates in the order it lists them (the evaluation ranks in it).
DEV_IMPRESSIONS = StructType([
    StructField(C.IMPRESSION_ID, LongType(), False),
    StructField(C.CANDIDATES, ArrayType(StringType()), False),
])

# Rows of the input files that could not be parsed.
REJECTED_ROWS = StructType([
    StructField("file", StringType(), False),
    StructField("line", LongType(), False),
    StructField("column", IntegerType(), True),
    StructField("reason", StringType(), False),
    StructField("text", StringType(), True),
])

# Clicks per news in the train split (the popularity baseline).
NEWS_POPULARITY = StructType([
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.IMPRESSIONS, LongType(), False),
    StructField(C.CLICKS, LongType(), False),
])

# The scoring job's table (partitioned by run_date, which is not stored in the files).
RECOMMENDATIONS = StructType([
    StructField(C.USER_ID, StringType(), False),
    StructField(C.RANK, IntegerType(), False),
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.SCORE, FloatType(), False),
    StructField(C.MODEL_VERSION, StringType(), False),
    StructField(C.SCORED_AT, TimestampType(), False),
])


def conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Select exactly the schema's columns, in order, cast to the schema's types."""
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"cannot conform to schema: columns {missing} are missing "
                         f"(have {df.columns})")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


__all__ = ["NEWS_VECTORS", "NEWS_CATEGORIES", "FEATURE_ROWS", "USER_STATE", "NEWS_FIRST_SEEN", "CANDIDATE_POOL", "DEV_IMPRESSIONS", "REJECTED_ROWS",
           "NEWS_POPULARITY", "RECOMMENDATIONS", "VECTOR_TYPE", "conform"]
