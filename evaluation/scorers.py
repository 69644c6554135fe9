"""The evaluation's scorers on the dev rows: the DCN through the serving kernel (the scorer
that writes the recommendations table, serving/tasks.py), the baselines, the scorers derived
per impression, and the Spark plan that gathers every score per impression."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, functions as F

from common import columns as C
from common import packed_vectors
from common.config import Config
from dcn import metrics as M
from features.side_features import NEWS_DENSE_NAMES
from serving.tasks import cached_scorer

if TYPE_CHECKING:
    from evaluation.inputs import Inputs

BASELINES = ("random", "popularity", "cosine", "ctr", "ctr_cosine")
# Scorers computed per impression from other scorers' scores: name -> the scorers it combines.
DERIVED_SCORERS = {"ctr_cosine": ("ctr", "cosine")}
# global AUC and log loss are computed for these (their scores are click probabilities)
PROBABILITY_SCORERS = ("dcn", "ctr", "oracle")
POSITION = "position"
LISTED = "listed"
CTR_INDEX = NEWS_DENSE_NAMES.index("smoothed_ctr")   # the ctr baseline: news_dense[CTR_INDEX]
# Besides the model's inputs, the dev-row columns the baselines and the segments read.
CONTEXT_COLUMNS = (C.HISTORY_LEN, C.AGE_HOURS)
SCORED_SCHEMA = (f"{C.IMPRESSION_ID} long, {C.NEWS_ID} string, {C.LABEL} int, "
                 f"{C.HISTORY_LEN} int, {C.AGE_HOURS} double, ctr double, dcn double, cosine double")
RANDOM_MASK = (1 << 53) - 1


# ------------------------------------------------------------------------------ workers


def stack_vectors(column: pd.Series, width: int, name: str) -> np.ndarray:
    """A Series of equal-width vectors as a float32 matrix; a clear error on another width."""
    if len(column) == 0:
        return np.zeros((0, width), dtype=np.float32)
    lengths = column.map(packed_vectors.width).to_numpy()
    if np.any(lengths != width):
        raise ValueError(f"a dev row has {name} width {int(lengths[lengths != width][0])}, "
                         f"the model expects {width}")
    return packed_vectors.decode(column.to_numpy(), name)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    e = np.exp(x[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def model_inputs(batch: pd.DataFrame, widths: dict) -> dict:
    """The model's input columns of a batch of dev rows: float32 [rows, width] matrices for
    the array columns, int32 [rows] for the scalar ones (width 0, the category buckets)."""
    return {name: (stack_vectors(batch[name], width, name) if width
                   else batch[name].to_numpy().astype(np.int32))
            for name, width in widths.items()}


def dcn_logits(scorer, inputs: dict, batch_size: int) -> np.ndarray:
    """The logits of the dev rows `inputs` (model_inputs), each row one (user, news) pair,
    through `scorer` (serving.tasks.cached_scorer: the kernel that ranks the candidate pool)
    in calls of at most `batch_size` rows. The rows carry the pair feature (pair_dense)."""
    rows = len(inputs[C.USER_VEC])
    chunks = []
    for start in range(0, rows, batch_size):
        part = {name: values[start:start + batch_size] for name, values in inputs.items()}
        users = scorer.user_side(part[C.USER_VEC], part.get(C.USER_DENSE))
        news = scorer.news_side(part[C.NEWS_VEC], part.get(C.NEWS_DENSE), part.get(C.CATEGORY),
                                part.get(C.SUBCATEGORY))
        chunks.append(np.asarray(scorer.pair_logits(users, news, part.get(C.PAIR_DENSE))))
    return np.concatenate(chunks) if chunks else np.zeros(0)


def cosine_rows(user: np.ndarray, news: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64; 0 where either vector is all zeros (a user with no known
    history)."""
    u, n = user.astype(np.float64), news.astype(np.float64)
    dot = np.einsum("ij,ij->i", u, n)
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(n, axis=1)
    return np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)


def score_partitions(folder: str, mode: str, batch_size: int, threads: int, widths: dict):
    """The mapInPandas function: dev rows (the model's input columns, the context columns and
    `ctr`) in, rows of SCORED_SCHEMA out; `dcn` is the sigmoid of the serving scorer's logit
    (`mode`: score.mode), the scorer loaded once per Python worker."""
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer = cached_scorer(folder, mode, threads)
        for batch in batches:
            inputs = model_inputs(batch, widths)
            yield pd.DataFrame({
                C.IMPRESSION_ID: batch[C.IMPRESSION_ID].to_numpy(),
                C.NEWS_ID: batch[C.NEWS_ID].to_numpy(),
                C.LABEL: batch[C.LABEL].to_numpy(),
                C.HISTORY_LEN: batch[C.HISTORY_LEN].to_numpy(),
                C.AGE_HOURS: batch[C.AGE_HOURS].to_numpy().astype(np.float64),
                "ctr": batch["ctr"].to_numpy().astype(np.float64),
                "dcn": sigmoid(dcn_logits(scorer, inputs, batch_size)),
                "cosine": cosine_rows(inputs[C.USER_VEC], inputs[C.NEWS_VEC]),
            })
    return score


# ------------------------------------------------------------------------------ Spark plan


def random_score(seed: int) -> Column:
    """xxhash64(seed as a 32-bit int, impression_id, news_id), its low 53 bits divided by
    2^53: uniform in [0, 1), reproducible and independent of row order."""
    hashed = F.xxhash64(F.lit(int(seed)).cast("int"), F.col(C.IMPRESSION_ID), F.col(C.NEWS_ID))
    return hashed.bitwiseAND(F.lit(RANDOM_MASK)).cast("double") / float(1 << 53)


def scored_rows(spark: SparkSession, cfg: Config, inputs: Inputs, positions: DataFrame,
                truth: DataFrame | None) -> DataFrame:
    """One row per dev feature row: impression, position, label, the context columns and a
    column per row scorer. Only the columns the model and the baselines read go to Python.
    `popularity` is the news' clicks in the train period (0 for a news it never showed, ties
    left to the ranking rule); `ctr` is news_dense[CTR_INDEX], the smoothed click rate as of
    the impression; `oracle` the planted click probability."""
    ctr = F.col(C.NEWS_DENSE)[CTR_INDEX].cast("double").alias("ctr")
    columns = dict.fromkeys([C.IMPRESSION_ID, C.NEWS_ID, C.LABEL, *inputs.widths, *CONTEXT_COLUMNS])
    dev = spark.read.parquet(f"{inputs.features_path}/dev").select(*columns, ctr)
    score = score_partitions(inputs.model_folder, cfg["score.mode"], cfg["evaluate.batch_size"],
                             cfg["evaluate.threads_per_task"], inputs.widths)
    rows = dev.mapInPandas(score, schema=SCORED_SCHEMA)
    popularity = spark.read.parquet(f"{inputs.features_path}/news_popularity").select(
        C.NEWS_ID, F.col(C.CLICKS).cast("double").alias("popularity"))
    rows = (rows.join(F.broadcast(popularity), C.NEWS_ID, "left")
            .withColumn("popularity", F.coalesce("popularity", F.lit(0.0)))
            .withColumn("random", random_score(cfg["evaluate.seed"]))
            .join(positions, [C.IMPRESSION_ID, C.NEWS_ID], "inner"))
    if truth is not None:
        rows = rows.join(truth.withColumnRenamed(C.CLICK_PROB, "oracle"),
                         [C.IMPRESSION_ID, C.NEWS_ID], "left")
    return rows.select(C.IMPRESSION_ID, POSITION, C.LABEL, *CONTEXT_COLUMNS, *inputs.row_scorers)


def per_impression(rows: DataFrame, impressions: DataFrame, scorers: tuple[str, ...]) -> DataFrame:
    """Every dev impression with its listed count, its history_len and, in listed order,
    arrays of positions, labels, candidate ages and each row scorer's scores (null when no
    candidate has a feature row)."""
    fields = [POSITION, C.LABEL, C.AGE_HOURS, *scorers]
    items = F.sort_array(F.collect_list(F.struct(*fields)))  # sorted by position first
    # history_len is the impression's (its user's as of the impression): one value per group
    grouped = rows.groupBy(C.IMPRESSION_ID).agg(items.alias("items"),
                                                F.max(C.HISTORY_LEN).alias(C.HISTORY_LEN))
    grouped = grouped.select(C.IMPRESSION_ID, C.HISTORY_LEN,
                             *[F.col("items").getField(f).alias(f) for f in fields])
    return impressions.join(grouped, C.IMPRESSION_ID, "left")


# ------------------------------------------------------------------------------ derived scorers


def rank_average(*scores) -> np.ndarray:
    """The mean of each candidate's ranks under several scores of one impression: ascending
    average ranks (M.average_ranks, ties share their mean rank), so a higher value is a
    better candidate. The `ctr_cosine` baseline is rank_average(ctr, cosine)."""
    return np.mean([M.average_ranks(values) for values in scores], axis=0)


def with_derived_scores(scores: dict, scorers: tuple[str, ...]) -> dict:
    """One impression's scores (listed order) of the row scorers, plus those of the derived
    scorers among `scorers` (DERIVED_SCORERS), computed from them."""
    out = dict(scores)
    for name in scorers:
        if name in DERIVED_SCORERS:
            out[name] = rank_average(*[np.asarray(scores[s], dtype=np.float64)
                                       for s in DERIVED_SCORERS[name]])
    return out


def impression_scores(columns: dict, i: int, scorers: tuple[str, ...]) -> dict:
    """Impression i's scores of every scorer (derived ones computed) from a batch's columns
    (those of row_columns(scorers)); all None for an impression without rows."""
    stored = {s: columns[s][i] for s in row_columns(scorers)}
    if any(v is None for v in stored.values()):
        return {s: None for s in scorers}
    return with_derived_scores(stored, scorers)


def row_columns(scorers: tuple[str, ...]) -> list[str]:
    """The row scorers the derived ones among `scorers` need, and the others."""
    needed = [s for s in scorers if s not in DERIVED_SCORERS]
    needed += [s for name in scorers if name in DERIVED_SCORERS for s in DERIVED_SCORERS[name]]
    return list(dict.fromkeys(needed))
