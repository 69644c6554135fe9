"""evaluate: MIND's official metrics for the exported DCN and for baselines, on the dev rows.

    ./spark-submit.sh evaluate [--as-of T] [--config FILE] [--set key=value ...]

Inputs: the exported model version `evaluate.model_version` (empty: the latest, see
dcn/export.py); the dev feature rows, `dev_impressions/` (the order in which each dev
impression lists its candidates) and `news_popularity/` of the rows built as of `--as-of`
(default: the newest, common/outputs.py); and, when `paths.ground_truth` is set, the planted
click probabilities of a synthetic sample. The model must have been trained on the same news
vectors as those rows (its metadata records their identity).

Scorers, all computed on the same dev rows (one row per candidate that has a vector):

- `dcn`: sigmoid(model logit), the model loaded once per Spark Python worker.
- `random`: xxhash64(evaluate.seed as a 32-bit int, impression_id, news_id), its low 53 bits
  divided by 2^53: a uniform number in [0, 1), reproducible and independent of row order.
- `popularity`: the news' clicks in the train impressions (news_popularity), 0 for a news the
  train split never showed. Ties (e.g. every news new on the dev day) are NOT broken in the
  score: AUC gives them half credit and the ranking rule below orders them.
- `cosine`: cosine of user_vec and news_vec; 0 when either vector is all zeros (a user with
  no known history).
- `oracle` (only with paths.ground_truth): the planted click probability `click_prob` of
  ground_truth/dev.tsv; every dev row must have one.

Per-impression metrics (AUC, MRR, nDCG@5, nDCG@10, dcn/metrics.py) are computed over each
impression's candidates IN THE ORDER THE IMPRESSION LISTS THEM, so the tie rule of
dcn/metrics.py (equal scores: the candidate listed first ranks first) refers to the listed
order, as in prediction.txt. Impressions with a single class after dropping candidates without
a vector are skipped and counted (MetricAccumulator); impressions none of whose candidates has
a vector have no rows and are counted separately. Global AUC (a merged HistogramAUC of
`evaluate.auc_bins` bins, reported with its error bound) and log loss are computed over all
rows for the scorers that output probabilities (dcn, oracle).

How it runs in Spark (nothing per row reaches the driver):
1. dev rows --mapInPandas--> (impression, news, label, dcn, cosine); model calls of
   `evaluate.batch_size` rows, the Keras model cached per worker by model folder.
2. Broadcast join with popularity, `random` as an expression, join with the listed position
   of each candidate (posexplode of behaviors' candidates) and with the oracle.
3. groupBy impression -> arrays sorted by listed position (a few hundred entries at most),
   left-joined to every dev impression with its listed candidate count; persisted.
4. mapInPandas over those impressions: one EvaluationPartial per partition (MetricAccumulator
   per scorer, histograms, log-loss sums, counts), pickled; the driver merges the handful.
5. mapInPandas over the same impressions: one prediction line each, written by Spark sorted by
   impression id into a single file, copied to `prediction.txt`.

prediction.txt holds the ranks of `evaluate.prediction_scorer` (default dcn). A listed
candidate without a vector (so without a feature row) gets the worst ranks, after every scored
candidate, several of them in their listed order. News ids are assumed distinct within an
impression, as in MIND.

Outputs, in a new folder `paths.work/evaluation/runs/<id>/`, committed (common/storage.py)
only once all are written: metrics.json, prediction.txt,
report.md (table of scorer x metric, and the share of the gap between the best baseline and
the oracle that the DCN closes), metrics.png.
"""
from __future__ import annotations

import io
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
from common import outputs, storage
from common.cli import StageTimer, UserInputError, run_main
from common.config import Config
from common.spark import get_spark
from dcn import metrics as M
from dcn.export import check_lineage, load_model, model_folder
from jobs.build_features import DEV_IMPRESSIONS, current_rows, parse_as_of_argument

OUTPUT_FILES = ("metrics.json", "prediction.txt", "report.md", "metrics.png")
BASELINES = ("random", "popularity", "cosine")
PROBABILITY_SCORERS = ("dcn", "oracle")   # global AUC and log loss are computed for these
GAP_METRICS = ("auc", "ndcg@10")
POSITION = "position"
LISTED = "listed"
TRUTH_FILE = "dev.tsv"
TRUTH_SCHEMA = StructType([
    StructField(C.IMPRESSION_ID, LongType(), False),
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.CLICK_PROB, DoubleType(), False),
])
SCORED_SCHEMA = (f"{C.IMPRESSION_ID} long, {C.NEWS_ID} string, {C.LABEL} int, "
                 "dcn double, cosine double")
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
    widths: tuple[int, int]

    @property
    def scorers(self) -> tuple[str, ...]:
        return ("dcn", *BASELINES) + (("oracle",) if self.truth_uri else ())


def resolve_inputs(spark: SparkSession, cfg: Config, as_of=None) -> Inputs:
    """Find the model and the data, and check that they fit, before any real work."""
    from dcn.model import check_input_width  # imports Keras: keep it out of module import

    try:
        folder = model_folder(cfg, cfg["evaluate.model_version"])
        features = current_rows(cfg, as_of)
    except storage.RunNotFound as err:
        raise UserInputError(str(err)) from None
    model, metadata = load_model(folder)
    dev = spark.read.parquet(f"{features['path']}/dev")
    first = dev.select(F.size(C.USER_VEC).alias("u"), F.size(C.NEWS_VEC).alias("n")).first()
    if first is None:
        raise UserInputError(f"{features['path']}/dev holds no dev rows")
    widths = (int(first["u"]), int(first["n"]))
    try:
        check_input_width(model, *widths)
    except ValueError as err:
        raise UserInputError(f"model {folder} does not fit the dev rows of features run "
                             f"{features['run_id']}: {err}") from None
    try:
        check_lineage(metadata, features.get("summary", {}).get("news_vectors"), features["path"])
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
    lengths = column.map(len).to_numpy()
    if np.any(lengths != width):
        raise ValueError(f"a dev row has {name} width {int(lengths[lengths != width][0])}, "
                         f"the model expects {width}")
    return np.stack(column.to_numpy()).astype(np.float32, copy=False)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    e = np.exp(x[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def model_logits(model, user: np.ndarray, news: np.ndarray, batch_size: int) -> np.ndarray:
    chunks = [np.asarray(model.predict_on_batch({C.USER_VEC: user[s:s + batch_size],
                                                 C.NEWS_VEC: news[s:s + batch_size]})).reshape(-1)
              for s in range(0, len(user), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def cosine_rows(user: np.ndarray, news: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64; 0 where either vector is all zeros."""
    u, n = user.astype(np.float64), news.astype(np.float64)
    dot = np.einsum("ij,ij->i", u, n)
    norms = np.linalg.norm(u, axis=1) * np.linalg.norm(n, axis=1)
    return np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)


def _score_partitions(folder: str, batch_size: int, threads: int, widths: tuple[int, int]):
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = cached_model(folder, threads)
        for batch in batches:
            user = stack_vectors(batch[C.USER_VEC], widths[0], C.USER_VEC)
            news = stack_vectors(batch[C.NEWS_VEC], widths[1], C.NEWS_VEC)
            yield pd.DataFrame({
                C.IMPRESSION_ID: batch[C.IMPRESSION_ID].to_numpy(),
                C.NEWS_ID: batch[C.NEWS_ID].to_numpy(),
                C.LABEL: batch[C.LABEL].to_numpy(),
                "dcn": sigmoid(model_logits(model, user, news, batch_size)),
                "cosine": cosine_rows(user, news),
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
    """One row per dev feature row: impression, position, label and a column per scorer."""
    dev = spark.read.parquet(f"{inputs.features_path}/dev").select(
        C.IMPRESSION_ID, C.NEWS_ID, C.LABEL, C.USER_VEC, C.NEWS_VEC)
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
    return rows.select(C.IMPRESSION_ID, POSITION, C.LABEL, *inputs.scorers)


def per_impression(rows: DataFrame, impressions: DataFrame, scorers: tuple[str, ...]) -> DataFrame:
    """Every dev impression with its listed count and, in listed order, arrays of positions,
    labels and each scorer's scores (null arrays when no candidate has a feature row)."""
    fields = [POSITION, C.LABEL, *scorers]
    items = F.array_sort(F.collect_list(F.struct(*fields)))  # sorted by position first
    grouped = rows.groupBy(C.IMPRESSION_ID).agg(items.alias("items"))
    grouped = grouped.select(C.IMPRESSION_ID, *[F.col("items").getField(f).alias(f) for f in fields])
    return impressions.join(grouped, C.IMPRESSION_ID, "left")


# ------------------------------------------------------------------------------ metrics (workers)


class EvaluationPartial:
    """Everything the metrics need from a set of impressions, mergeable across partitions:
    a MetricAccumulator per scorer, and per probability scorer a HistogramAUC and the sum of
    per-row log losses; plus counts of impressions and candidates."""

    def __init__(self, scorers: tuple[str, ...], auc_bins: int):
        self.scorers = tuple(scorers)
        self.metrics = {s: M.MetricAccumulator() for s in self.scorers}
        probability = [s for s in self.scorers if s in PROBABILITY_SCORERS]
        self.histograms = {s: M.HistogramAUC(bins=auc_bins, clip=True) for s in probability}
        self.log_loss_sums = {s: 0.0 for s in probability}
        self.impressions_listed = 0
        self.impressions_without_rows = 0
        self.candidates_listed = 0
        self.rows = 0

    def add(self, listed: int, labels, scores: dict) -> None:
        """One impression: `labels` and `scores[scorer]` in listed order (None: no rows)."""
        self.impressions_listed += 1
        self.candidates_listed += int(listed)
        if labels is None or len(labels) == 0:
            self.impressions_without_rows += 1
            return
        labels = np.asarray(labels, dtype=np.int64)
        self.rows += labels.size
        for scorer in self.scorers:
            values = np.asarray(scores[scorer], dtype=np.float64)
            self.metrics[scorer].add(labels, values)
            if scorer in self.histograms:
                self.histograms[scorer].add(labels, values)
                self.log_loss_sums[scorer] += M.log_loss(labels, values) * labels.size

    def merge(self, other: "EvaluationPartial") -> "EvaluationPartial":
        for scorer in self.scorers:
            self.metrics[scorer].merge(other.metrics[scorer])
        for scorer in self.histograms:
            self.histograms[scorer].merge(other.histograms[scorer])
            self.log_loss_sums[scorer] += other.log_loss_sums[scorer]
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


def _metric_partials(scorers: tuple[str, ...], auc_bins: int):
    def compute(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        partial = EvaluationPartial(scorers, auc_bins)
        for batch in batches:
            columns = {name: batch[name].to_numpy() for name in (LISTED, C.LABEL, *scorers)}
            for i in range(len(batch)):
                partial.add(columns[LISTED][i], columns[C.LABEL][i],
                            {s: columns[s][i] for s in scorers})
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
            positions, scores = batch[POSITION].to_numpy(), batch[scorer].to_numpy()
            yield pd.DataFrame({
                C.IMPRESSION_ID: ids,
                "line": [prediction_line(ids[i], listed[i], positions[i], scores[i])
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


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


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
        "prediction_file": {"scorer": cfg["evaluate.prediction_scorer"],
                            "lines": merged.impressions_listed},
        "settings": {"seed": cfg["evaluate.seed"], "auc_bins": cfg["evaluate.auc_bins"],
                     "batch_size": cfg["evaluate.batch_size"]},
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


TABLE_COLUMNS = (("auc", "AUC"), ("mrr", "MRR"), ("ndcg@5", "nDCG@5"), ("ndcg@10", "nDCG@10"),
                 ("global_auc", "global AUC"), ("log_loss", "log loss"))


def _cell(value) -> str:
    return f"{value:.4f}" if _finite(value) else "-"


def metrics_table(doc: dict) -> str:
    """Markdown table: one row per scorer, one column per metric."""
    lines = ["| scorer | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
             "| --- |" + " ---: |" * len(TABLE_COLUMNS)]
    for scorer, values in doc["scorers"].items():
        lines.append(f"| {scorer} | " + " | ".join(_cell(values.get(key)) for key, _ in TABLE_COLUMNS)
                     + " |")
    return "\n".join(lines)


def gap_lines(doc: dict) -> list[str]:
    lines = []
    for metric, gap in doc["gap_closed"].items():
        name = "impression AUC" if metric == "auc" else metric.replace("ndcg", "nDCG")
        if gap is None:
            lines.append(f"- {name}: no oracle (paths.ground_truth is empty), gap not computed")
        elif gap["gap_closed"] is None:
            lines.append(f"- {name}: the best baseline ({gap['best_baseline']}) is not below the "
                         "oracle, gap undefined")
        else:
            lines.append(f"- {name}: gap closed {gap['gap_closed']:.1%} = (dcn {gap['dcn']:.4f} - "
                         f"{gap['best_baseline']} {gap['best_baseline_value']:.4f}) / (oracle "
                         f"{gap['oracle']:.4f} - {gap['best_baseline']} "
                         f"{gap['best_baseline_value']:.4f})")
    return lines


def report_markdown(doc: dict) -> str:
    imp, cand = doc["impressions"], doc["candidates"]
    dcn = doc["scorers"]["dcn"]
    parts = [
        f"# Evaluation {doc['run_id']}",
        "",
        f"Model version `{doc['model_version']}` on the dev rows of features run "
        f"`{doc['features_run_id']}`.",
        "",
        metrics_table(doc),
        "",
        "## Where the DCN sits between the best baseline and the oracle",
        "",
        *gap_lines(doc),
        "",
        "## Counts",
        "",
        f"- impressions: {imp['listed']} listed, {imp['counted']} counted, "
        f"{imp['skipped_single_class']} skipped (a single class), {imp['without_rows']} without "
        "any candidate with a vector",
        f"- candidates: {cand['listed']} listed, {cand['scored']} scored, "
        f"{cand['without_vector']} without a vector (worst ranks in prediction.txt)",
        f"- global AUC error bound (histogram of {doc['settings']['auc_bins']} bins): dcn "
        f"{_cell(dcn.get('global_auc_error_bound'))}",
        f"- prediction.txt: {doc['prediction_file']['lines']} lines, ranks of "
        f"`{doc['prediction_file']['scorer']}`",
        "",
        "Per-impression metrics are means over counted impressions. Ties: AUC gives equal scores "
        "half credit; MRR, nDCG and prediction.txt rank the candidate listed first ahead. The "
        "popularity baseline (train clicks) does not break its ties.",
        "",
    ]
    return "\n".join(parts)


def metrics_plot_png(doc: dict) -> bytes:
    """Grouped bars: one group per metric, one bar per scorer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [key for key, _ in TABLE_COLUMNS[:4]]
    scorers = list(doc["scorers"])
    figure = Figure(figsize=(9, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(len(scorers), 1)
    x = np.arange(len(keys))
    for i, scorer in enumerate(scorers):
        values = [doc["scorers"][scorer].get(k) for k in keys]
        axes.bar(x + (i - (len(scorers) - 1) / 2) * width,
                 [v if _finite(v) else 0.0 for v in values], width, label=scorer)
    axes.set_xticks(x, [title for _, title in TABLE_COLUMNS[:4]])
    axes.set_ylim(0, 1)
    axes.set_ylabel("mean over impressions")
    axes.set_title(f"MIND dev metrics, model {doc['model_version']}")
    axes.legend(loc="upper left", ncols=len(scorers), fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_outputs(out: str, doc: dict) -> None:
    storage.write_text(f"{out}/metrics.json",
                       json.dumps(_json_safe(doc), indent=2, sort_keys=True))
    storage.write_text(f"{out}/report.md", report_markdown(doc))
    storage.write_bytes(f"{out}/metrics.png", metrics_plot_png(doc))


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
    table = per_impression(rows, impressions, inputs.scorers).persist(StorageLevel.MEMORY_AND_DISK)
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
    doc = evaluate(cfg, as_of=parse_as_of_argument(args.as_of))
    print(metrics_table(doc))
    print("\n".join(gap_lines(doc)))
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
