"""Generate a synthetic sample in MIND's exact file format, with a planted click model.

    python -m jobs.generate_mind --scale {tiny,small,mind-small} --out DIR [--seed N] [--daily-log]

writes

    DIR/MINDsmall_train/{behaviors.tsv,news.tsv}
    DIR/MINDsmall_dev/{behaviors.tsv,news.tsv}
    DIR/ground_truth/{train.tsv,dev.tsv}     header: impression_id, news_id, click_prob

(with `--daily-log`, also the same impressions as a log partitioned by day, DIR/log/, see
`write_daily_log`) and prints a JSON summary. The format is MIND's as distributed (no header in the MIND
files, tab separated, UTF-8, '\\n' line ends). The same seed gives byte-identical files.

The planted model
-----------------
News. Each news item has a topic (one of the 15 MIND-like categories in `TOPICS`, drawn with
the shares `Topic.share`), a subcategory (uniform within the topic), a popularity
`pop ~ LogNormal(0, POPULARITY_SIGMA)`, a publication time and a lifetime. A title is about
11 words: `TITLE_TOPIC_SHARE` of them from the topic's vocabulary (a word of the subcategory
with probability `SUBCATEGORY_WORD_SHARE`, else a word common to the topic), the rest from a
shared generic vocabulary, sometimes a named entity of the topic. Same-topic titles therefore
share most of their content words, so a real text encoder puts them near each other.
Entities, people and places are fictional; their WikidataIds are made up.

Users. Interest `theta_u` over topics (sums to 1): 1 to 3 dominant topics (probabilities
`DOMINANT_TOPIC_COUNTS`, chosen with weight share**0.7) holding `DOMINANT_MASS` of the mass,
split by a Dirichlet(1.5); the rest spread by a sparse Dirichlet(0.2) over all topics.
Each user also has a click propensity `eps_u ~ N(0, USER_NOISE_SD)`.

Clicks. A candidate `n` shown to user `u` in impression `i` is clicked with probability

    p = sigmoid(CLICK_BIAS + AFFINITY_WEIGHT * theta_u[topic(n)]
                + POPULARITY_WEIGHT * log(pop_n) + eps_u + eps_i)
    eps_i ~ N(0, IMPRESSION_NOISE_SD)

This `p` is what ground_truth/*.tsv holds. Labels are Bernoulli(p), except that an impression
with no click has its labels drawn again (as in MIND, every impression has a click; sampled
exactly from that conditional law, see `draw_labels`); the ground truth still holds the
unconditional `p`. CLICK_BIAS is tuned so that, after this, about 4.1% of candidates and 1.5
per impression are clicked (MIND: about 4%, 1.5); the mean unconditional p is about 2.3%.
With these constants, ranking each impression by the true p gives a mean AUC of about 0.78:
the ceiling any model can reach on the sample.

Impressions. Every user has at least one impression; the others go to users in proportion
to an activity ~ LogNormal(0, ACTIVITY_SIGMA). Train times fall in 11/9/2019-11/14/2019, dev
times on 11/15/2019, with a daily rhythm (`HOURLY_RHYTHM`). The number of candidates is
LogNormal with mean `MEAN_CANDIDATES` (5th-95th percentile about 11-83), drawn without
replacement, in proportion to popularity, among the news alive at the impression's hour
(published before it, lifetime not over), then shuffled. Later days show newer news, and the
dev day shows news that train never shows.

Histories. The clicks of a user during the four weeks before the data period (news published
before 11/9/2019), drawn from the same model: a history news is a popularity-weighted shown
news that the user clicked, so P(n) is proportional to pop_n * p(u, n) (with eps_i = 0;
computed over cells of topic x popularity decile). Lengths are LogNormal (mean about
`HISTORY_MEAN`, heavy tailed), with `EMPTY_HISTORY_SHARE` of users having none; ordered
oldest first. A user's history string is the same in every impression of both splits, as in
MIND, whose histories come from the weeks before the impression logs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

# --------------------------------------------------------------------------------------------
# Scales and constants of the planted model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    users: int
    news: int
    train_impressions: int
    dev_impressions: int


SCALES = {
    "tiny": Scale(users=200, news=400, train_impressions=500, dev_impressions=250),
    # a few thousand train impressions: what a new user's first trial holds
    "few": Scale(users=1_500, news=2_500, train_impressions=4_000, dev_impressions=2_000),
    "small": Scale(users=5_000, news=8_000, train_impressions=16_000, dev_impressions=7_000),
    "mind-small": Scale(users=50_000, news=54_000, train_impressions=157_000,
                        dev_impressions=73_000),
}

CLICK_BIAS = -5.6
AFFINITY_WEIGHT = 5.0
POPULARITY_WEIGHT = 0.3
USER_NOISE_SD = 0.5
IMPRESSION_NOISE_SD = 0.5
POPULARITY_SIGMA = 1.0

DOMINANT_TOPIC_COUNTS = (0.4, 0.4, 0.2)   # P(1, 2, 3 dominant topics)
DOMINANT_MASS = 0.8
DOMINANT_ALPHA = 1.5
BACKGROUND_ALPHA = 0.2

MEAN_CANDIDATES = 37.0
CANDIDATES_SIGMA = 0.6
MIN_CANDIDATES = 5
MAX_CANDIDATES = 300
ACTIVITY_SIGMA = 1.0

HISTORY_MEAN = 30.0
HISTORY_SIGMA = 1.0
MAX_HISTORY = 500
EMPTY_HISTORY_SHARE = 0.02

TITLE_MEAN_WORDS = 10.5          # before the entity and decorations: about 11.5 in all
TITLE_TOPIC_SHARE = 0.65
SUBCATEGORY_WORD_SHARE = 0.25
TITLE_ENTITY_SHARE = 0.4
ABSTRACT_EMPTY_SHARE = 0.05
ABSTRACT_MEAN_WORDS = 22.0
ABSTRACT_TOPIC_SHARE = 0.55
ABSTRACT_ENTITY_SHARE = 0.3

# Share of titles given each kind of decoration (independently).
TITLE_DOUBLE_QUOTE = 0.07
TITLE_POSSESSIVE = 0.08      # half "'s", half "’s"
TITLE_AMPERSAND = 0.04
TITLE_PIPE = 0.04
TITLE_DASH = 0.04
TITLE_EMOJI = 0.01

# Time line (seconds are counted from HISTORY_START).
HISTORY_START = datetime(2019, 10, 12)
TRAIN_START = datetime(2019, 11, 9)
DEV_START = datetime(2019, 11, 15)
DEV_END = datetime(2019, 11, 16)
DAY = 86_400
HOUR = 3_600
# News published in the impression window (the rest fall in the history window); their
# publication times start a few days before train so the first train day has a full pool.
IMPRESSION_WINDOW_NEWS_SHARE = 0.55
IMPRESSION_WINDOW_LEAD_DAYS = 3
LIFETIME_MIN_DAYS = 1.5
LIFETIME_MEAN_EXTRA_DAYS = 1.5
LIFETIME_MAX_DAYS = 6.0
MIN_POOL = 12
# Relative traffic per hour of the day, 0h..23h.
HOURLY_RHYTHM = (2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 9, 10, 10, 9, 9, 9, 9, 10, 10, 9, 7, 5, 3)

SAMPLE_ENTRIES = ("MINDsmall_train", "MINDsmall_dev", "ground_truth")
GROUND_TRUTH_HEADER = "impression_id\tnews_id\tclick_prob\n"

# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    name: str
    share: float
    common: tuple[str, ...]
    subcategories: dict[str, tuple[str, ...]]
    entities: tuple[tuple[str, str], ...]   # (surface form = label, type)


def _topic(name, share, common, subcategories, entities) -> Topic:
    return Topic(name, share, tuple(common.split()),
                 {sub: tuple(words.split()) for sub, words in subcategories.items()},
                 tuple(entities))


TOPICS = (
    _topic("news", 0.22,
           "officials police county state report court judge plan vote senator governor city "
           "residents lawmakers investigation charges federal rally protest mayor election "
           "campaign president congress hearing bill law school community shooting crash fire "
           "arrest suspect agency",
           {"newsus": "sheriff highway neighborhood township firefighters deputies",
            "newspolitics": "democrats republicans debate candidate ballot primary poll caucus",
            "newsworld": "embassy minister border refugees treaty diplomats parliament",
            "newscrime": "murder robbery trial verdict sentence prosecutors detectives"},
           [("Maple County", "G"), ("Ellen Price", "P"), ("Harbor City Council", "O"),
            ("José Ortega", "P")]),
    _topic("sports", 0.20,
           "game season coach team win loss score playoff fans roster injury trade rookie "
           "veteran championship league stadium victory defeat comeback streak lineup "
           "overtime rivalry standings",
           {"football_nfl": "quarterback touchdown receiver linebacker interception fumble "
                            "kickoff punt",
            "basketball_nba": "dunk rebound guard forward buzzer layup",
            "baseball_mlb": "pitcher inning homer bullpen batting shortstop",
            "soccer": "goal striker midfielder penalty keeper derby"},
           [("Riverton Hawks", "O"), ("Marcus Dell", "P"), ("Lakeview Comets", "O"),
            ("Björn Halvorsen", "P")]),
    _topic("finance", 0.07,
           "market stocks investors shares earnings profit revenue economy dollar bank rates "
           "inflation billion million growth forecast analysts retirement savings tax "
           "company layoffs merger wages",
           {"markets": "index rally selloff bond yields futures",
            "finance-real-estate": "mortgage housing homebuyers rent listing condo",
            "personalfinance": "budget credit debt paycheck pension résumé"},
           [("Northgate Capital", "O"), ("Pinecrest Bank", "O"), ("Dana Whitfield", "P")]),
    _topic("lifestyle", 0.08,
           "family wedding holiday style home fashion love couple gift décor garden tips trend "
           "celebration friendship photos neighbors makeover closet etiquette hobby",
           {"lifestyleroyals": "royal prince princess duchess palace queen",
            "lifestylebuzz": "viral surprise heartwarming stranger proposal",
            "lifestyleparenting": "toddler parenting teen newborn bedtime"},
           [("Prince Edmund", "P"), ("Duchess Clara", "P"), ("Willow Lane", "G")]),
    _topic("health", 0.05,
           "doctors health patients study disease hospital cancer heart sleep weight diet "
           "exercise symptoms treatment vaccine flu brain risk researchers therapy "
           "blood pressure aging immune",
           {"wellness": "yoga stress meditation fitness workout",
            "nutrition": "protein vitamins sugar fiber calories",
            "medical": "surgery diagnosis clinic infection"},
           [("Brightwater Clinic", "O"), ("Renée Marchand", "P"), ("Summit Health", "O")]),
    _topic("foodanddrink", 0.05,
           "recipe dinner cheese chicken bread dessert chef kitchen flavor sauce baking pie "
           "turkey soup pasta breakfast pumpkin chocolate menu cookies garlic butter",
           {"recipes": "casserole roast skillet crispy oven jalapeño",
            "restaurants": "diner bistro café brunch burger",
            "drinks": "wine coffee cocktail beer rosé"},
           [("Zoë Lindqvist", "P"), ("Café Lumière", "O"), ("Copper Pot", "O")]),
    _topic("travel", 0.05,
           "travel vacation hotel flight airport beach island destination resort cruise trip "
           "tourists passport luggage museum mountain airline tour adventure cabin lodge",
           {"traveltrip": "itinerary hiking road scenic getaway",
            "travelnews": "delays passengers security booking"},
           [("Isla Serena", "G"), ("Skyline Air", "O"), ("Mount Ardent", "G")]),
    _topic("autos", 0.05,
           "car truck engine driver vehicle sedan horsepower dealership recall model speed "
           "mileage brakes pickup fuel transmission wheels coupe garage",
           {"autosnews": "automaker production sales unveiled",
            "autosreview": "interior handling steering trim",
            "autoselectric": "electric battery charging hybrid"},
           [("Vantor Motors", "O"), ("Kestrel", "O"), ("Ridgeway Auto", "O")]),
    _topic("weather", 0.03,
           "storm snow rain temperatures forecast cold wind winter freeze weather flooding ice "
           "tornado hurricane chill frost warning heat clouds sleet",
           {"weathertopstories": "blizzard outage damage evacuations",
            "weatherforecast": "meteorologists radar showers degrees"},
           [("Great Plains", "G"), ("Lake Corvin", "G")]),
    _topic("entertainment", 0.04,
           "star celebrity actor actress fans premiere carpet award gala interview Hollywood "
           "rumors romance divorce spotted outfit glamorous",
           {"celebrity": "paparazzi engaged split reunion fiancé",
            "entertainment-awards": "nominations winners ceremony trophy"},
           [("Ava Sinclair", "P"), ("Golden Lantern Awards", "O")]),
    _topic("music", 0.03,
           "album song singer band concert tour rapper guitar lyrics chart single stage "
           "festival playlist vinyl track debut duet anthem",
           {"musicnews": "announced tickets lineup",
            "musicreviews": "ballad chorus melody"},
           [("The Velvet Owls", "O"), ("Lila Moreau", "P"), ("Sigrún Dahl", "P")]),
    _topic("movies", 0.03,
           "film movie director trailer sequel box office screenplay franchise theaters "
           "studio blockbuster horror comedy villain superhero",
           {"movienews": "casting release remake",
            "movies-reviews": "performance plot cinematography pacing critics"},
           [("Nightfall Protocol", "C"), ("Oliver Crane", "P"), ("Starline Studios", "O")]),
    _topic("tv", 0.04,
           "series episode finale network sitcom streaming host contestant reality viewers "
           "ratings spinoff channel binge",
           {"tvnews": "renewed canceled reboot showrunner",
            "tv-recaps": "twist cliffhanger recap elimination",
            "tv-celebrity": "judge anchor hosting"},
           [("Cedar Falls", "C"), ("Kitchen Rivals", "C"), ("Nora Quinlan", "P")]),
    _topic("video", 0.04,
           "watch video footage clip camera caught moment dramatic rescue incredible dog cat "
           "bear wild filmed drone",
           {"viral": "hilarious prank dance challenge",
            "animals": "puppy kitten wildlife zoo owl",
            "news-video": "bodycam dashcam eyewitness"},
           [("Pine Ridge Zoo", "O"), ("Oak Hollow", "G")]),
    _topic("kids", 0.02,
           "kids children science fun learning classroom teacher puzzle games toys cartoon "
           "students art craft story reading homework",
           {"kidsnews": "spelling contest inventor",
            "kids-activities": "coloring origami slime experiment"},
           [("Junior Science League", "O"), ("Captain Comet", "C")]),
)

GENERIC_WORDS = tuple((
    "new first after says could best year week day time people big top more over back just "
    "how why what still major ever amid latest next former two three most here this these "
    "your about before during against finally really again now today only every ahead "
    "biggest worst surprising simple secret real local national report shows reveals "
    "update warns says why").split())

PIPE_SUFFIXES = ("Photos", "Video", "Opinion", "Live updates")
EMOJIS = ("🔥", "😂", "😍", "🎉", "👀")


# --------------------------------------------------------------------------------------------
# Random streams
# --------------------------------------------------------------------------------------------

def _rngs(seed: int) -> dict[str, np.random.Generator]:
    """One independent stream per component, so a change to one part of the generator does
    not shift the random draws of the others."""
    names = ("news", "text", "users", "history", "assign", "train", "dev")
    return {name: np.random.default_rng([seed, k]) for k, name in enumerate(names)}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _unique_ids(rng, n: int, prefix: str) -> np.ndarray:
    """n distinct ids `prefix` + digits, not in creation order (as in MIND)."""
    numbers = rng.choice(np.arange(1, 3 * n + 1), size=n, replace=False)
    return np.array([f"{prefix}{k}" for k in numbers.tolist()], dtype=object)


def _segment_starts(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return starts


# --------------------------------------------------------------------------------------------
# News and users
# --------------------------------------------------------------------------------------------

@dataclass
class News:
    ids: np.ndarray        # object array of "N..." strings
    topic: np.ndarray      # int, index into TOPICS
    subcategory: np.ndarray  # int, index into the topic's subcategories
    popularity: np.ndarray
    published: np.ndarray  # seconds since HISTORY_START
    expires: np.ndarray


def _seconds(moment: datetime) -> float:
    return (moment - HISTORY_START).total_seconds()


def make_news(n: int, rng: np.random.Generator) -> News:
    shares = np.array([t.share for t in TOPICS])
    topic = rng.choice(len(TOPICS), size=n, p=shares / shares.sum())
    n_subs = np.array([len(t.subcategories) for t in TOPICS])
    subcategory = np.floor(rng.random(n) * n_subs[topic]).astype(np.int64)
    popularity = rng.lognormal(0.0, POPULARITY_SIGMA, size=n)
    in_window = rng.random(n) < IMPRESSION_WINDOW_NEWS_SHARE
    window_start = _seconds(TRAIN_START) - IMPRESSION_WINDOW_LEAD_DAYS * DAY
    published = np.where(
        in_window,
        window_start + rng.random(n) * (_seconds(DEV_END) - window_start),
        rng.random(n) * _seconds(TRAIN_START))
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


# --------------------------------------------------------------------------------------------
# Sampling helpers
# --------------------------------------------------------------------------------------------

def _keep_first(rows: np.ndarray, values: np.ndarray, width: int, limit: np.ndarray):
    """Drop repeated (row, value) pairs, keeping first occurrences, then keep at most
    limit[row] values per row. Returns (rows, values) grouped by row, in original order
    within a row."""
    _, first = np.unique(rows * width + values, return_index=True)
    first.sort()
    rows, values = rows[first], values[first]
    order = np.argsort(rows, kind="stable")
    rows, values = rows[order], values[order]
    starts = _segment_starts(np.bincount(rows, minlength=len(limit)))
    position = np.arange(len(rows)) - starts[rows]
    keep = position < limit[rows]
    return rows[keep], values[keep]


def weighted_distinct(weights: np.ndarray, counts: np.ndarray, rng: np.random.Generator,
                      max_rounds: int = 64):
    """For every row i, counts[i] distinct indices into `weights`, drawn one after the other
    with probability proportional to weight among those not yet drawn.

    Drawing with replacement and skipping repeats has exactly that law, and it vectorizes:
    each round draws more than the missing number for the rows still short. Returns
    (rows, indices) grouped by row. counts must not exceed the number of positive weights;
    a row still short after max_rounds (only with extreme weights) keeps what it has."""
    n_rows, width = len(counts), len(weights)
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    rows = np.empty(0, dtype=np.int64)
    values = np.empty(0, dtype=np.int64)
    missing = counts.astype(np.int64)
    for _ in range(max_rounds):
        short = np.flatnonzero(missing > 0)
        if short.size == 0:
            break
        new_rows = np.repeat(short, 2 * missing[short] + 2)
        new_values = np.minimum(np.searchsorted(cdf, rng.random(new_rows.size), side="right"),
                                width - 1)
        rows, values = _keep_first(np.concatenate([rows, new_rows]),
                                   np.concatenate([values, new_values]), width, counts)
        missing = counts - np.bincount(rows, minlength=n_rows)
    return rows, values


def _shuffle_within(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation that groups equal rows in increasing order and shuffles inside each."""
    return np.argsort(rows + rng.random(rows.size))


# --------------------------------------------------------------------------------------------
# Histories
# --------------------------------------------------------------------------------------------

POPULARITY_BINS = 10


def make_histories(users: Users, news: News, rng: np.random.Generator):
    """Each user's pre-period clicks, oldest first: (offsets into flat, flat news indices).

    P(n) is proportional to pop_n * p(u, n): the news shown (popularity weighted) and clicked.
    To keep this vectorized, p is evaluated per cell of (topic, popularity decile) at the
    cell's mean log popularity; within a cell a news is drawn in proportion to popularity."""
    n_users = len(users.ids)
    pool = np.flatnonzero(news.published < _seconds(TRAIN_START))
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
    weight = mass[None, :] * _sigmoid(
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
    cell_starts = _segment_starts(np.bincount(cell, minlength=n_cells))
    before = np.concatenate([[0.0], cum])[cell_starts[:-1]]
    within = (cum - before[sorted_cell]) / mass[sorted_cell] + sorted_cell
    pick = np.searchsorted(within, slot_cell + rng.random(slot_cell.size), side="right")
    pick = np.clip(pick, cell_starts[slot_cell], cell_starts[slot_cell + 1] - 1)
    slot_news = pool[by_cell[pick]]

    hist_user, hist_news = _keep_first(slot_user, slot_news, len(news.ids), lengths)
    # A click comes some hours after publication; order each history by click time.
    clicked_at = news.published[hist_news] + rng.exponential(12 * HOUR, size=hist_news.size)
    order = np.lexsort((clicked_at, hist_user))
    hist_user, hist_news = hist_user[order], hist_news[order]
    return _segment_starts(np.bincount(hist_user, minlength=n_users)), hist_news


# --------------------------------------------------------------------------------------------
# Impressions
# --------------------------------------------------------------------------------------------

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
    return _seconds(start) + day * DAY + hour * HOUR + second


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
        shuffle = _shuffle_within(rows, rng)
        all_rows.append(members[rows[shuffle]])
        all_news.append(pool[picks[shuffle]])
    rows = np.concatenate(all_rows)
    order = np.argsort(rows, kind="stable")
    rows, chosen = rows[order], np.concatenate(all_news)[order]
    return _segment_starts(np.bincount(rows, minlength=len(times))), chosen


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
    probability = _sigmoid(click_logit(users, news, owners[per_candidate], candidates,
                                       noise[per_candidate]))
    label = draw_labels(probability, offsets, rng)
    return Split(name, owners, times, offsets, candidates, probability, label)


# --------------------------------------------------------------------------------------------
# News text
# --------------------------------------------------------------------------------------------

class _WordTable:
    """All words in one list, with each topic's and subcategory's word range, so word choices
    for every title can be drawn as one integer matrix."""

    def __init__(self):
        self.words: list[str] = list(GENERIC_WORDS)
        self.generic = (0, len(GENERIC_WORDS))
        self.common, self.sub = [], []
        for topic in TOPICS:
            self.common.append(self._add(topic.common))
            self.sub.append([self._add(words) for words in topic.subcategories.values()])

    def _add(self, words) -> tuple[int, int]:
        start = len(self.words)
        self.words.extend(words)
        return start, len(words)

    def draw(self, topic, subcategory, width, topic_share, rng):
        """(n, width) word indices: topic words with probability topic_share (of which
        subcategory words with probability SUBCATEGORY_WORD_SHARE), else generic words."""
        n = len(topic)
        com = np.array(self.common)[topic]
        sub_start = np.array([self.sub[t][s][0] for t, s in zip(topic.tolist(),
                                                                 subcategory.tolist())])
        sub_len = np.array([self.sub[t][s][1] for t, s in zip(topic.tolist(),
                                                              subcategory.tolist())])
        u = rng.random((n, width))
        is_topic = rng.random((n, width)) < topic_share
        from_sub = rng.random((n, width)) < SUBCATEGORY_WORD_SHARE
        start = np.where(from_sub, sub_start[:, None], com[:, 0:1])
        length = np.where(from_sub, sub_len[:, None], com[:, 1:2])
        start = np.where(is_topic, start, self.generic[0])
        length = np.where(is_topic, length, self.generic[1])
        return (start + np.floor(u * length)).astype(np.int64)


def _entity_json(entity_id: str, surface: str, kind: str, text: str, confidence: float) -> str:
    if entity_id is None:
        return "[]"
    return json.dumps([{"Label": surface, "Type": kind, "WikidataId": entity_id,
                        "Confidence": confidence, "OccurrenceOffsets": [text.find(surface)],
                        "SurfaceForms": [surface]}], ensure_ascii=False)


def _capitalize(text: str) -> str:
    for k, ch in enumerate(text):
        if ch.isalpha():
            return text[:k] + ch.upper() + text[k + 1:]
    return text


def _distinct(word_ids: list[int], n: int) -> list[int]:
    """The first n distinct ids (fewer if there are not that many)."""
    seen, out = set(), []
    for w in word_ids:
        if w not in seen:
            seen.add(w)
            out.append(w)
            if len(out) == n:
                break
    return out


def _decorate_title(words: list[str], flags, picks) -> list[str]:
    """Apply the title decorations (possessive, &, em dash, double quotes) to a word list;
    picks[0:4] place them, picks[4] chooses the apostrophe."""
    possessive, ampersand, dash, dquote = flags
    k = [int(p * len(words)) for p in picks[:4]]
    if possessive and words:
        words[k[0]] += "'s" if picks[4] < 0.5 else "’s"
    if ampersand and len(words) > 2:
        words.insert(max(1, k[1]), "&")
    if dash and len(words) > 3:
        words.insert(max(2, k[2]), "—")
    if dquote and len(words) > 2:
        i = min(k[3], len(words) - 2)
        words[i] = '"' + words[i]
        words[i + 1] = words[i + 1] + '"'
    return words


def make_texts(news: News, rng: np.random.Generator) -> list[str]:
    """The news.tsv line (without the newline) of every news item."""
    n = len(news.ids)
    table = _WordTable()
    title_len = np.clip(rng.poisson(TITLE_MEAN_WORDS - 1, size=n) + 1, 4, 24)
    title_words = table.draw(news.topic, news.subcategory, 24, TITLE_TOPIC_SHARE, rng)
    abstract_len = np.clip(rng.poisson(ABSTRACT_MEAN_WORDS - 1, size=n) + 1, 6, 48)
    abstract_words = table.draw(news.topic, news.subcategory, 48, ABSTRACT_TOPIC_SHARE, rng)
    abstract_empty = rng.random(n) < ABSTRACT_EMPTY_SHARE
    title_entity = rng.random(n) < TITLE_ENTITY_SHARE
    abstract_entity = rng.random(n) < ABSTRACT_ENTITY_SHARE
    entity_pick = rng.random((n, 4))   # which entity, where in title, where in abstract
    confidence = np.round(0.6 + 0.4 * rng.random((n, 2)), 3)
    flags = rng.random((n, 6)) < np.array([TITLE_POSSESSIVE, TITLE_AMPERSAND, TITLE_DASH,
                                           TITLE_DOUBLE_QUOTE, TITLE_PIPE, TITLE_EMOJI])
    picks = rng.random((n, 7))   # 0-4: _decorate_title, 5: pipe suffix, 6: emoji
    url_codes = rng.integers(0, 36 ** 5, size=n)

    entity_ids = {}
    for t, topic in enumerate(TOPICS):
        for e, _ in enumerate(topic.entities):
            entity_ids[(t, e)] = f"Q{90_000_000 + 100 * t + e}"
    subcat_names = [list(topic.subcategories) for topic in TOPICS]
    words = table.words
    lines = []
    for i in range(n):
        t = int(news.topic[i])
        topic = TOPICS[t]
        e = int(entity_pick[i, 0] * len(topic.entities))
        surface, kind = topic.entities[e]

        title = [words[w] for w in _distinct(title_words[i].tolist(), title_len[i])]
        title = _decorate_title(title, flags[i, :4], picks[i, :5].tolist())
        title_eid = None
        if title_entity[i]:
            title.insert(int(entity_pick[i, 1] * (len(title) + 1)), surface)
            title_eid = entity_ids[(t, e)]
        text = _capitalize(" ".join(title))
        if flags[i, 4]:
            text += " | " + PIPE_SUFFIXES[int(picks[i, 5] * len(PIPE_SUFFIXES))]
        if flags[i, 5]:
            text += " " + EMOJIS[int(picks[i, 6] * len(EMOJIS))]

        abstract, abstract_eid = "", None
        if not abstract_empty[i]:
            body = [words[w] for w in _distinct(abstract_words[i].tolist(), abstract_len[i])]
            if abstract_entity[i]:
                body.insert(int(entity_pick[i, 2] * (len(body) + 1)), surface)
                abstract_eid = entity_ids[(t, e)]
            abstract = _capitalize(" ".join(body)) + "."

        sub = subcat_names[t][int(news.subcategory[i])]
        url = f"https://www.example.com/mind/AA{np.base_repr(int(url_codes[i]), 36):0>5}.html"
        fields = [news.ids[i], topic.name, sub, text, abstract, url,
                  _entity_json(title_eid, surface, kind, text, float(confidence[i, 0])),
                  _entity_json(abstract_eid, surface, kind, abstract, float(confidence[i, 1]))]
        lines.append("\t".join(fields))
    return lines


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def format_time(seconds: float) -> str:
    """MIND's time format: M/D/YYYY h:mm:ss AM|PM, no leading zeros on month, day, hour."""
    moment = HISTORY_START + timedelta(seconds=int(seconds))
    hour12 = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return (f"{moment.month}/{moment.day}/{moment.year} "
            f"{hour12}:{moment.minute:02d}:{moment.second:02d} {half}")


def _write_lines(path: str, lines) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line)
            handle.write("\n")


def write_split(folder: str, truth_path: str, split: Split, users: Users, news: News,
                history_offsets: np.ndarray, history_news: np.ndarray,
                news_lines: list[str]) -> set:
    """Write behaviors.tsv, news.tsv (the news the split refers to) and the ground truth.
    Returns the set of news indices written."""
    os.makedirs(folder)
    ids = news.ids
    tokens = np.where(split.label == 1, (ids + "-1")[split.candidates],
                      (ids + "-0")[split.candidates]).tolist()
    history_text = {}
    for u in np.unique(split.user).tolist():
        history_text[u] = " ".join(ids[history_news[history_offsets[u]:history_offsets[u + 1]]])
    candidates = split.candidates.tolist()
    offsets = split.offsets.tolist()
    owners = split.user.tolist()

    def behaviors():
        for i, user in enumerate(owners):
            start, end = offsets[i], offsets[i + 1]
            impressions = " ".join(tokens[start:end])
            yield (f"{i + 1}\t{users.ids[user]}\t{format_time(split.time[i])}\t"
                   f"{history_text[user]}\t{impressions}")

    _write_lines(os.path.join(folder, "behaviors.tsv"), behaviors())

    news_ids = ids.tolist()
    probabilities = split.probability.tolist()
    with open(truth_path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(GROUND_TRUTH_HEADER)
        for i in range(len(owners)):
            start, end = offsets[i], offsets[i + 1]
            handle.write("".join(f"{i + 1}\t{news_ids[n]}\t{p:.6f}\n" for n, p in
                                 zip(candidates[start:end], probabilities[start:end])))

    referenced = set(candidates)
    for u in history_text:
        referenced.update(history_news[history_offsets[u]:history_offsets[u + 1]].tolist())
    _write_lines(os.path.join(folder, "news.tsv"), (news_lines[n] for n in sorted(referenced)))
    return referenced


def write_daily_log(mind_dir: str, log_dir: str) -> dict:
    """Rewrite a sample's two MIND folders as a log partitioned by day, the production layout:
    `log_dir/date=YYYY-MM-DD/behaviors.tsv` and one catalogue `log_dir/news.tsv`. Dev
    impression ids are moved past the train ones (MIND numbers each split from 1; a log's ids
    are unique). Written to a temporary folder and renamed into place."""
    parent, name = os.path.split(os.path.abspath(log_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        by_day: dict[str, list[str]] = {}
        offset = 0
        for folder in ("MINDsmall_train", "MINDsmall_dev"):
            largest = 0
            with open(os.path.join(mind_dir, folder, "behaviors.tsv"), encoding="utf-8") as handle:
                for line in handle:
                    fields = line.rstrip("\n").split("\t")
                    largest = max(largest, int(fields[0]))
                    fields[0] = str(int(fields[0]) + offset)
                    day = datetime.strptime(fields[2], "%m/%d/%Y %I:%M:%S %p").date().isoformat()
                    by_day.setdefault(day, []).append("\t".join(fields))
            offset += largest
        for day, lines in by_day.items():
            os.makedirs(os.path.join(staging, f"date={day}"))
            _write_lines(os.path.join(staging, f"date={day}", "behaviors.tsv"), lines)
        news: dict[str, str] = {}
        for folder in ("MINDsmall_train", "MINDsmall_dev"):
            with open(os.path.join(mind_dir, folder, "news.tsv"), encoding="utf-8") as handle:
                for line in handle:
                    news.setdefault(line.split("\t", 1)[0], line.rstrip("\n"))
        _write_lines(os.path.join(staging, "news.tsv"), news.values())
        if os.path.exists(log_dir):
            shutil.rmtree(log_dir)
        os.rename(staging, log_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"log": log_dir, "days": sorted(by_day), "impressions": sum(map(len, by_day.values()))}


def _check_target(out_dir: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a folder")


def publish(staging: str, out_dir: str) -> None:
    """Move the finished sample from `staging` into `out_dir`.

    A missing out_dir is created by one rename. Otherwise the sample folders already there
    (MINDsmall_train, MINDsmall_dev, ground_truth) are moved aside first, then the new ones
    moved in: an interruption leaves some folders missing, never a mix of old and new that
    looks complete. Other files in out_dir are left alone."""
    if not os.path.exists(out_dir):
        os.rename(staging, out_dir)
        return
    parent, name = os.path.split(os.path.abspath(out_dir))
    trash = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
    for entry in SAMPLE_ENTRIES:
        if os.path.lexists(os.path.join(out_dir, entry)):
            os.rename(os.path.join(out_dir, entry), os.path.join(trash, entry))
    for entry in SAMPLE_ENTRIES:
        os.rename(os.path.join(staging, entry), os.path.join(out_dir, entry))
    shutil.rmtree(trash)
    os.rmdir(staging)


# --------------------------------------------------------------------------------------------
# Summary and entry points
# --------------------------------------------------------------------------------------------

def planted_auc(split: Split) -> float:
    """Mean per-impression AUC of the planted probability against the labels: the ceiling a
    model can reach on this sample (impressions where every candidate is clicked are
    skipped, as an AUC is undefined there)."""
    n = len(split.user)
    owner = np.repeat(np.arange(n), np.diff(split.offsets))
    # Sort by impression, then probability (0.5 * p < 1 keeps impressions apart).
    order = np.argsort(owner + 0.5 * split.probability)
    rank = np.empty(order.size, dtype=np.float64)
    rank[order] = np.arange(order.size) - split.offsets[owner[order]] + 1
    positives = np.bincount(owner, weights=split.label, minlength=n)
    negatives = np.diff(split.offsets) - positives
    rank_sum = np.bincount(owner, weights=rank * split.label, minlength=n)
    valid = (positives > 0) & (negatives > 0)
    auc = (rank_sum[valid] - positives[valid] * (positives[valid] + 1) / 2) / (
        positives[valid] * negatives[valid])
    return float(auc.mean())


def _split_summary(split: Split, history_offsets: np.ndarray, written: set) -> dict:
    history_len = np.diff(history_offsets)[split.user]
    return {
        "impressions": int(len(split.user)),
        "users": int(np.unique(split.user).size),
        "news": len(written),
        "candidates": int(split.candidates.size),
        "candidates_mean": round(float(split.candidates.size / len(split.user)), 2),
        "positive_share": round(float(split.label.mean()), 4),
        "clicks_mean": round(float(split.label.sum() / len(split.user)), 3),
        "history_mean": round(float(history_len.mean()), 2),
        "empty_history_share": round(float((history_len == 0).mean()), 4),
        "planted_auc": round(planted_auc(split), 4),
    }


def generate(scale: str, out_dir: str, seed: int = 0) -> dict:
    """Write a sample of the given scale to out_dir (see the module docstring); returns a
    summary: users, news, impressions per split, candidates, positive share, history length."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    _check_target(out_dir)
    size = SCALES[scale]
    rngs = _rngs(seed)
    news = make_news(size.news, rngs["news"])
    users = make_users(size.users, rngs["users"])
    history_offsets, history_news = make_histories(users, news, rngs["history"])
    train_owners, dev_owners = assign_users(size.users, size.train_impressions,
                                            size.dev_impressions, rngs["assign"])
    train = make_split("train", train_owners, TRAIN_START, (DEV_START - TRAIN_START).days,
                       users, news, rngs["train"])
    dev = make_split("dev", dev_owners, DEV_START, 1, users, news, rngs["dev"])
    news_lines = make_texts(news, rngs["text"])

    parent, name = os.path.split(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        os.makedirs(os.path.join(staging, "ground_truth"))
        written = {}
        for split, folder in ((train, "MINDsmall_train"), (dev, "MINDsmall_dev")):
            written[split.name] = write_split(
                os.path.join(staging, folder),
                os.path.join(staging, "ground_truth", f"{split.name}.tsv"),
                split, users, news, history_offsets, history_news, news_lines)
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    return {
        "scale": scale,
        "seed": seed,
        "users": int(np.unique(np.concatenate([train.user, dev.user])).size),
        "news": len(written["train"] | written["dev"]),
        "dev_news_not_in_train": len(written["dev"] - written["train"]),
        "train": _split_summary(train, history_offsets, written["train"]),
        "dev": _split_summary(dev, history_offsets, written["dev"]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.generate_mind",
        description="Write a synthetic MIND-format sample with a planted click model.")
    parser.add_argument("--scale", required=True, choices=sorted(SCALES))
    parser.add_argument("--out", required=True, help="output folder (a sample there is replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--daily-log", action="store_true",
                        help="also write the sample as a log partitioned by day, in OUT/log")
    args = parser.parse_args(argv)
    summary = generate(args.scale, args.out, args.seed)
    if args.daily_log:
        summary["daily_log"] = write_daily_log(args.out, os.path.join(args.out, "log"))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
