"""The evaluation's metrics, computed per partition and merged: MIND's per-impression metrics
(dcn/metrics.py) over each impression's candidates in the order the impression lists them,
per scorer and per segment (users cold or warm, history-length buckets, fresh or older news),
the global AUC and log loss of the probability scorers, and the DCN's calibration."""
from __future__ import annotations

import math
import pickle
import zlib
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from common import columns as C
from dcn import metrics as M
from evaluation.scorers import LISTED, PROBABILITY_SCORERS, impression_scores, row_columns

CALIBRATION_BINS = 10_000     # fine bins of the dcn probability; deciles are formed from them
CALIBRATION_GROUPS = 10
FRESH_HOURS = 24.0            # a candidate younger than this (age_hours) is fresh
# (lower bound of history_len, bucket name), increasing
HISTORY_BUCKETS = ((0, "0"), (1, "1-4"), (5, "5-19"), (20, "20+"))
SEGMENTS = {"user": ("cold", "warm"),
            "history_len": tuple(name for _, name in HISTORY_BUCKETS),
            "news_age": ("fresh", "older")}


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
        names = (LISTED, C.LABEL, C.HISTORY_LEN, C.AGE_HOURS, *row_columns(scorers))
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
