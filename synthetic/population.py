"""The news and the users of the planted model, and its click logit."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic.timeline import DAY, DEV_END, TRAIN_START, seconds
from synthetic.topics import TOPICS

CLICK_BIAS = -5.6
AFFINITY_WEIGHT = 5.0
POPULARITY_WEIGHT = 0.3
USER_NOISE_SD = 0.5
POPULARITY_SIGMA = 1.0

DOMINANT_TOPIC_COUNTS = (0.4, 0.4, 0.2)   # P(1, 2, 3 dominant topics)
DOMINANT_MASS = 0.8
DOMINANT_ALPHA = 1.5
BACKGROUND_ALPHA = 0.2

# News published in the impression window (the rest fall in the history window); their
# publication times start a few days before train so the first train day has a full pool.
IMPRESSION_WINDOW_NEWS_SHARE = 0.55
IMPRESSION_WINDOW_LEAD_DAYS = 3
LIFETIME_MIN_DAYS = 1.5
LIFETIME_MEAN_EXTRA_DAYS = 1.5
LIFETIME_MAX_DAYS = 6.0


def _unique_ids(rng, n: int, prefix: str) -> np.ndarray:
    """n distinct ids `prefix` + digits, not in creation order (as in MIND)."""
    numbers = rng.choice(np.arange(1, 3 * n + 1), size=n, replace=False)
    return np.array([f"{prefix}{k}" for k in numbers.tolist()], dtype=object)


@dataclass
class News:
    ids: np.ndarray        # object array of "N..." strings
    topic: np.ndarray      # int, index into TOPICS
    subcategory: np.ndarray  # int, index into the topic's subcategories
    popularity: np.ndarray
    published: np.ndarray  # seconds since HISTORY_START
    expires: np.ndarray


def make_news(n: int, rng: np.random.Generator) -> News:
    shares = np.array([t.share for t in TOPICS])
    topic = rng.choice(len(TOPICS), size=n, p=shares / shares.sum())
    n_subs = np.array([len(t.subcategories) for t in TOPICS])
    subcategory = np.floor(rng.random(n) * n_subs[topic]).astype(np.int64)
    popularity = rng.lognormal(0.0, POPULARITY_SIGMA, size=n)
    in_window = rng.random(n) < IMPRESSION_WINDOW_NEWS_SHARE
    window_start = seconds(TRAIN_START) - IMPRESSION_WINDOW_LEAD_DAYS * DAY
    published = np.where(
        in_window,
        window_start + rng.random(n) * (seconds(DEV_END) - window_start),
        rng.random(n) * seconds(TRAIN_START))
    lifetime = np.minimum(LIFETIME_MIN_DAYS + rng.exponential(LIFETIME_MEAN_EXTRA_DAYS, size=n),
                          LIFETIME_MAX_DAYS) * DAY
    return News(_unique_ids(rng, n, "N"), topic, subcategory, popularity, published,
                published + lifetime)


@dataclass
class Users:
    ids: np.ndarray
    interest: np.ndarray   # (users, topics), rows sum to 1
    propensity: np.ndarray  # eps_u


def make_users(n: int, rng: np.random.Generator) -> Users:
    n_topics = len(TOPICS)
    shares = np.array([t.share for t in TOPICS])
    n_dominant = rng.choice(len(DOMINANT_TOPIC_COUNTS), size=n, p=DOMINANT_TOPIC_COUNTS) + 1
    # Dominant topics without replacement, weight share**0.7 (Gumbel top-k).
    keys = 0.7 * np.log(shares)[None, :] + rng.gumbel(size=(n, n_topics))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    dominant = rank < n_dominant[:, None]
    raw = np.where(dominant, rng.gamma(DOMINANT_ALPHA, size=(n, n_topics)), 0.0)
    focus = raw / raw.sum(axis=1, keepdims=True)
    background = rng.dirichlet(np.full(n_topics, BACKGROUND_ALPHA), size=n)
    interest = DOMINANT_MASS * focus + (1.0 - DOMINANT_MASS) * background
    propensity = rng.normal(0.0, USER_NOISE_SD, size=n)
    return Users(_unique_ids(rng, n, "U"), interest, propensity)


def click_logit(users: Users, news: News, user_idx, news_idx, impression_noise):
    return (CLICK_BIAS
            + AFFINITY_WEIGHT * users.interest[user_idx, news.topic[news_idx]]
            + POPULARITY_WEIGHT * np.log(news.popularity[news_idx])
            + users.propensity[user_idx] + impression_noise)

