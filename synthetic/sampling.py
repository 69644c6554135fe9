"""Random streams and the vectorized sampling helpers the generator's parts share."""
from __future__ import annotations

import numpy as np


def seeded_streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent stream per component, so a change to one part of the generator does
    not shift the random draws of the others."""
    names = ("news", "text", "users", "history", "assign", "train", "dev")
    return {name: np.random.default_rng([seed, k]) for k, name in enumerate(names)}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def segment_starts(counts: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return starts


def keep_first(rows: np.ndarray, values: np.ndarray, width: int, limit: np.ndarray):
    """Drop repeated (row, value) pairs, keeping first occurrences, then keep at most
    limit[row] values per row. Returns (rows, values) grouped by row, in original order
    within a row."""
    _, first = np.unique(rows * width + values, return_index=True)
    first.sort()
    rows, values = rows[first], values[first]
    order = np.argsort(rows, kind="stable")
    rows, values = rows[order], values[order]
    starts = segment_starts(np.bincount(rows, minlength=len(limit)))
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
        rows, values = keep_first(np.concatenate([rows, new_rows]),
                                  np.concatenate([values, new_values]), width, counts)
        missing = counts - np.bincount(rows, minlength=n_rows)
    return rows, values


def shuffle_within(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation that groups equal rows in increasing order and shuffles inside each."""
    return np.argsort(rows + rng.random(rows.size))

