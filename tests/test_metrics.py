"""Tests for dcn.metrics: hand-computed impressions, ties, streaming, merging, output format."""
import math
import pickle

import numpy as np
import pytest

from dcn.metrics import (CalibrationHistogram, HistogramAUC, MetricAccumulator, average_ranks,
                         expected_calibration_error, format_prediction_line, global_auc,
                         impression_auc, impression_metrics, log_loss, mrr, ndcg_at_k,
                         prediction_ranks)

approx = pytest.approx


# --------------------------------------------------------------------------- independent references

def brute_force_auc(labels, scores):
    """Pairwise definition: (#pos ranked above neg + 0.5 #ties) / (#pos * #neg)."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    credit = 0.0
    for p in pos:
        for n in neg:
            credit += 1.0 if p > n else 0.5 if p == n else 0.0
    return credit / (len(pos) * len(neg))


def trapezoid_roc_auc(labels, scores):
    """sklearn's method: ROC points at each distinct threshold, area by trapezoids."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    tpr, fpr = [0.0], [0.0]
    for t in np.unique(s)[::-1]:
        tpr.append(float(np.sum((s >= t) & (y == 1)) / y.sum()))
        fpr.append(float(np.sum((s >= t) & (y == 0)) / (1 - y).sum()))
    return sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(fpr)))


# Transcribed from MIND's official evaluate.py (valid when scores have no ties).
def official_dcg(y_true, y_score, k=10):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order[:k])
    gains = 2 ** y_true - 1
    discounts = np.log2(np.arange(len(y_true)) + 2)
    return np.sum(gains / discounts)


def official_ndcg(y_true, y_score, k=10):
    return official_dcg(y_true, y_score, k) / official_dcg(y_true, y_true, k)


def official_mrr(y_true, y_score):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order)
    return np.sum(y_true / (np.arange(len(y_true)) + 1)) / np.sum(y_true)


# --------------------------------------------------------------------------- hand-computed impressions

def test_mixed_impression_hand_computed():
    labels, scores = [1, 0, 0, 1], [0.9, 0.8, 0.1, 0.3]
    # predicted order: 0.9(+) 0.8(-) 0.3(+) 0.1(-); positives at ranks 1 and 3
    # AUC pairs: (.9>.8) (.9>.1) (.3<.8) (.3>.1) -> 3/4
    assert impression_auc(labels, scores) == approx(0.75)
    # MRR = (1/1 + 1/3) / 2
    assert mrr(labels, scores) == approx(0.6666666666666666)
    # nDCG@5 = (1/log2(2) + 1/log2(4)) / (1/log2(2) + 1/log2(3)) = 1.5 / 1.63093
    assert ndcg_at_k(labels, scores, 5) == approx(0.9197207891481876)
    # only 4 candidates: @10 == @5
    assert ndcg_at_k(labels, scores, 10) == approx(0.9197207891481876)
    # nDCG@1: top candidate is positive -> 1/1
    assert ndcg_at_k(labels, scores, 1) == approx(1.0)
    # nDCG@2 = (1/log2(2) + 0) / (1/log2(2) + 1/log2(3)) = 1 / 1.63093
    assert ndcg_at_k(labels, scores, 2) == approx(0.6131471927654584)
    m = impression_metrics(labels, scores)
    assert set(m) == {"auc", "mrr", "ndcg@5", "ndcg@10"}
    assert m == approx({"auc": 0.75, "mrr": 0.6666666666666666,
                        "ndcg@5": 0.9197207891481876, "ndcg@10": 0.9197207891481876})


def test_cutoff_k_excludes_positive_below_k():
    labels = [0, 0, 0, 0, 0, 1]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]  # the positive is ranked 6th
    m = impression_metrics(labels, scores)
    assert m["auc"] == 0.0  # 0 of 5 pairs correct
    assert m["mrr"] == approx(1 / 6)
    assert m["ndcg@5"] == 0.0  # rank 6 > 5
    # nDCG@10 = (1/log2(6+1)) / (1/log2(2)) = 1/log2(7)
    assert m["ndcg@10"] == approx(0.3562071871080222)


def test_perfect_ranking():
    labels, scores = [0, 1, 0, 1, 0], [0.1, 0.9, 0.2, 0.8, 0.3]
    m = impression_metrics(labels, scores)
    assert m["auc"] == 1.0
    assert m["mrr"] == approx(0.75)  # (1/1 + 1/2) / 2: the best possible with two clicks
    assert m["ndcg@5"] == approx(1.0)
    assert m["ndcg@10"] == approx(1.0)


def test_worst_ranking():
    labels, scores = [0, 1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2, 0.7]  # positives at ranks 5 and 4
    m = impression_metrics(labels, scores)
    assert m["auc"] == 0.0
    assert m["mrr"] == approx(0.225)  # (1/4 + 1/5) / 2
    # (1/log2(5) + 1/log2(6)) / (1 + 1/log2(3)) = (0.430677 + 0.386853) / 1.630930
    assert m["ndcg@5"] == approx(0.5012658353418871)
    assert m["ndcg@10"] == approx(0.5012658353418871)


# --------------------------------------------------------------------------- ties

def test_auc_ties_get_half_credit():
    assert impression_auc([0, 1], [0.5, 0.5]) == 0.5
    # pairs: (.7 vs .7) 0.5, (.7 > .1) 1, (.2 < .7) 0, (.2 > .1) 1 -> 2.5 / 4
    # average ranks: .1->1 .2->2 .7,.7->3.5; U = (3.5 + 2) - 2*3/2 = 2.5
    assert impression_auc([1, 0, 1, 0], [0.7, 0.7, 0.2, 0.1]) == 0.625
    assert impression_auc([1, 1, 0, 0], [0.3, 0.3, 0.3, 0.3]) == 0.5


def test_tie_rule_listed_first_ranks_first():
    # Equal scores: the candidate listed first gets rank 1.
    # negative listed first -> positive at rank 2: MRR 1/2, nDCG = (1/log2(3)) / 1
    assert mrr([0, 1], [0.5, 0.5]) == 0.5
    assert ndcg_at_k([0, 1], [0.5, 0.5], 5) == approx(0.6309297535714575)
    # positive listed first -> rank 1
    assert mrr([1, 0], [0.5, 0.5]) == 1.0
    assert ndcg_at_k([1, 0], [0.5, 0.5], 5) == 1.0
    # ties only among themselves: 0.9 is rank 1, then the two 0.4s in listed order (2 then 3)
    assert prediction_ranks([0.4, 0.9, 0.4]) == [2, 1, 3]
    assert mrr([0, 0, 1], [0.4, 0.9, 0.4]) == approx(1 / 3)
    assert mrr([1, 0, 0], [0.4, 0.9, 0.4]) == approx(1 / 2)


def test_tie_rule_deterministic_on_long_impressions():
    # numpy's default sort is not stable on long arrays; ours must keep listed order.
    n = 300
    scores = np.zeros(n)
    assert prediction_ranks(scores) == list(range(1, n + 1))
    labels = np.zeros(n, dtype=int)
    labels[-1] = 1
    assert mrr(labels, scores) == approx(1 / n)


# --------------------------------------------------------------------------- randomized references

def test_auc_matches_brute_force_pairs_random():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(2, 40))
        labels = rng.integers(0, 2, n)
        if labels.min() == labels.max():
            continue
        # coarse quantization produces many ties
        scores = np.round(rng.random(n), int(rng.integers(1, 3)))
        assert impression_auc(labels, scores) == approx(brute_force_auc(labels, scores), abs=1e-12)
        checked += 1
    assert checked > 250


def test_auc_matches_sklearn_style_trapezoid_random():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        labels[0], labels[1] = 0, 1
        scores = rng.integers(0, 8, n) / 8.0
        assert impression_auc(labels, scores) == approx(trapezoid_roc_auc(labels, scores), abs=1e-12)


def test_mrr_ndcg_match_official_script_without_ties():
    rng = np.random.default_rng(2)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        labels[int(rng.integers(0, n))] = 1
        scores = rng.permutation(n) / n  # distinct scores: official script is well defined
        assert mrr(labels, scores) == approx(official_mrr(labels, scores), abs=1e-12)
        for k in (1, 5, 10):
            assert ndcg_at_k(labels, scores, k) == approx(official_ndcg(labels, scores, k), abs=1e-12)


def test_metrics_are_invariant_to_listing_order_without_ties():
    rng = np.random.default_rng(3)
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    scores = rng.random(labels.size)
    base = impression_metrics(labels, scores)
    perm = rng.permutation(labels.size)
    assert impression_metrics(labels[perm], scores[perm]) == approx(base, abs=1e-12)


def test_global_auc_matches_brute_force_with_ties():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 1500)
    scores = rng.integers(0, 50, 1500) / 50.0
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert global_auc(labels, scores) == approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- single class and input checks

def test_single_class_impression():
    assert math.isnan(impression_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(impression_auc([1, 1], [0.1, 0.2]))
    m = impression_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert all(math.isnan(v) for v in m.values())  # no positive: nothing is defined
    m = impression_metrics([1, 1], [0.1, 0.2])
    assert math.isnan(m["auc"])
    assert m["mrr"] == approx(0.75)  # (1/1 + 1/2) / 2
    assert m["ndcg@5"] == approx(1.0)


def test_label_types_accepted():
    expected = 0.75
    assert impression_auc([True, False, False, True], [0.9, 0.8, 0.1, 0.3]) == expected
    assert impression_auc(np.array([1.0, 0.0, 0.0, 1.0], dtype=np.float32),
                          np.array([0.9, 0.8, 0.1, 0.3], dtype=np.float32)) == expected


@pytest.mark.parametrize("labels,scores", [
    ([1, 0, 2], [0.1, 0.2, 0.3]),      # non-binary label
    ([1, 0], [0.1, 0.2, 0.3]),         # length mismatch
    ([], []),                          # empty impression
    ([1, 0], [0.1, float("nan")]),     # NaN score
    ([[1, 0]], [[0.1, 0.2]]),          # not 1-D
])
def test_invalid_input_raises(labels, scores):
    with pytest.raises(ValueError):
        impression_metrics(labels, scores)
    with pytest.raises(ValueError):
        MetricAccumulator().add(labels, scores)


def test_invalid_k_raises():
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError):
            ndcg_at_k([1, 0], [0.2, 0.1], k)


# --------------------------------------------------------------------------- accumulator

def test_accumulator_hand_computed_means_and_skips():
    acc = MetricAccumulator()
    assert acc.add([1, 0, 0, 1], [0.9, 0.8, 0.1, 0.3]) is not None  # auc .75, mrr 2/3
    acc.add([0, 1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2, 0.7])              # auc 0, mrr .225
    acc.add([0, 1], [0.5, 0.5])                                       # auc .5, mrr .5
    assert acc.add([0, 0, 0], [0.3, 0.2, 0.1]) is None               # skipped
    assert acc.add([1, 1], [0.3, 0.2]) is None                       # skipped
    r = acc.result()
    assert r["impressions"] == 3
    assert r["skipped_impressions"] == 2
    assert r["auc"] == approx(0.4166666666666667)   # (0.75 + 0 + 0.5) / 3
    assert r["mrr"] == approx(0.46388888888888885)  # (2/3 + 0.225 + 0.5) / 3
    # (0.919721 + 0.501266 + 0.630930) / 3
    assert r["ndcg@5"] == approx((0.9197207891481876 + 0.5012658353418871 + 0.6309297535714575) / 3)


def test_accumulator_mean_equals_mean_of_per_impression_values():
    rng = np.random.default_rng(5)
    acc = MetricAccumulator()
    per, skipped = [], 0
    for _ in range(200):
        n = int(rng.integers(1, 30))
        labels = (rng.random(n) < 0.2).astype(int)
        scores = rng.random(n)
        if labels.min() == labels.max():
            skipped += 1
        else:
            per.append(impression_metrics(labels, scores))
        acc.add(labels, scores)
    r = acc.result()
    assert skipped > 0 and r["skipped_impressions"] == skipped
    assert r["impressions"] == len(per)
    for name in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        assert r[name] == approx(np.mean([m[name] for m in per]), rel=1e-12)


def test_accumulator_merge_equals_single():
    rng = np.random.default_rng(6)
    impressions = []
    for _ in range(120):
        n = int(rng.integers(1, 25))
        impressions.append(((rng.random(n) < 0.3).astype(int), rng.random(n)))
    single = MetricAccumulator()
    parts = [MetricAccumulator() for _ in range(3)]
    for i, (y, s) in enumerate(impressions):
        single.add(y, s)
        parts[i % 3].add(y, s)
    # partial results travel between processes (Spark tasks) pickled
    parts = [pickle.loads(pickle.dumps(p)) for p in parts]
    merged = MetricAccumulator().merge(parts[0]).merge(parts[1]).merge(parts[2])
    r1, r2 = single.result(), merged.result()
    assert r2["impressions"] == r1["impressions"] > 0
    assert r2["skipped_impressions"] == r1["skipped_impressions"] > 0
    for name in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        assert r2[name] == approx(r1[name], rel=1e-12)


def test_add_metrics_reuses_an_impressions_metrics():
    whole, segment = MetricAccumulator(), MetricAccumulator()
    segment.add_metrics(whole.add([1, 0, 0, 1], [0.9, 0.8, 0.1, 0.3]))   # auc .75, mrr 2/3
    segment.add_metrics(whole.add([0, 0], [0.3, 0.2]))                   # skipped in both
    r = segment.result()
    assert (r["impressions"], r["skipped_impressions"]) == (1, 1)
    assert r["auc"] == 0.75 and r["mrr"] == approx(2 / 3)
    assert whole.result() == approx(r, nan_ok=True)


def test_empty_accumulator_result():
    r = MetricAccumulator().result()
    assert math.isnan(r["auc"]) and r["impressions"] == 0 and r["skipped_impressions"] == 0


# --------------------------------------------------------------------------- log loss

def test_log_loss_known_values():
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.223144 + 0.510826) / 2
    assert log_loss([1, 0], [0.8, 0.4]) == approx(0.3669845875401002)
    # p = 0 for a positive is clipped to eps: -ln(1e-7)
    assert log_loss([1], [0.0]) == approx(16.11809565095832)
    assert log_loss([0], [1.0], eps=1e-7) == approx(16.11809565095832, rel=1e-6)
    assert log_loss([1, 0], [1.0, 0.0], eps=1e-15) == approx(1e-15, abs=1e-14)


# --------------------------------------------------------------------------- histogram AUC

def test_histogram_auc_within_bound_of_exact_random():
    rng = np.random.default_rng(7)
    n = 50_000
    labels = (rng.random(n) < 0.1).astype(int)
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * labels - 2)))  # signal
    exact = global_auc(labels, scores)
    h = HistogramAUC(bins=10_000)
    for chunk in np.array_split(np.arange(n), 7):
        h.add(labels[chunk], scores[chunk])
    assert h.positives + h.negatives == n
    assert abs(h.result() - exact) <= h.error_bound() + 1e-12
    assert h.error_bound() < 1e-3
    assert h.result() == approx(exact, abs=1e-3)
    assert 0.7 < exact < 0.9


def test_histogram_auc_bins_hand_computed():
    # 2 bins over [0,1]: bin0 = [0,.5), bin1 = [.5,1]
    h = HistogramAUC(bins=2)
    h.add([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1])
    # exact AUC: (.9>.6)(.9>.1)(.4<.6)(.4>.1) = 3/4; bins: pos [1,1], neg [1,1]
    # binned: pos in bin1 vs neg bin0 -> 1, vs neg bin1 -> 0.5; pos bin0 vs neg bin0 -> 0.5
    # -> (1 + 0.5 + 0.5) / 4 = 0.5; bound = 0.5 * (1*1 + 1*1) / 4 = 0.25
    assert h.result() == 0.5
    assert h.error_bound() == 0.25
    assert abs(h.result() - 0.75) <= h.error_bound()
    one = HistogramAUC(bins=1)
    one.add([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1])
    assert one.result() == 0.5  # everything tied


def test_histogram_auc_exact_when_bins_separate_scores():
    rng = np.random.default_rng(8)
    bins = 64
    labels = rng.integers(0, 2, 500)
    scores = (rng.integers(0, bins, 500) + 0.5) / bins  # bin centres: binning loses nothing
    h = HistogramAUC(bins=bins)
    h.add(labels, scores)
    assert h.result() == approx(global_auc(labels, scores), abs=1e-12)
    h2 = HistogramAUC(bins=bins, low=-1.0, high=3.0)  # custom range, scores land in 16 bins
    h2.add(labels, scores)
    assert h2.result() <= 1 and abs(h2.result() - global_auc(labels, scores)) <= h2.error_bound()


def test_histogram_auc_merge_equals_single_and_checks():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 3000)
    scores = rng.random(3000)
    single = HistogramAUC(bins=500)
    single.add(labels, scores)
    a, b = HistogramAUC(bins=500), HistogramAUC(bins=500)
    a.add(labels[:1000], scores[:1000])
    b.add(labels[1000:], scores[1000:])
    b = pickle.loads(pickle.dumps(b))
    assert a.merge(b).result() == single.result()
    np.testing.assert_array_equal(a.pos, single.pos)
    with pytest.raises(ValueError):
        a.merge(HistogramAUC(bins=400))
    with pytest.raises(ValueError):
        a.add([1, 0], [0.5, 1.5])  # outside [0, 1]
    c = HistogramAUC(bins=10, clip=True)
    c.add([1, 0], [1.5, -0.5])  # clipped to edge bins
    assert c.result() == 1.0
    assert math.isnan(HistogramAUC().result())


def test_histogram_auc_score_of_one_lands_in_last_bin():
    h = HistogramAUC(bins=4)
    h.add([1, 0, 0], [1.0, 0.99, 0.0])
    assert h.pos.tolist() == [0, 0, 0, 1]
    assert h.neg.tolist() == [1, 0, 0, 1]


# --------------------------------------------------------------------------- calibration

def hand_made_histogram():
    """10 fine bins over [0, 1]; 10 rows: 4 at 0.05 (no click), 2 at 0.25 (1 click), 2 at
    0.35 (1 click), 1 at 0.65 (a click), 1 at 0.75 (none)."""
    h = CalibrationHistogram(bins=10)
    h.counts[:] = [4, 0, 2, 2, 0, 0, 1, 1, 0, 0]
    h.positives[:] = [0, 0, 1, 1, 0, 0, 1, 0, 0, 0]
    h.prediction_sums[:] = [0.2, 0, 0.5, 0.7, 0, 0, 0.65, 0.75, 0, 0]
    return h


def test_reliability_groups_and_ece_of_a_hand_made_histogram():
    h = hand_made_histogram()
    # 5 groups of 2 rows. A bin goes to the group of its middle row: bin 0 (ranks 0-3, middle
    # 2) -> group 2 (group 1 is left empty); bin 2 (middle 5) -> 3; bin 3 (7) -> 4; bins 6
    # and 7 (8.5, 9.5) -> 5.
    assert h.group_of_bins(5)[[0, 2, 3, 6, 7]].tolist() == [1, 2, 3, 4, 4]
    table = h.reliability(5)
    assert [(r["group"], r["n"]) for r in table] == [(2, 4), (3, 2), (4, 2), (5, 2)]
    assert [r["low"] for r in table] == approx([0.0, 0.2, 0.3, 0.6])
    assert [r["high"] for r in table] == approx([0.1, 0.3, 0.4, 0.8])
    assert [r["mean_predicted"] for r in table] == approx([0.05, 0.25, 0.35, 0.70])
    assert [r["observed"] for r in table] == approx([0.0, 0.5, 0.5, 0.5])
    # 0.4 * |0.05 - 0| + 0.2 * |0.25 - 0.5| + 0.2 * |0.35 - 0.5| + 0.2 * |0.7 - 0.5|
    # = 0.02 + 0.05 + 0.03 + 0.04
    assert expected_calibration_error(table) == approx(0.14)
    assert h.rows == 10 and h.mean_predicted() == approx(0.28) and h.observed_rate() == 0.3
    # one group: the ECE is |mean prediction - click rate|
    assert expected_calibration_error(h.reliability(1)) == approx(0.02)


def test_deciles_of_rows_added_are_equal_count():
    h = CalibrationHistogram(bins=10_000)
    p = (np.arange(20) + 1 / 3) / 20         # 20 distinct predictions, 2 per decile
    labels = np.arange(20) % 2               # every other row a click
    h.add(labels[:7], p[:7])
    other = CalibrationHistogram(bins=10_000)
    other.add(labels[7:], p[7:])
    table = h.merge(pickle.loads(pickle.dumps(other))).reliability(10)
    assert [r["n"] for r in table] == [2] * 10
    assert [r["mean_predicted"] for r in table] == approx([(p[2 * i] + p[2 * i + 1]) / 2
                                                           for i in range(10)])
    assert [r["observed"] for r in table] == [0.5] * 10
    # the edges are those of the fine bins (1e-4 wide) holding the decile's rows
    assert table[0]["low"] <= p[0] < table[0]["low"] + 1e-4
    assert table[-1]["high"] - 1e-4 <= p[-1] < table[-1]["high"]
    assert table[3]["high"] <= table[4]["low"]


def test_calibration_histogram_edges_checks_and_perfect_calibration():
    h = CalibrationHistogram(bins=4)
    h.add([1, 0, 0, 1], [1.0, 0.0, 0.25, 0.9999])
    assert h.counts.tolist() == [1, 1, 0, 2]          # 1.0 in the last bin, 0.25 in bin 1
    assert h.positives.tolist() == [0, 0, 0, 2]
    with pytest.raises(ValueError):
        h.merge(CalibrationHistogram(bins=5))
    with pytest.raises(ValueError):
        h.reliability(0)
    calibrated = [{"n": 3, "mean_predicted": 0.2, "observed": 0.2},
                  {"n": 1, "mean_predicted": 0.9, "observed": 0.9}]
    assert expected_calibration_error(calibrated) == 0.0
    assert math.isnan(expected_calibration_error([]))
    empty = CalibrationHistogram(bins=10)
    assert empty.reliability() == [] and math.isnan(empty.mean_predicted())


# --------------------------------------------------------------------------- ranks

def test_average_ranks_ties_share_their_mean_rank():
    assert average_ranks([0.10, 0.30, 0.30, 0.05]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert average_ranks([7, 7, 7]).tolist() == [2.0, 2.0, 2.0]
    assert average_ranks([3.0, -1.0, 2.0]).tolist() == [3.0, 1.0, 2.0]
    with pytest.raises(ValueError):
        average_ranks([0.1, float("nan")])


# --------------------------------------------------------------------------- leaderboard output

def test_prediction_ranks_and_line():
    assert prediction_ranks([0.2, 0.9, 0.5]) == [3, 1, 2]
    assert format_prediction_line(7, [0.2, 0.9, 0.5]) == "7 [3,1,2]"
    assert format_prediction_line("12", [0.1]) == "12 [1]"
    line = format_prediction_line(1, np.array([0.3, 0.1, 0.2, 0.9], dtype=np.float32))
    assert line == "1 [2,4,3,1]"
    assert all(type(r) is int for r in prediction_ranks(np.array([0.3, 0.1])))


def test_prediction_ranks_consistent_with_mrr():
    rng = np.random.default_rng(10)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        labels = rng.integers(0, 2, n)
        labels[0] = 1
        scores = np.round(rng.random(n), 1)  # with ties
        ranks = np.array(prediction_ranks(scores))
        assert sorted(ranks.tolist()) == list(range(1, n + 1))
        assert mrr(labels, scores) == approx(np.sum(labels / ranks) / labels.sum(), abs=1e-12)
