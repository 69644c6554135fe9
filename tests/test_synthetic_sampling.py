"""Tests of the generator's sampling kernels (synthetic/sampling.py, synthetic/impressions.py)
against the laws they claim, on large seeded draws."""
from __future__ import annotations

import numpy as np
import pytest

from synthetic.impressions import (candidate_counts, draw_labels, impression_times,
                                   sample_candidates)
from synthetic.population import make_news
from synthetic.sampling import seeded_streams, shuffle_within, weighted_distinct
from synthetic.timeline import HOUR, TRAIN_START


def test_weighted_distinct_draws_distinct_items_with_successive_sampling_law():
    rng = np.random.default_rng(1)
    weights = np.array([8.0, 1.0, 1.0, 1.0, 1.0])
    counts = np.full(20000, 2)
    rows, values = weighted_distinct(weights, counts, rng)
    assert np.array_equal(np.bincount(rows, minlength=counts.size), counts)
    assert np.all(np.diff(rows) >= 0)
    pairs = values.reshape(-1, 2)
    assert np.all(pairs[:, 0] != pairs[:, 1])
    # P(item 0 among two draws) = 8/12 + 4 * (1/12) * (8/11) = 0.909...
    assert (pairs == 0).any(axis=1).mean() == pytest.approx(8 / 12 + 4 / 12 * 8 / 11, abs=0.01)
    # P(item 0 drawn first) = 8/12.
    assert (pairs[:, 0] == 0).mean() == pytest.approx(8 / 12, abs=0.01)



def test_shuffle_within_keeps_groups_and_shuffles_inside():
    rows = np.repeat(np.arange(1000), 10)
    permutation = shuffle_within(rows, np.random.default_rng(4))
    assert sorted(permutation.tolist()) == list(range(rows.size))
    assert np.array_equal(rows[permutation], rows)
    position = permutation - np.repeat(np.arange(1000) * 10, 10)   # source position in group
    assert (position == np.tile(np.arange(10), 1000)).mean() < 0.2  # identity would be 1.0
    assert np.bincount(position[::10], minlength=10).min() > 50     # first slot: any source



def test_draw_labels_is_bernoulli_conditioned_on_a_click():
    rng = np.random.default_rng(2)
    n = 30000
    # Impressions of 2 candidates with p = (0.5, 0.2), then a 1-candidate impression.
    probability = np.tile([0.5, 0.2, 0.01], n)
    starts = np.stack([np.arange(0, 3 * n, 3), np.arange(2, 3 * n, 3)], axis=1).ravel()
    offsets = np.append(starts, 3 * n)
    labels = draw_labels(probability, offsets, rng).reshape(n, 3)
    assert np.all(labels[:, 2] == 1)           # a single candidate is always the click
    pairs = labels[:, :2]
    assert np.all(pairs.sum(axis=1) >= 1)
    z = 1 - 0.5 * 0.8
    assert (pairs[:, 0] & pairs[:, 1]).mean() == pytest.approx(0.5 * 0.2 / z, abs=0.01)
    assert pairs[:, 0].mean() == pytest.approx(0.5 / z, abs=0.01)
    assert pairs[:, 1].mean() == pytest.approx(0.2 / z, abs=0.01)



def test_candidates_come_from_news_alive_at_the_time():
    rngs = seeded_streams(0)
    news = make_news(2000, rngs["news"])
    times = impression_times(200, TRAIN_START, 6, rngs["train"])
    counts = candidate_counts(200, rngs["train"])
    offsets, candidates = sample_candidates(news, times, counts, rngs["train"])
    owner = np.repeat(np.arange(200), np.diff(offsets))
    hour_start = (times[owner] // HOUR) * HOUR
    assert np.all(news.published[candidates] <= hour_start)
    assert np.all(news.expires[candidates] > hour_start)
    for i in range(200):
        chosen = candidates[offsets[i]:offsets[i + 1]]
        assert len(set(chosen.tolist())) == len(chosen) <= counts[i]
    assert candidates.size >= 0.97 * counts.sum()
    # Shuffled order: the most popular candidate is anywhere in the list, not first (the
    # weighted draw itself tends to pick popular news first).
    relative = []
    for i in range(200):
        chosen = candidates[offsets[i]:offsets[i + 1]]
        relative.append(np.argmax(news.popularity[chosen]) / (len(chosen) - 1))
    assert 0.4 <= np.mean(relative) <= 0.6
