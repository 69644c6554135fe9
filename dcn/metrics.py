"""MIND's official evaluation metrics, per impression and streamed over many impressions.

For one impression with binary click labels ``y_i`` and predicted scores ``s_i`` over its
``n`` candidates (MIND's ``evaluate.py``; Wu et al., ACL 2020):

* **AUC**: ``sklearn.metrics.roc_auc_score(y, s)``, i.e. the Mann-Whitney statistic
  ``AUC = (R_pos - P (P + 1) / 2) / (P N)`` where ``R_pos`` is the sum of the (1-based,
  ascending) ranks of the ``P`` positives among all ``n = P + N`` scores, tied scores taking
  their average rank.  Equivalently ``AUC = (#{s_pos > s_neg} + 0.5 #{s_pos == s_neg}) / (P N)``
  over all positive/negative pairs; this module computes that form exactly in integer
  arithmetic, one group of equal scores at a time (identical to the average-rank form).
  Undefined when the impression has a single class: ``nan`` is returned.
* **MRR**: rank candidates by score, best first (rank 1); ``MRR = sum_i(y_i / rank_i) / sum_i(y_i)``.
* **nDCG@k**: ``DCG@k = sum_{rank <= k} (2^y - 1) / log2(rank + 1)`` over the predicted order;
  ``nDCG@k = DCG@k(predicted order) / DCG@k(ideal order, labels sorted descending)``.

Each metric is averaged over impressions (:class:`MetricAccumulator`).

Tie rule (MRR, nDCG, :func:`prediction_ranks`): candidates are ordered by score descending
with a *stable* sort, so among equal scores the candidate listed first in the impression
gets the better rank (``np.argsort(-s, kind="stable")``).  MIND's script uses
``np.argsort(s)[::-1]``, whose order among ties depends on numpy's unstable default sort
(for short arrays it happens to put the *later*-listed candidate first); with continuous
model scores ties are rare and the rule only matters for them.  AUC is tie-aware (half
credit) and does not depend on any tie rule.

Leaderboard format (:func:`format_prediction_line`): ``ImpressionID [r1,r2,...]`` with the
rank of each candidate in the order the impression lists them, e.g. ``1 [3,1,2]``.

Also here, over all rows rather than per impression: :func:`global_auc`, :func:`log_loss`,
and :class:`HistogramAUC`, a mergeable fixed-bin approximation of the global AUC whose
error is bounded by :meth:`HistogramAUC.error_bound`; :class:`CalibrationHistogram`, a
mergeable fine histogram of predicted probabilities from which :meth:`~CalibrationHistogram.
reliability` forms equal-count groups (deciles) and :func:`expected_calibration_error` the
ECE; :func:`average_ranks`, tie-aware ranks within one impression.

Only numpy is used.  Inputs are 1-D sequences; labels must be 0/1 (bool, int or float),
scores must not be NaN.  Invalid input raises ``ValueError``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Union

import numpy as np

ArrayLike = Union[Sequence[float], np.ndarray]

METRIC_NAMES = ("auc", "mrr", "ndcg@5", "ndcg@10")


# --------------------------------------------------------------------------- validation

def _as_labels_scores(labels: ArrayLike, scores: ArrayLike):
    """Validate and convert to (int64 labels, float64 scores), both 1-D and of equal length."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    if y.shape[0] == 0:
        raise ValueError("empty input: an impression needs at least one candidate")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if y.dtype == np.bool_:
        y = y.astype(np.int64)
    elif not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"labels must be numeric 0/1, got dtype {y.dtype}")
    else:
        if np.any((y != 0) & (y != 1)):
            raise ValueError("labels must be 0 or 1")
        y = y.astype(np.int64)
    return y, s


def _predicted_order(scores: np.ndarray) -> np.ndarray:
    """Indices of candidates best first; ties keep listed order (stable sort)."""
    return np.argsort(-scores, kind="stable")


# --------------------------------------------------------------------------- AUC core

def _auc_from_groups(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUC from per-group positive/negative counts, groups sorted by ascending score.

    Within a group all scores are equal (a tie: half credit); a positive beats every
    negative in a lower group.  ``2 * U = sum_g pos_g * (2 * neg_below_g + neg_g)``, in
    int64 (exact while ``2 * P * N < 2**63``), divided by ``2 * P * N``.
    """
    pos = np.asarray(pos, dtype=np.int64)
    neg = np.asarray(neg, dtype=np.int64)
    n_pos = int(pos.sum())
    n_neg = int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    neg_below = np.cumsum(neg) - neg
    twice_u = int(np.sum(pos * (2 * neg_below + neg)))
    return twice_u / (2 * n_pos * n_neg)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    # One group per distinct score, in ascending order.
    uniq, group = np.unique(s, return_inverse=True)
    total = np.bincount(group, minlength=uniq.size)
    pos = np.bincount(group[y == 1], minlength=uniq.size)
    return _auc_from_groups(pos, total - pos)


def impression_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC over one impression's candidates, equal to sklearn's ``roc_auc_score``.

    Ties in score get half credit (average ranks).  Returns ``nan`` when the impression has
    only positives or only negatives (AUC is undefined); callers skip and count those.
    """
    y, s = _as_labels_scores(labels, scores)
    return _auc(y, s)


def global_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """ROC AUC over all rows pooled together (not averaged per impression).

    Exact, tie-aware (same definition as :func:`impression_auc`); ``nan`` for a single class.
    """
    return impression_auc(labels, scores)


# --------------------------------------------------------------------------- ranking metrics

def _mrr_sorted(ranked: np.ndarray) -> float:
    n_pos = ranked.sum()
    if n_pos == 0:
        return math.nan
    return float(np.sum(ranked / np.arange(1, ranked.size + 1)) / n_pos)


def _dcg(ranked_labels: np.ndarray, k: int) -> float:
    top = ranked_labels[:k]
    gains = np.exp2(top) - 1.0
    discounts = np.log2(np.arange(2, top.size + 2))
    return float(np.sum(gains / discounts))


def _ndcg_sorted(ranked: np.ndarray, ideal: np.ndarray, k: int) -> float:
    best = _dcg(ideal, k)
    if best == 0.0:
        return math.nan
    return _dcg(ranked, k) / best


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def mrr(labels: ArrayLike, scores: ArrayLike) -> float:
    """Mean reciprocal rank: ``sum(label_i / rank_i) / sum(label_i)``, rank 1 = highest score.

    Ties: the candidate listed first ranks first.  ``nan`` if there is no positive.
    """
    y, s = _as_labels_scores(labels, scores)
    return _mrr_sorted(y[_predicted_order(s)])


def ndcg_at_k(labels: ArrayLike, scores: ArrayLike, k: int) -> float:
    """nDCG@k with gain ``2^label - 1`` and discount ``log2(rank + 1)``.

    DCG@k of the predicted order (ties: listed first ranks first) over DCG@k of the ideal
    order.  ``nan`` if there is no positive (ideal DCG is 0).
    """
    k = _check_k(k)
    y, s = _as_labels_scores(labels, scores)
    return _ndcg_sorted(y[_predicted_order(s)], np.sort(y)[::-1], k)


def impression_metrics(labels: ArrayLike, scores: ArrayLike) -> Dict[str, float]:
    """All four official metrics of one impression: keys ``auc``, ``mrr``, ``ndcg@5``, ``ndcg@10``.

    For a single-class impression ``auc`` is ``nan`` (and ``mrr``/``ndcg@k`` are ``nan`` too
    when there is no positive); :class:`MetricAccumulator` skips such impressions.
    """
    y, s = _as_labels_scores(labels, scores)
    ranked = y[_predicted_order(s)]
    ideal = np.sort(y)[::-1]
    return {
        "auc": _auc(y, s),
        "mrr": _mrr_sorted(ranked),
        "ndcg@5": _ndcg_sorted(ranked, ideal, 5),
        "ndcg@10": _ndcg_sorted(ranked, ideal, 10),
    }


# --------------------------------------------------------------------------- streaming mean

class MetricAccumulator:
    """Streams impressions and averages the official metrics over them.

    ``add(labels, scores)`` once per impression; ``result()`` gives the mean of each metric
    over the impressions that have both a click and a non-click.  Impressions with a single
    class are skipped for *all* metrics and counted as ``skipped_impressions``;
    ``impressions`` is the number of impressions the means are taken over (so the total
    seen is ``impressions + skipped_impressions``).

    Only running sums and counts are kept, so it is cheap to pickle; partial accumulators
    (e.g. one per Spark partition) combine with :meth:`merge`.
    """

    def __init__(self) -> None:
        self.sums: Dict[str, float] = {name: 0.0 for name in METRIC_NAMES}
        self.impressions = 0
        self.skipped_impressions = 0

    def add(self, labels: ArrayLike, scores: ArrayLike):
        """Add one impression; returns its metrics dict, or ``None`` if it was skipped."""
        y, s = _as_labels_scores(labels, scores)
        n_pos = int(y.sum())
        m = None if n_pos == 0 or n_pos == y.size else impression_metrics(y, s)
        return self.add_metrics(m)

    def add_metrics(self, m: Union[Dict[str, float], None]):
        """Count one impression whose metrics :meth:`add` (of any accumulator) already
        returned: ``None`` counts it as skipped.  Lets one impression's metrics go into several
        accumulators (e.g. segments of the impressions) without computing them again."""
        if m is None:
            self.skipped_impressions += 1
            return None
        for name in METRIC_NAMES:
            self.sums[name] += m[name]
        self.impressions += 1
        return m

    def merge(self, other: "MetricAccumulator") -> "MetricAccumulator":
        """Add another accumulator's impressions into this one; returns ``self``."""
        if not isinstance(other, MetricAccumulator):
            raise TypeError(f"cannot merge {type(other).__name__} into MetricAccumulator")
        for name in METRIC_NAMES:
            self.sums[name] += other.sums[name]
        self.impressions += other.impressions
        self.skipped_impressions += other.skipped_impressions
        return self

    def result(self) -> Dict[str, Union[float, int]]:
        """Means over counted impressions (``nan`` if none), plus the two counts."""
        out: Dict[str, Union[float, int]] = {
            name: (self.sums[name] / self.impressions if self.impressions else math.nan)
            for name in METRIC_NAMES
        }
        out["impressions"] = self.impressions
        out["skipped_impressions"] = self.skipped_impressions
        return out


# --------------------------------------------------------------------------- global metrics

def log_loss(labels: ArrayLike, probabilities: ArrayLike, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy ``-mean(y log p + (1 - y) log(1 - p))``, p clipped to [eps, 1-eps]."""
    y, p = _as_labels_scores(labels, probabilities)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be in [0, 0.5), got {eps}")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


class HistogramAUC:
    """Global AUC from fixed-width score histograms, streamable and mergeable.

    Scores in ``[low, high]`` fall into ``bins`` equal-width bins (default 10,000 over
    probability [0, 1]); one count of positives and one of negatives per bin is kept.
    Binning preserves order, so the result equals the exact AUC except that pairs of a
    positive and a negative in the *same* bin count as ties (half credit) whatever their
    true order.  Hence ``|result() - exact AUC| <= error_bound() = 0.5 * sum_b pos_b neg_b / (P N)``,
    which is at most ``0.5 * max_b (share of negatives in bin b)``; with scores spread over
    many bins it is of order ``1 / bins``.  Scores outside ``[low, high]`` raise
    ``ValueError`` unless ``clip=True`` (they then go to the edge bins, still covered by
    the bound).
    """

    def __init__(self, bins: int = 10_000, low: float = 0.0, high: float = 1.0,
                 clip: bool = False) -> None:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"need finite low < high, got [{low}, {high}]")
        self.bins = int(bins)
        self.low = float(low)
        self.high = float(high)
        self.clip = bool(clip)
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)

    def _bin_index(self, s: np.ndarray) -> np.ndarray:
        if not self.clip and (np.any(s < self.low) or np.any(s > self.high)):
            raise ValueError(f"scores outside [{self.low}, {self.high}] (use clip=True)")
        s = np.clip(s, self.low, self.high)
        idx = np.floor((s - self.low) * (self.bins / (self.high - self.low))).astype(np.int64)
        return np.minimum(idx, self.bins - 1)

    def add(self, labels: ArrayLike, scores: ArrayLike) -> None:
        """Count a batch of rows (any batch: an impression, a partition, a chunk)."""
        y, s = _as_labels_scores(labels, scores)
        idx = self._bin_index(s)
        self.pos += np.bincount(idx[y == 1], minlength=self.bins)
        self.neg += np.bincount(idx[y == 0], minlength=self.bins)

    def merge(self, other: "HistogramAUC") -> "HistogramAUC":
        """Add another histogram's counts into this one (same bins); returns ``self``."""
        if not isinstance(other, HistogramAUC):
            raise TypeError(f"cannot merge {type(other).__name__} into HistogramAUC")
        if (other.bins, other.low, other.high) != (self.bins, self.low, self.high):
            raise ValueError("cannot merge histograms with different bins or range")
        self.pos += other.pos
        self.neg += other.neg
        return self

    @property
    def positives(self) -> int:
        return int(self.pos.sum())

    @property
    def negatives(self) -> int:
        return int(self.neg.sum())

    def result(self) -> float:
        """Approximate global AUC (``nan`` while only one class has been seen)."""
        return _auc_from_groups(self.pos, self.neg)

    def error_bound(self) -> float:
        """Upper bound on ``|result() - exact AUC|`` for the rows added (``nan`` if one class)."""
        n_pos, n_neg = self.positives, self.negatives
        if n_pos == 0 or n_neg == 0:
            return math.nan
        return 0.5 * int(np.sum(self.pos * self.neg)) / (n_pos * n_neg)


# --------------------------------------------------------------------------- calibration

class CalibrationHistogram:
    """Rows, clicks and the sum of predicted probabilities per fine bin of the prediction.

    ``bins`` equal-width bins over ``[0, 1]`` (a prediction of exactly 1 goes to the last bin;
    predictions outside are clipped to the edge bins).  Mergeable like :class:`HistogramAUC`,
    so each Spark partition keeps one and the driver adds them up; the coarse reliability
    groups are formed from the merged counts (:meth:`reliability`).  The prediction sums are
    exact (not binned), so a group's mean prediction is exact too.
    """

    def __init__(self, bins: int = 10_000) -> None:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.positives = np.zeros(self.bins, dtype=np.int64)
        self.prediction_sums = np.zeros(self.bins, dtype=np.float64)

    def add(self, labels: ArrayLike, probabilities: ArrayLike) -> None:
        y, p = _as_labels_scores(labels, probabilities)
        idx = np.minimum(np.floor(np.clip(p, 0.0, 1.0) * self.bins).astype(np.int64), self.bins - 1)
        self.counts += np.bincount(idx, minlength=self.bins)
        self.positives += np.bincount(idx[y == 1], minlength=self.bins)
        self.prediction_sums += np.bincount(idx, weights=p, minlength=self.bins)

    def merge(self, other: "CalibrationHistogram") -> "CalibrationHistogram":
        if not isinstance(other, CalibrationHistogram):
            raise TypeError(f"cannot merge {type(other).__name__} into CalibrationHistogram")
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms of {other.bins} and {self.bins} bins")
        self.counts += other.counts
        self.positives += other.positives
        self.prediction_sums += other.prediction_sums
        return self

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def mean_predicted(self) -> float:
        return float(self.prediction_sums.sum() / self.rows) if self.rows else math.nan

    def observed_rate(self) -> float:
        return float(self.positives.sum() / self.rows) if self.rows else math.nan

    def group_of_bins(self, groups: int = 10) -> np.ndarray:
        """The equal-count group (0 .. groups-1) of every fine bin.

        Rows sorted by prediction are cut into ``groups`` equal shares; a fine bin is kept
        whole (its rows are not told apart) and goes to the group in which its middle row
        falls: group ``floor(groups * (rows before it + its rows / 2) / N)``.  The groups
        are therefore equal-count up to one fine bin at each cut; a bin holding more than a
        group's share leaves the groups it covers empty.
        """
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"groups must be a positive integer, got {groups!r}")
        total = self.rows
        if total == 0:
            return np.zeros(self.bins, dtype=np.int64)
        middle = np.cumsum(self.counts) - self.counts / 2.0
        return np.minimum(np.floor(groups * middle / total).astype(np.int64), groups - 1)

    def reliability(self, groups: int = 10) -> List[Dict[str, float]]:
        """The reliability table: per non-empty equal-count group of predicted probability
        (deciles for ``groups=10``), ``group`` (1-based), ``n`` rows, ``low``/``high`` (the
        edges of the fine bins it spans), ``mean_predicted`` and ``observed`` (click rate)."""
        of_bin = self.group_of_bins(groups)
        n = np.bincount(of_bin, weights=self.counts, minlength=groups)
        clicks = np.bincount(of_bin, weights=self.positives, minlength=groups)
        predicted = np.bincount(of_bin, weights=self.prediction_sums, minlength=groups)
        table = []
        for g in np.flatnonzero(n > 0):
            spanned = np.flatnonzero((of_bin == g) & (self.counts > 0))
            table.append({"group": int(g) + 1, "n": int(n[g]),
                          "low": float(spanned[0] / self.bins),
                          "high": float((spanned[-1] + 1) / self.bins),
                          "mean_predicted": float(predicted[g] / n[g]),
                          "observed": float(clicks[g] / n[g])})
        return table


def expected_calibration_error(table: Sequence[Dict[str, float]]) -> float:
    """``ECE = sum_b (n_b / N) |mean_predicted_b - observed_b|`` over a reliability table
    (:meth:`CalibrationHistogram.reliability`); ``nan`` for an empty table."""
    total = sum(row["n"] for row in table)
    if total == 0:
        return math.nan
    return float(sum(row["n"] / total * abs(row["mean_predicted"] - row["observed"])
                     for row in table))


# --------------------------------------------------------------------------- ranks

def average_ranks(values: ArrayLike) -> np.ndarray:
    """1-based ascending ranks (the smallest value gets 1), tied values sharing the mean of
    the ranks they span (as ``scipy.stats.rankdata(method="average")``), as float64."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {v.shape}")
    if np.isnan(v).any():
        raise ValueError("values contain NaN")
    uniq, group, counts = np.unique(v, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)                     # rank of each distinct value's last row
    return (last - (counts - 1) / 2.0)[group].astype(np.float64)


# --------------------------------------------------------------------------- leaderboard output

def prediction_ranks(scores: ArrayLike) -> List[int]:
    """Rank (1 = best) of each candidate, in the impression's listed order.

    Ties: the candidate listed first gets the better rank (same rule as MRR/nDCG).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D sequence, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    ranks = np.empty(s.size, dtype=np.int64)
    ranks[_predicted_order(s)] = np.arange(1, s.size + 1)
    return ranks.tolist()


def format_prediction_line(impression_id: Union[int, str], scores: ArrayLike) -> str:
    """MIND leaderboard line for one impression, e.g. ``"1 [3,1,2]"`` (no spaces in brackets)."""
    return f"{impression_id} [{','.join(str(r) for r in prediction_ranks(scores))}]"
