"""evaluate: MIND's official metrics for the exported DCN and for baselines, on the dev rows.

    ./spark-submit.sh evaluate [--as-of T] [--config FILE] [--set key=value ...]

Inputs: the exported model version `evaluate.model_version` (empty: the latest, see
dcn/export.py); the dev feature rows, `dev_impressions/` (the order in which each dev
impression lists its candidates) and `news_popularity/` of the rows built as of `--as-of`
(default: the newest, common/outputs.py); and, when `paths.ground_truth` is set, the planted
click probabilities of a synthetic sample. The model must have been trained on the same news
vectors as those rows (its metadata records their identity).

Scorers, all computed on the same dev rows (one row per candidate that has a vector):

- `dcn`: sigmoid(model logit), the model loaded once per Spark Python worker and fed every
  input it has (dcn.model.input_columns: the side features' columns of the dev rows besides
  the two vectors). The exported logit is corrected for the train split's negative sampling,
  so this is meant as a click probability: its calibration is measured (below).
- `random`: xxhash64(evaluate.seed as a 32-bit int, impression_id, news_id), its low 53 bits
  divided by 2^53: a uniform number in [0, 1), reproducible and independent of row order.
- `popularity`: the news' clicks in the train impressions (news_popularity), 0 for a news the
  train split never showed. Ties (e.g. every news new on the dev day) are NOT broken in the
  score: AUC gives them half credit and the ranking rule below orders them.
- `cosine`: cosine of user_vec and news_vec; 0 when either vector is all zeros (a user with
  no known history).
- `ctr`: the news' point-in-time smoothed click rate (news_dense[CTR_INDEX], see
  features/side_features.py): its clicks over its impressions in the features.popularity_window_hours
  before the impression, smoothed toward a prior.
- `ctr_cosine`: within each impression, the mean of a candidate's ctr rank and cosine rank
  (ascending average ranks, ties sharing theirs), so the higher the better; derived per
  impression in the metric kernels, never a column of the dev rows.
- `oracle` (only with paths.ground_truth): the planted click probability `click_prob` of
  ground_truth/dev.tsv; every dev row must have one.

Per-impression metrics (AUC, MRR, nDCG@5, nDCG@10, dcn/metrics.py) are computed over each
impression's candidates IN THE ORDER THE IMPRESSION LISTS THEM, so the tie rule of
dcn/metrics.py (equal scores: the candidate listed first ranks first) refers to the listed
order, as in prediction.txt. Impressions with a single class after dropping candidates without
a vector are skipped and counted (MetricAccumulator); impressions none of whose candidates has
a vector have no rows and are counted separately. Global AUC (a merged HistogramAUC of
`evaluate.auc_bins` bins, reported with its error bound) and log loss are computed over all
rows for the scorers that output probabilities (dcn, ctr, oracle).

Calibration of dcn: a CalibrationHistogram (rows, clicks, sum of predictions in each of
CALIBRATION_BINS bins over [0, 1]) per partition, merged; on the driver, deciles (10
equal-count groups of the dev rows by predicted probability, up to one fine bin), each
decile's mean prediction against its observed click rate, and ECE = sum_b (n_b / N)
|mean_predicted_b - observed_b|; with the log loss and the overall mean prediction against
the dev click rate.

Segments (every scorer, the same per-impression metrics): users cold (history_len 0) or warm;
history_len buckets 0, 1-4, 5-19, 20+ (HISTORY_BUCKETS; the impression's history_len); and
the candidates' age, fresh (age_hours < FRESH_HOURS = 24) or older, where each impression's
metrics are over only its candidates of that age (an impression with none is not in the
segment; one left with a single class is skipped and counted).

How it runs in Spark (nothing per row reaches the driver):
1. dev rows (only the model's inputs, history_len, age_hours and news_dense's ctr entry)
   --mapInPandas--> (impression, news, label, history_len, age_hours, ctr, dcn, cosine);
   model calls of `evaluate.batch_size` rows, the Keras model cached per worker by model folder.
2. Broadcast join with popularity, `random` as an expression, join with the listed position
   of each candidate (posexplode of behaviors' candidates) and with the oracle.
3. groupBy impression -> arrays sorted by listed position (a few hundred entries at most)
   and the impression's history_len, left-joined to every dev impression with its listed
   candidate count; persisted.
4. mapInPandas over those impressions: one EvaluationPartial per partition (MetricAccumulator
   per scorer and per segment and scorer, histograms, log-loss sums, the calibration
   histogram, counts), pickled; the driver merges the handful.
5. mapInPandas over the same impressions: one prediction line each, written by Spark sorted by
   impression id into a single file, copied to `prediction.txt`.

prediction.txt holds the ranks of `evaluate.prediction_scorer` (default dcn). A listed
candidate without a vector (so without a feature row) gets the worst ranks, after every scored
candidate, several of them in their listed order. News ids are assumed distinct within an
impression, as in MIND.

Outputs, in a new folder `paths.work/evaluation/runs/<id>/`, committed (common/storage.py)
only once all are written: metrics.json (keys `scorers`, `gap_closed`, `calibration`,
`segments`, counts, settings), prediction.txt, report.md (table of scorer x metric, the share
of the gap between the best baseline and the oracle that the DCN closes, the calibration
table, the segment tables), metrics.png (bars per metric and scorer), reliability.png
(observed against predicted per decile, with the diagonal).
"""
from __future__ import annotations

import json
import math
import pickle
import posixpath
import sys
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from common import columns as C
from common import outputs, packed_vectors, storage
from common.cli import StageTimer, run_main
from common.errors import UserInputError
from common.config import Config
from common.spark import get_spark
from dcn import metrics as M
from evaluation import report
from evaluation.report import finite as _finite
from dcn.export import check_lineage, check_side_features, load_model, model_folder
from common.dates import optional_moment
from features.rows import DEV_IMPRESSIONS
from features.side_features import NEWS_DENSE_NAMES

OUTPUT_FILES = ("metrics.json", "prediction.txt", "report.md", "metrics.png", "reliability.png")
BASELINES = ("random", "popularity", "cosine", "ctr", "ctr_cosine")
# Scorers computed per impression from other scorers' scores: name -> the scorers it combines.
DERIVED_SCORERS = {"ctr_cosine": ("ctr", "cosine")}
# global AUC and log loss are computed for these (their scores are click probabilities)
PROBABILITY_SCORERS = ("dcn", "ctr", "oracle")
GAP_METRICS = ("auc", "ndcg@10")
POSITION = "position"
LISTED = "listed"
CTR_INDEX = NEWS_DENSE_NAMES.index("smoothed_ctr")   # the ctr baseline: news_dense[CTR_INDEX]
# Besides the model's inputs, the dev-row columns the baselines and the segments read.
CONTEXT_COLUMNS = (C.HISTORY_LEN, C.AGE_HOURS)
CALIBRATION_BINS = 10_000     # fine bins of the dcn probability; deciles are formed from them
CALIBRATION_GROUPS = 10
FRESH_HOURS = 24.0            # a candidate younger than this (age_hours) is fresh
# (lower bound of history_len, bucket name), increasing
HISTORY_BUCKETS = ((0, "0"), (1, "1-4"), (5, "5-19"), (20, "20+"))
SEGMENTS = {"user": ("cold", "warm"),
            "history_len": tuple(name for _, name in HISTORY_BUCKETS),
            "news_age": ("fresh", "older")}
TRUTH_FILE = "dev.tsv"
TRUTH_SCHEMA = StructType([
    StructField(C.IMPRESSION_ID, LongType(), False),
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.CLICK_PROB, DoubleType(), False),
])
SCORED_SCHEMA = (f"{C.IMPRESSION_ID} long, {C.NEWS_ID} string, {C.LABEL} int, "
                 f"{C.HISTORY_LEN} int, {C.AGE_HOURS} double, ctr double, dcn double, cosine double")
RANDOM_MASK = (1 << 53) - 1


def output_root(cfg: Config) -> str:
    return outputs.evaluation_root(cfg)


def current_evaluation(cfg: Config) -> dict:
    """The pointer of the latest published evaluation run."""
    return storage.current_run(output_root(cfg), "evaluate")


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Inputs:
    model_folder: str
    model_version: str
    features_run_id: str
    features_path: str
    feature_rows: int | None
    dev_folder: str
    truth_uri: str | None
    # The model's inputs, all feature-row columns: name -> width (0: an int32 scalar column,
    # > 0: a float32 array column), user_vec and news_vec first.
    widths: dict

    @property
    def scorers(self) -> tuple[str, ...]:
        return ("dcn", *BASELINES) + (("oracle",) if self.truth_uri else ())

    @property
    def row_scorers(self) -> tuple[str, ...]:
        """The scorers with a score per dev row (the others are derived per impression)."""
        return tuple(s for s in self.scorers if s not in DERIVED_SCORERS)


def resolve_inputs(spark: SparkSession, cfg: Config, as_of=None) -> Inputs:
    """Find the model and the data, and check that they fit, before any real work."""
    # imports Keras: keep it out of module import
    from dcn.model import check_input_width, model_spec
    from dcn.spec import input_columns

    try:
        folder = model_folder(cfg, cfg["evaluate.model_version"])
        features = outputs.current_rows(cfg, as_of)
    except storage.RunNotFound as err:
        raise UserInputError(str(err)) from None
    model, metadata = load_model(folder)
    dev = spark.read.parquet(f"{features['path']}/dev")
    extra = input_columns(model_spec(model))
    check_dev_columns(dev, [*extra, C.NEWS_DENSE, *CONTEXT_COLUMNS], features)
    arrays = [C.USER_VEC, C.NEWS_VEC] + [name for name, width in extra.items() if width]
    first = dev.select(*[packed_vectors.width_column(dev, name).alias(name) for name in arrays]).first()
    if first is None:
        raise UserInputError(f"{features['path']}/dev holds no dev rows")
    try:
        check_input_width(model, int(first[C.USER_VEC]), int(first[C.NEWS_VEC]))
        check_extra_widths(extra, {name: int(first[name]) for name in arrays})
    except ValueError as err:
        raise UserInputError(f"model {folder} does not fit the dev rows of features run "
                             f"{features['run_id']}: {err}") from None
    widths = {C.USER_VEC: int(first[C.USER_VEC]), C.NEWS_VEC: int(first[C.NEWS_VEC]), **extra}
    try:
        check_lineage(metadata, features.get("summary", {}).get("news_vectors"), features["path"])
        check_side_features(metadata, features.get("summary", {}).get("side_features"),
                            f"the features at {features['path']}")
    except ValueError as err:
        raise UserInputError(str(err)) from None
    truth = cfg["paths.ground_truth"]
    dev_counts = features.get("summary", {}).get("rows", {}).get("dev", {})
    inputs = Inputs(model_folder=folder,
                    model_version=metadata.get("version", posixpath.basename(folder)),
                    features_run_id=features["run_id"], features_path=features["path"],
                    feature_rows=dev_counts.get("rows"),
                    dev_folder=features["summary"].get("sources", {}).get("dev", ""),
                    truth_uri=storage.join(truth, TRUTH_FILE) if truth else None, widths=widths)
    if cfg["evaluate.prediction_scorer"] not in inputs.scorers:
        raise UserInputError(f"evaluate.prediction_scorer must be one of {list(inputs.scorers)}, "
                             f"got {cfg['evaluate.prediction_scorer']!r}")
    return inputs


def check_dev_columns(dev: DataFrame, needed: list[str], features: dict) -> None:
    """The model's side inputs, the ctr baseline and the segments read these dev-row columns:
    rows built before the side features existed lack them."""
    missing = [name for name in dict.fromkeys(needed) if name not in dev.columns]
    if missing:
        raise UserInputError(f"the dev rows of features run {features['run_id']} "
                             f"({features['path']}/dev) have no {', '.join(missing)}: rebuild "
                             "them with this version of build_features")


def check_extra_widths(extra: dict, found: dict) -> None:
    """A ValueError naming the first array input whose width in the data is not the model's."""
    for name, width in extra.items():
        if width and found[name] != width:
            raise ValueError(f"model expects {name} width {width}, but the data has "
                             f"{name} width {found[name]}")


def read_truth(spark: SparkSession, uri: str) -> DataFrame:
    """ground_truth/dev.tsv with its header checked against impression_id, news_id, click_prob."""
    if not storage.exists(uri):
        raise UserInputError(f"paths.ground_truth is set but {uri} does not exist")
    return spark.read.csv(uri, sep="\t", header=True, schema=TRUTH_SCHEMA, enforceSchema=False,
                          mode="FAILFAST")


def check_truth_covers(dev: DataFrame, truth: DataFrame, uri: str) -> None:
    """Every dev row needs a planted probability, or the oracle's metrics mean nothing."""
    keys = [C.IMPRESSION_ID, C.NEWS_ID]
    missing = dev.select(*keys).join(truth.select(*keys), keys, "left_anti")
    examples = missing.limit(3).collect()
    if examples:
        shown = ", ".join(f"({r[C.IMPRESSION_ID]}, {r[C.NEWS_ID]})" for r in examples)
        raise UserInputError(f"{uri} has no click_prob for {missing.count()} dev rows "
                             f"(impression, news), e.g. {shown}")


# ------------------------------------------------------------------------------ scoring (workers)

_MODELS: dict[str, object] = {}


def cached_model(folder: str, threads: int):
    """The Keras model of `folder`, loaded once per Python worker process (workers are reused
    across tasks, and loading TensorFlow and the model takes seconds)."""
    model = _MODELS.get(folder)
    if model is None:
        if threads > 0:
            import tensorflow as tf
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already initialized in this process
                pass
        model, _ = load_model(folder)
        _MODELS[folder] = model
    return model


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
    """The model's input dict of a batch of dev rows: float32 [rows, width] matrices for the
    array columns, int32 [rows] for the scalar ones (width 0, the category buckets)."""
    return {name: (stack_vectors(batch[name], width, name) if width
                   else batch[name].to_numpy().astype(np.int32))
            for name, width in widths.items()}


def model_logits(model, inputs: dict, batch_size: int) -> np.ndarray:
    """The model's logits of every row of `inputs` (a dict of equal-length arrays), in model
    calls of at most `batch_size` rows."""
    rows = len(next(iter(inputs.values())))
    chunks = [np.asarray(model.predict_on_batch(
                  {name: values[s:s + batch_size] for name, values in inputs.items()})).reshape(-1)
              for s in range(0, rows, batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def cosine_rows(user: np.ndarray, news: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64; 0 where either vector is all zeros."""
    u, n = user.astype(np.float64), news.astype(np.float64)
    dot = np.einsum("ij,ij->i", u, n)
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(n, axis=1)
    return np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)


def _score_partitions(folder: str, batch_size: int, threads: int, widths: dict):
    """Kernel: dev rows (the model's input columns, the context columns and `ctr`) -> rows of
    SCORED_SCHEMA."""
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = cached_model(folder, threads)
        for batch in batches:
            inputs = model_inputs(batch, widths)
            yield pd.DataFrame({
                C.IMPRESSION_ID: batch[C.IMPRESSION_ID].to_numpy(),
                C.NEWS_ID: batch[C.NEWS_ID].to_numpy(),
                C.LABEL: batch[C.LABEL].to_numpy(),
                C.HISTORY_LEN: batch[C.HISTORY_LEN].to_numpy(),
                C.AGE_HOURS: batch[C.AGE_HOURS].to_numpy().astype(np.float64),
                "ctr": batch["ctr"].to_numpy().astype(np.float64),
                "dcn": sigmoid(model_logits(model, inputs, batch_size)),
                "cosine": cosine_rows(inputs[C.USER_VEC], inputs[C.NEWS_VEC]),
            })
    return score


# ------------------------------------------------------------------------------ Spark plan


def random_score(seed: int) -> Column:
    """Uniform in [0, 1) from a seeded hash of (impression, news): see the module docstring."""
    hashed = F.xxhash64(F.lit(int(seed)).cast("int"), F.col(C.IMPRESSION_ID), F.col(C.NEWS_ID))
    return hashed.bitwiseAND(F.lit(RANDOM_MASK)).cast("double") / float(1 << 53)


def listed_candidates(spark: SparkSession, features_path: str) -> tuple[DataFrame, DataFrame]:
    """(impressions: impression_id, listed) and (positions: impression_id, position, news_id),
    position being the 0-based place of the candidate in the impression's list."""
    listing = spark.read.parquet(f"{features_path}/{DEV_IMPRESSIONS}")
    impressions = listing.select(C.IMPRESSION_ID, F.size(C.CANDIDATES).alias(LISTED))
    positions = (listing.select(C.IMPRESSION_ID, F.posexplode(C.CANDIDATES).alias(POSITION, C.NEWS_ID))
                 .select(C.IMPRESSION_ID, POSITION, C.NEWS_ID))
    return impressions, positions


def scored_rows(spark: SparkSession, cfg: Config, inputs: Inputs, positions: DataFrame,
                truth: DataFrame | None) -> DataFrame:
    """One row per dev feature row: impression, position, label, the context columns and a
    column per row scorer. Only the columns the model and the baselines read go to Python."""
    ctr = F.col(C.NEWS_DENSE)[CTR_INDEX].cast("double").alias("ctr")
    columns = dict.fromkeys([C.IMPRESSION_ID, C.NEWS_ID, C.LABEL, *inputs.widths, *CONTEXT_COLUMNS])
    dev = spark.read.parquet(f"{inputs.features_path}/dev").select(*columns, ctr)
    score = _score_partitions(inputs.model_folder, cfg["evaluate.batch_size"],
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


# ------------------------------------------------------------------------------ metrics (workers)


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


def user_segment(history_len: int) -> str:
    """cold: the user had clicked nothing known before the impression."""
    return "cold" if int(history_len) == 0 else "warm"


def history_bucket(history_len: int) -> str:
    """The HISTORY_BUCKETS name of an impression's history_len."""
    n = int(history_len)
    if n < 0:
        raise ValueError(f"history_len must be >= 0, got {n}")
    return [name for low, name in HISTORY_BUCKETS if n >= low][-1]


def freshness_masks(age_hours) -> dict:
    """{"fresh": candidates younger than FRESH_HOURS, "older": the others}, boolean arrays."""
    fresh = np.asarray(age_hours, dtype=np.float64) < FRESH_HOURS
    return {"fresh": fresh, "older": ~fresh}


class EvaluationPartial:
    """Everything the metrics need from a set of impressions, mergeable across partitions:
    a MetricAccumulator per scorer and per (segment dimension, segment, scorer), fed one
    impression at a time (`add`); per probability scorer a HistogramAUC and the sum of
    per-row log losses, and a CalibrationHistogram of the dcn probabilities, fed any batch of
    rows (`add_rows`: per batch of impressions, since each call costs a pass over the
    histograms' bins); plus counts of impressions and candidates."""

    def __init__(self, scorers: tuple[str, ...], auc_bins: int,
                 calibration_bins: int = CALIBRATION_BINS):
        self.scorers = tuple(scorers)
        self.metrics = {s: M.MetricAccumulator() for s in self.scorers}
        probability = [s for s in self.scorers if s in PROBABILITY_SCORERS]
        self.histograms = {s: M.HistogramAUC(bins=auc_bins, clip=True) for s in probability}
        self.log_loss_sums = {s: 0.0 for s in probability}
        self.calibration = M.CalibrationHistogram(bins=calibration_bins)
        self.segments = {(dimension, segment): {s: M.MetricAccumulator() for s in self.scorers}
                         for dimension, names in SEGMENTS.items() for segment in names}
        self.impressions_listed = 0
        self.impressions_without_rows = 0
        self.candidates_listed = 0
        self.rows = 0

    def add(self, listed: int, labels, scores: dict, history_len=None, age_hours=None) -> None:
        """One impression's per-impression metrics and counts: `labels`, `scores[scorer]`
        (every scorer, derived ones included) and `age_hours` in listed order (labels None:
        no rows); `history_len` its user's. Its rows go to `add_rows` too (the caller's)."""
        self.impressions_listed += 1
        self.candidates_listed += int(listed)
        if labels is None or len(labels) == 0:
            self.impressions_without_rows += 1
            return
        labels = np.asarray(labels, dtype=np.int64)
        self.rows += labels.size
        values = {s: np.asarray(scores[s], dtype=np.float64) for s in self.scorers}
        user_segments = [("user", user_segment(history_len)),
                         ("history_len", history_bucket(history_len))]
        for scorer in self.scorers:
            result = self.metrics[scorer].add(labels, values[scorer])
            for key in user_segments:   # the impression's own metrics: nothing to recompute
                self.segments[key][scorer].add_metrics(result)
        self._add_freshness(labels, values, age_hours)

    def _add_freshness(self, labels: np.ndarray, values: dict, age_hours) -> None:
        """Per freshness, the metrics over only the impression's candidates of that freshness
        (an impression without any is not in the segment; one left with a single class is
        skipped and counted, as for the whole impressions)."""
        for segment, mask in freshness_masks(age_hours).items():
            if not mask.any():
                continue
            accumulators = self.segments[("news_age", segment)]
            subset = labels[mask]
            single_class = subset.min() == subset.max()
            for scorer in self.scorers:
                if single_class:   # skipped: no need to look at the scores
                    accumulators[scorer].add_metrics(None)
                else:
                    accumulators[scorer].add(subset, values[scorer][mask])

    def add_rows(self, labels, scores: dict) -> None:
        """Rows of any number of impressions (labels and each probability scorer's scores,
        aligned) into the global AUC histograms, the log-loss sums and the calibration."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size == 0:
            return
        for scorer in self.histograms:
            values = np.asarray(scores[scorer], dtype=np.float64)
            self.histograms[scorer].add(labels, values)
            self.log_loss_sums[scorer] += M.log_loss(labels, values) * labels.size
        if "dcn" in self.scorers:
            self.calibration.add(labels, scores["dcn"])

    def merge(self, other: "EvaluationPartial") -> "EvaluationPartial":
        for scorer in self.scorers:
            self.metrics[scorer].merge(other.metrics[scorer])
            for key in self.segments:
                self.segments[key][scorer].merge(other.segments[key][scorer])
        for scorer in self.histograms:
            self.histograms[scorer].merge(other.histograms[scorer])
            self.log_loss_sums[scorer] += other.log_loss_sums[scorer]
        self.calibration.merge(other.calibration)
        self.impressions_listed += other.impressions_listed
        self.impressions_without_rows += other.impressions_without_rows
        self.candidates_listed += other.candidates_listed
        self.rows += other.rows
        return self

    def scorer_metrics(self, scorer: str) -> dict:
        out = dict(self.metrics[scorer].result())
        if scorer in self.histograms:
            histogram = self.histograms[scorer]
            out["global_auc"] = histogram.result()
            out["global_auc_error_bound"] = histogram.error_bound()
            out["log_loss"] = self.log_loss_sums[scorer] / self.rows if self.rows else math.nan
        return out

    def segment_metrics(self) -> dict:
        """{dimension: {segment: {scorer: MetricAccumulator result}}}, in SEGMENTS order."""
        return {dimension: {segment: {s: self.segments[(dimension, segment)][s].result()
                                      for s in self.scorers}
                            for segment in names}
                for dimension, names in SEGMENTS.items()}

    def calibration_summary(self, groups: int = CALIBRATION_GROUPS) -> dict:
        """The dcn probabilities' reliability: mean prediction against the observed click
        rate, the equal-count groups (deciles) and their ECE (log loss: scorer_metrics)."""
        table = self.calibration.reliability(groups)
        return {"rows": self.calibration.rows,
                "mean_predicted": self.calibration.mean_predicted(),
                "observed_ctr": self.calibration.observed_rate(),
                "ece": M.expected_calibration_error(table),
                "bins": self.calibration.bins, "groups": groups, "deciles": table}


def impression_scores(columns: dict, i: int, scorers: tuple[str, ...]) -> dict:
    """Impression i's scores of every scorer (derived ones computed) from a batch's columns
    (those of _row_columns(scorers)); all None for an impression without rows."""
    stored = {s: columns[s][i] for s in _row_columns(scorers)}
    if any(v is None for v in stored.values()):
        return {s: None for s in scorers}
    return with_derived_scores(stored, scorers)


def _row_columns(scorers: tuple[str, ...]) -> list[str]:
    """The row scorers the derived ones among `scorers` need, and the others."""
    needed = [s for s in scorers if s not in DERIVED_SCORERS]
    needed += [s for name in scorers if name in DERIVED_SCORERS for s in DERIVED_SCORERS[name]]
    return list(dict.fromkeys(needed))


def batch_rows(columns: dict, scorers: list[str]) -> tuple[np.ndarray, dict]:
    """(labels, {scorer: scores}) of every row of a batch of impressions, concatenated (the
    impressions without rows contribute none): what EvaluationPartial.add_rows takes."""
    present = [i for i, labels in enumerate(columns[C.LABEL]) if labels is not None]
    def joined(name, dtype):
        if not present:
            return np.zeros(0, dtype=dtype)
        return np.concatenate([np.asarray(columns[name][i], dtype=dtype) for i in present])
    return joined(C.LABEL, np.int64), {s: joined(s, np.float64) for s in scorers}


def _metric_partials(scorers: tuple[str, ...], auc_bins: int):
    def compute(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        partial = EvaluationPartial(scorers, auc_bins)
        names = (LISTED, C.LABEL, C.HISTORY_LEN, C.AGE_HOURS, *_row_columns(scorers))
        global_scorers = [s for s in scorers if s in partial.histograms or s == "dcn"]
        for batch in batches:
            columns = {name: batch[name].to_numpy() for name in names}
            for i in range(len(batch)):
                partial.add(columns[LISTED][i], columns[C.LABEL][i],
                            impression_scores(columns, i, scorers),
                            history_len=columns[C.HISTORY_LEN][i],
                            age_hours=columns[C.AGE_HOURS][i])
            partial.add_rows(*batch_rows(columns, global_scorers))
        # The histograms are mostly zeros: compressing keeps the collected partials small.
        yield pd.DataFrame({"partial": [zlib.compress(pickle.dumps(partial))]})
    return compute


def collect_metrics(table: DataFrame, scorers: tuple[str, ...], auc_bins: int) -> EvaluationPartial:
    """Per-partition partials computed in the workers, merged on the driver."""
    partials = table.mapInPandas(_metric_partials(scorers, auc_bins), schema="partial binary")
    merged = EvaluationPartial(scorers, auc_bins)
    for row in partials.collect():
        merged.merge(pickle.loads(zlib.decompress(row["partial"])))
    return merged


# ------------------------------------------------------------------------------ prediction.txt


def prediction_line(impression_id: int, listed: int, positions, scores) -> str:
    """MIND line of one impression; candidates without a score (no feature row) rank last."""
    full = np.full(int(listed), -np.inf)
    if positions is not None and len(positions):
        full[np.asarray(positions, dtype=np.int64)] = np.asarray(scores, dtype=np.float64)
    return M.format_prediction_line(int(impression_id), full)


def _prediction_lines(scorer: str):
    def lines(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            ids, listed = batch[C.IMPRESSION_ID].to_numpy(), batch[LISTED].to_numpy()
            positions = batch[POSITION].to_numpy()
            columns = {name: batch[name].to_numpy() for name in _row_columns((scorer,))}
            yield pd.DataFrame({
                C.IMPRESSION_ID: ids,
                "line": [prediction_line(ids[i], listed[i], positions[i],
                                         impression_scores(columns, i, (scorer,))[scorer])
                         for i in range(len(batch))],
            })
    return lines


def write_prediction_file(table: DataFrame, scorer: str, target: str) -> None:
    """Lines sorted by impression id, written by Spark as one file, then copied to `target`
    (a copy, not a rename: object stores have none; the run is not committed yet)."""
    parts = f"{posixpath.dirname(target)}/_prediction_parts"
    lines = table.mapInPandas(_prediction_lines(scorer),
                              schema=f"{C.IMPRESSION_ID} long, line string")
    lines.repartition(1).sortWithinPartitions(C.IMPRESSION_ID).select("line").write.text(parts)
    fs, parts_path = storage.filesystem(parts)
    files = [info.path for info in fs.get_file_info(pafs.FileSelector(parts_path))
             if info.is_file and info.base_name.startswith("part-")]
    if len(files) > 1:
        raise RuntimeError(f"expected one part file in {parts}, found {len(files)}")
    _, target_path = storage.filesystem(target)
    if files:
        fs.copy_file(files[0], target_path)
    else:  # no dev impression at all: an empty file
        with fs.open_output_stream(target_path):
            pass
    fs.delete_dir(parts_path)


# ------------------------------------------------------------------------------ results


def gap_closed(scores: dict, metric: str) -> dict | None:
    """Where dcn sits between the best baseline (0) and the oracle (1) on `metric`; None
    without an oracle or when no baseline is below it."""
    baselines = {b: scores[b][metric] for b in BASELINES if _finite(scores[b][metric])}
    if "oracle" not in scores or not baselines:
        return None
    best = max(baselines, key=baselines.get)
    dcn, oracle = scores["dcn"][metric], scores["oracle"][metric]
    span = oracle - baselines[best]
    value = (dcn - baselines[best]) / span if _finite(span) and span > 0 and _finite(dcn) else None
    return {"best_baseline": best, "best_baseline_value": baselines[best], "dcn": dcn,
            "oracle": oracle, "gap_closed": value}


def metrics_document(run_id: str, inputs: Inputs, cfg: Config, merged: EvaluationPartial,
                     seconds: dict) -> dict:
    scores = {s: merged.scorer_metrics(s) for s in inputs.scorers}
    dcn = scores["dcn"]
    return {
        "run_id": run_id,
        "model_version": inputs.model_version,
        "model_folder": inputs.model_folder,
        "features_run_id": inputs.features_run_id,
        "features_path": inputs.features_path,
        "dev": inputs.dev_folder,
        "ground_truth": inputs.truth_uri,
        "scorers": scores,
        "impressions": {
            "listed": merged.impressions_listed,
            "counted": dcn["impressions"],
            "skipped_single_class": dcn["skipped_impressions"],
            "without_rows": merged.impressions_without_rows,
        },
        "candidates": {
            "listed": merged.candidates_listed,
            "scored": merged.rows,
            "without_vector": merged.candidates_listed - merged.rows,
            "feature_rows": inputs.feature_rows,
        },
        "gap_closed": {m: gap_closed(scores, m) for m in GAP_METRICS},
        "calibration": {**merged.calibration_summary(), "log_loss": dcn["log_loss"]},
        "segments": merged.segment_metrics(),
        "model_inputs": dict(inputs.widths),
        "prediction_file": {"scorer": cfg["evaluate.prediction_scorer"],
                            "lines": merged.impressions_listed},
        "settings": {"seed": cfg["evaluate.seed"], "auc_bins": cfg["evaluate.auc_bins"],
                     "batch_size": cfg["evaluate.batch_size"],
                     "calibration_bins": merged.calibration.bins, "fresh_hours": FRESH_HOURS},
        "seconds": seconds,
    }


def _json_safe(value):
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_outputs(out: str, doc: dict) -> None:
    storage.write_text(f"{out}/metrics.json",
                       json.dumps(_json_safe(doc), indent=2, sort_keys=True))
    storage.write_text(f"{out}/report.md", report.report_markdown(doc))
    storage.write_bytes(f"{out}/metrics.png", report.metrics_plot_png(doc))
    storage.write_bytes(f"{out}/reliability.png", report.reliability_plot_png(doc))


# ------------------------------------------------------------------------------ the job


def evaluate(cfg: Config, spark: SparkSession | None = None, as_of=None) -> dict:
    """Score the dev rows, compute every scorer's metrics, write and publish a run.

    Returns the metrics document (also metrics.json) with `output`, the run folder.
    """
    spark = spark or get_spark(cfg, "evaluate")
    timer = StageTimer()
    with timer.stage("check_inputs"):
        inputs = resolve_inputs(spark, cfg, as_of)
        truth = read_truth(spark, inputs.truth_uri) if inputs.truth_uri else None
        if truth is not None:
            dev_keys = spark.read.parquet(f"{inputs.features_path}/dev")
            check_truth_covers(dev_keys, truth, inputs.truth_uri)
    root = output_root(cfg)
    run_id = storage.start_run(root)
    out = storage.run_dir(root, run_id)
    impressions, positions = listed_candidates(spark, inputs.features_path)
    rows = scored_rows(spark, cfg, inputs, positions, truth)
    table = per_impression(rows, impressions, inputs.row_scorers).persist(
        StorageLevel.MEMORY_AND_DISK)
    try:
        with timer.stage("score_and_metrics"):
            merged = collect_metrics(table, inputs.scorers, cfg["evaluate.auc_bins"])
        with timer.stage("prediction_file"):
            write_prediction_file(table, cfg["evaluate.prediction_scorer"], f"{out}/prediction.txt")
    finally:
        table.unpersist()
    if inputs.feature_rows is not None and merged.rows != inputs.feature_rows:
        print(f"warning: {inputs.feature_rows - merged.rows} dev feature rows are not candidates "
              f"of {inputs.dev_folder}/behaviors.tsv (features built from other dev data?)",
              file=sys.stderr)
    doc = metrics_document(run_id, inputs, cfg, merged, timer.seconds)
    with timer.stage("write_reports"):
        write_outputs(out, doc)
    doc["seconds"] = timer.seconds
    summary = {"model_version": inputs.model_version, "features_run_id": inputs.features_run_id,
               "metrics": {s: {k: v for k, v in m.items() if k in M.METRIC_NAMES}
                           for s, m in _json_safe(doc["scorers"]).items()}}
    storage.publish_run(root, run_id, summary, keep_runs=cfg["paths.keep_runs"])
    return dict(doc, output=out)


def _job(cfg: Config, args) -> dict:
    doc = evaluate(cfg, as_of=optional_moment(args.as_of, "--as-of"))
    print(report.metrics_table(doc))
    print("\n".join(report.gap_lines(doc)))
    print("\n".join(report.calibration_lines(doc)[:2]))   # dcn: log loss, ECE, mean vs observed
    return {"run_id": doc["run_id"], "output": doc["output"], "model_version": doc["model_version"],
            "features_run_id": doc["features_run_id"], "impressions": doc["impressions"],
            "seconds": doc["seconds"]}


def main(argv: list[str] | None = None) -> int:
    return run_main("Evaluate the exported DCN and baselines on the dev rows (MIND metrics).",
                    _job, argv, extra_arguments=lambda p: p.add_argument(
                        "--as-of", help="evaluate the rows built as of this moment "
                                        "(default: the newest)"))


if __name__ == "__main__":
    # Run through the importable module, so Spark pickles this module's functions by
    # reference and the per-worker model cache (_MODELS) is the module's own.
    from jobs.evaluate import main as _main
    sys.exit(_main())
