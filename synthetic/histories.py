"""Each user's clicks in the weeks before the data period, drawn from the planted model."""
from __future__ import annotations

import math

import numpy as np

from synthetic.population import (AFFINITY_WEIGHT, CLICK_BIAS, POPULARITY_WEIGHT, News,
                                  Users)
from synthetic.sampling import keep_first, segment_starts, sigmoid
from synthetic.timeline import HOUR, TRAIN_START, seconds
from synthetic.topics import TOPICS

HISTORY_MEAN = 30.0
HISTORY_SIGMA = 1.0
MAX_HISTORY = 500
EMPTY_HISTORY_SHARE = 0.02
POPULARITY_BINS = 10


def make_histories(users: Users, news: News, rng: np.random.Generator):
    """Each user's pre-period clicks, oldest first: (offsets into flat, flat news indices).

    P(n) is proportional to pop_n * p(u, n): the news shown (popularity weighted) and clicked.
    To keep this vectorized, p is evaluated per cell of (topic, popularity decile) at the
    cell's mean log popularity; within a cell a news is drawn in proportion to popularity."""
    n_users = len(users.ids)
    pool = np.flatnonzero(news.published < seconds(TRAIN_START))
    log_pop = np.log(news.popularity[pool])
    edges = np.quantile(log_pop, np.linspace(0, 1, POPULARITY_BINS + 1)[1:-1])
    cell = news.topic[pool] * POPULARITY_BINS + np.searchsorted(edges, log_pop)
    n_cells = len(TOPICS) * POPULARITY_BINS
    pop = news.popularity[pool]
    mass = np.bincount(cell, weights=pop, minlength=n_cells)
    mean_log_pop = (np.bincount(cell, weights=log_pop, minlength=n_cells)
                    / np.maximum(np.bincount(cell, minlength=n_cells), 1))
    cell_topic = np.arange(n_cells) // POPULARITY_BINS

    lengths = np.minimum(np.ceil(rng.lognormal(
        math.log(HISTORY_MEAN) - HISTORY_SIGMA ** 2 / 2, HISTORY_SIGMA, size=n_users)),
        MAX_HISTORY).astype(np.int64)
    lengths[rng.random(n_users) < EMPTY_HISTORY_SHARE] = 0

    # Cell per history slot: one searchsorted over all users' stacked CDFs (user u's CDF
    # shifted to [u, u+1]). Draw extra slots because repeats are dropped below.
    weight = mass[None, :] * sigmoid(
        CLICK_BIAS + AFFINITY_WEIGHT * users.interest[:, cell_topic]
        + POPULARITY_WEIGHT * mean_log_pop[None, :] + users.propensity[:, None])
    cdf = np.cumsum(weight, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    cdf += np.arange(n_users)[:, None]
    draws = lengths + np.ceil(0.25 * lengths).astype(np.int64) + np.where(lengths > 0, 3, 0)
    slot_user = np.repeat(np.arange(n_users), draws)
    slot_cell = np.searchsorted(cdf.ravel(), slot_user + rng.random(slot_user.size),
                                side="right") - slot_user * n_cells
    slot_cell = np.clip(slot_cell, 0, n_cells - 1)

    # News within the cell, in proportion to popularity (same stacked-CDF trick over cells).
    by_cell = np.argsort(cell, kind="stable")
    sorted_cell = cell[by_cell]
    cum = np.cumsum(pop[by_cell])
    cell_starts = segment_starts(np.bincount(cell, minlength=n_cells))
    before = np.concatenate([[0.0], cum])[cell_starts[:-1]]
    within = (cum - before[sorted_cell]) / mass[sorted_cell] + sorted_cell
    pick = np.searchsorted(within, slot_cell + rng.random(slot_cell.size), side="right")
    pick = np.clip(pick, cell_starts[slot_cell], cell_starts[slot_cell + 1] - 1)
    slot_news = pool[by_cell[pick]]

    hist_user, hist_news = keep_first(slot_user, slot_news, len(news.ids), lengths)
    # A click comes some hours after publication; order each history by click time.
    clicked_at = news.published[hist_news] + rng.exponential(12 * HOUR, size=hist_news.size)
    order = np.lexsort((clicked_at, hist_user))
    hist_user, hist_news = hist_user[order], hist_news[order]
    return segment_starts(np.bincount(hist_user, minlength=n_users)), hist_news
