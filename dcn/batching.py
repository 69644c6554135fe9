"""Batches of users against the candidate pool: each scorer's working memory, how many users
fit a memory budget, and the exact top-k selection of each user's candidates (numpy only)."""
from __future__ import annotations

import numpy as np


# Per-pair arrays of a scored batch besides the scorer's own: logits and the cross scalar
# (float32), the click probabilities with two temporaries (float32), top_k's float64 copy
# and the exclusion mask (bool).
BATCH_BYTES_PER_PAIR = 4 * 2 + 4 * 3 + 8 + 1 + 4 * 2     # + the two pair features' s_k


def factorized_memory(news_dim: int, deep_units: list[int], cross_layers: int,
                      n_news: int) -> tuple[int, int]:
    """Working memory of the factorized scorer: (bytes that do not depend on the batch: the
    pool and its projections, bytes per (user, news) pair: the largest two live deep
    activations, one [B, P, H_i] and the next layer's output, plus the batch's arrays)."""
    widths = list(deep_units) or [1]
    deep = max([widths[0]] + [a + b for a, b in zip(widths, widths[1:])])
    return 4 * n_news * (news_dim + widths[0] + cross_layers), 4 * deep + BATCH_BYTES_PER_PAIR


def plain_memory(width: int, max_pairs: int) -> tuple[int, int]:
    """Working memory of the plain model call: one chunk of `max_pairs` pairs' inputs and
    activations (`width` floats each), held twice by TensorFlow; the per-pair output."""
    return 2 * 4 * max_pairs * width, 4 + BATCH_BYTES_PER_PAIR


def spec_memory(spec: dict, n_news: int, mode: str = "auto", max_pairs: int = 65536,
                landmark_users: int = 0, landmark_news: int = 0,
                retrieve: int = 0) -> tuple[int, int]:
    """`memory` of the scorer `make_scorer` would build for a model of this spec (with the
    cascade: of its landmarks and short lists of `retrieve`), without loading it (the driver
    checks the budget with this before any task runs)."""
    from dcn.widths import spec_widths
    if mode == "cascade":
        exact = spec_memory(spec, n_news, "factorized", max_pairs)
        return cascade_memory(exact, landmark_users, min(landmark_news, n_news) + 1, n_news,
                              retrieve)
    factorizable = not spec["cross_layers"] or spec["cross_kind"] == "vector"
    if mode == "plain" or not factorizable:
        width = 2 * sum(spec_widths(spec)) + sum(spec["deep_units"])
        return plain_memory(width, max_pairs)
    return factorized_memory(spec_widths(spec)[1], spec["deep_units"], spec["cross_layers"], n_news)


def cascade_memory(exact: tuple[int, int], landmark_users: int, width: int, n_news: int,
                   retrieve: int) -> tuple[int, int]:
    """Working memory of the cascade (dcn/retrieval.py): the exact scorer's (`exact`, per pair
    of a user's landmark news and short list, a share (width + retrieve) / n_news of the pool's
    pairs), beta and, where the index is made, the landmark users' logits (float64, per pool
    news), and per pair of the pool the retrieval score (float32), its selection (int64) and
    the exclusion mask (bool)."""
    fixed, per_pair = exact
    share = min(1.0, (width + retrieve) / max(n_news, 1))
    return (fixed + 8 * n_news * (landmark_users + 2 * width),
            int(4 + 8 + 1 + per_pair * share) + 1)


class MemoryBudgetTooSmall(ValueError):
    """Not even one user fits the budget next to the candidate pool."""


def users_per_batch(memory: tuple[int, int], n_news: int, budget_bytes: int, cap: int) -> int:
    """The most users (at most `cap`) whose batch against `n_news` candidates fits in
    `budget_bytes` of working memory; `memory` = a scorer's (fixed, per-pair) bytes."""
    fixed, per_pair = memory
    room = budget_bytes - fixed
    users = room // max(1, per_pair * n_news)
    if users < 1:
        need = (fixed + per_pair * n_news) / 2 ** 20
        raise MemoryBudgetTooSmall(
            f"score.memory_budget_mb is {budget_bytes / 2 ** 20:.0f} MB but scoring one user "
            f"against {n_news} candidates needs {need:.0f} MB")
    return int(min(cap, users))


def top_k(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k of each row of `scores` [B, P], best first; ties go to the lower column
    index. `excluded` [B, P] (bool) removes pairs. Returns (indices [B, k'], valid [B, k'])
    where k' = min(k, P) and `valid` is false past a row's last eligible column.

    Partial selection (argpartition) picks candidates in O(P); only the k chosen are sorted.
    """
    scores = np.asarray(scores, dtype=np.float64).copy()
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if excluded is not None:
        scores[excluded] = -np.inf
    indices = np.empty((n_rows, k), dtype=np.int64)
    valid = np.empty((n_rows, k), dtype=bool)
    for row in range(n_rows):
        s = scores[row]
        chosen = np.argpartition(-s, k - 1)[:k] if k < n_cols else np.arange(n_cols)
        kth = s[chosen].min()
        above = np.flatnonzero(s > kth)
        tied = np.flatnonzero(s == kth)[:k - len(above)]
        picked = np.concatenate([above, tied])
        order = np.lexsort((picked, -s[picked]))
        indices[row] = picked[order]
        valid[row] = np.isfinite(s[indices[row]])
    return indices, valid
