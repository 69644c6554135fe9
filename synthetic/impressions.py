"""The train and dev impressions: who sees them and when, their candidates and click labels."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from synthetic.population import News, Users, click_logit
from synthetic.sampling import segment_starts, shuffle_within, sigmoid, weighted_distinct
from synthetic.timeline import DAY, HOUR, seconds

IMPRESSION_NOISE_SD = 0.5

MEAN_CANDIDATES = 37.0
CANDIDATES_SIGMA = 0.6
MIN_CANDIDATES = 5
MAX_CANDIDATES = 300
ACTIVITY_SIGMA = 1.0
MIN_POOL = 12
# Relative traffic per hour of the day, 0h..23h.
HOURLY_RHYTHM = (2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 9, 10, 10, 9, 9, 9, 9, 10, 10, 9, 7, 5, 3)


@dataclass
class Split:
    name: str
    user: np.ndarray        # per impression
    time: np.ndarray        # seconds since HISTORY_START
    offsets: np.ndarray     # candidate offsets per impression
    candidates: np.ndarray  # news indices
    probability: np.ndarray
    label: np.ndarray


def assign_users(n_users: int, n_train: int, n_dev: int, rng: np.random.Generator):
    """Users of the train and dev impressions: every user gets one impression, the others go
    to users in proportion to a heavy-tailed activity."""
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, size=n_users)
    total = n_train + n_dev
    base = np.arange(n_users) if total >= n_users else np.empty(0, dtype=np.int64)
    extra = rng.choice(n_users, size=total - base.size, p=activity / activity.sum())
    owners = rng.permutation(np.concatenate([base, extra]))
    return owners[:n_train], owners[n_train:]


def impression_times(n: int, start: datetime, days: int, rng: np.random.Generator):
    rhythm = np.array(HOURLY_RHYTHM, dtype=np.float64)
    day = rng.integers(0, days, size=n)
    hour = rng.choice(24, size=n, p=rhythm / rhythm.sum())
    second = rng.integers(0, HOUR, size=n)
    return seconds(start) + day * DAY + hour * HOUR + second


def candidate_counts(n: int, rng: np.random.Generator) -> np.ndarray:
    mu = math.log(MEAN_CANDIDATES) - CANDIDATES_SIGMA ** 2 / 2
    counts = np.rint(rng.lognormal(mu, CANDIDATES_SIGMA, size=n)).astype(np.int64)
    return np.clip(counts, MIN_CANDIDATES, MAX_CANDIDATES)


def alive_pool(news: News, moment: float) -> np.ndarray:
    """News shown at `moment`: published and not expired; if that is too few (only at tiny
    scales), the MIN_POOL most recently published news."""
    pool = np.flatnonzero((news.published <= moment) & (news.expires > moment))
    if pool.size >= MIN_POOL:
        return pool
    published = np.flatnonzero(news.published <= moment)
    return published[np.argsort(news.published[published])[-MIN_POOL:]]


def sample_candidates(news: News, times: np.ndarray, counts: np.ndarray,
                      rng: np.random.Generator):
    """Candidates per impression (offsets, flat news indices) from the news alive in the
    impression's hour, popularity weighted, without replacement, in shuffled order."""
    hours = (times // HOUR).astype(np.int64)
    counts = counts.copy()
    all_rows, all_news = [], []
    for hour in np.unique(hours):
        members = np.flatnonzero(hours == hour)
        pool = alive_pool(news, float(hour * HOUR))
        counts[members] = np.minimum(counts[members], max(MIN_POOL // 2, (pool.size * 3) // 4))
        rows, picks = weighted_distinct(news.popularity[pool], counts[members], rng)
        shuffle = shuffle_within(rows, rng)
        all_rows.append(members[rows[shuffle]])
        all_news.append(pool[picks[shuffle]])
    rows = np.concatenate(all_rows)
    order = np.argsort(rows, kind="stable")
    rows, chosen = rows[order], np.concatenate(all_news)[order]
    return segment_starts(np.bincount(rows, minlength=len(times))), chosen


def draw_labels(probability: np.ndarray, offsets: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Bernoulli(p) labels conditioned on at least one click per impression.

    This is the law of "draw the labels, and draw them again while the impression has no
    click", sampled exactly without the loop: the first clicked position J has
    P(J = j) = p_j * prod_{i<j} (1 - p_i) / (1 - prod_i (1 - p_i)); the candidates before J
    are not clicked and those after J are independent Bernoulli(p)."""
    n = len(offsets) - 1
    owner = np.repeat(np.arange(n), np.diff(offsets))
    log_stay = np.cumsum(np.log1p(-probability))
    before = np.concatenate([[0.0], log_stay])[offsets[:-1]]
    log_none = log_stay - before[owner]           # log P(no click up to and including j)
    # P(J <= j | J exists), stacked per impression into [owner, owner + 1].
    total = -np.expm1(log_none[offsets[1:] - 1])
    cdf = -np.expm1(log_none) / total[owner] + owner
    cdf[offsets[1:] - 1] = np.arange(1, n + 1)
    first = np.searchsorted(cdf, np.arange(n) + rng.random(n), side="right")
    first = np.clip(first, offsets[:-1], offsets[1:] - 1)
    label = rng.random(probability.size) < probability
    position = np.arange(probability.size)
    label[position < first[owner]] = False
    label[first] = True
    return label.astype(np.int8)


def make_split(name: str, owners: np.ndarray, start: datetime, days: int, users: Users,
               news: News, rng: np.random.Generator) -> Split:
    n = len(owners)
    times = impression_times(n, start, days, rng)
    offsets, candidates = sample_candidates(news, times, candidate_counts(n, rng), rng)
    noise = rng.normal(0.0, IMPRESSION_NOISE_SD, size=n)
    per_candidate = np.repeat(np.arange(n), np.diff(offsets))
    probability = sigmoid(click_logit(users, news, owners[per_candidate], candidates,
                                      noise[per_candidate]))
    label = draw_labels(probability, offsets, rng)
    return Split(name, owners, times, offsets, candidates, probability, label)
