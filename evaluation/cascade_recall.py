"""How much of the exact lists the cascade keeps (score.mode cascade, dcn/retrieval.py): for a
sample of users of the state as of the dev rows' as-of moment, against that moment's
candidate pool, each user's exact top k (the factorized DCN over the whole pool) beside the
cascade's top k and its short list, through the scoring tasks' own rankers.

    recall@k           = |exact top k  ∩ cascade top k| / |exact top k|
    short-list recall@100 = |exact top 100 ∩ short list| / |exact top 100|

means over the sampled users (the news each user clicked are excluded from both, as in the
table). The sample is read on the driver: its size is `evaluate.recall_users`, not the number
of users.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

from common.config import Config
from common.errors import RunNotFound
from dcn import export
from features.arrays import load_pool, sample_profiles, state_and_pool
from serving import tasks

DEEP_RECALL = 100    # the short list's recall of the exact top this many


def _overlap(a: np.ndarray, a_ok: np.ndarray, b: np.ndarray, b_ok: np.ndarray) -> np.ndarray:
    """Per row: the share of a's valid entries that are among b's valid entries (nan: none)."""
    out = np.full(len(a), np.nan)
    for row in range(len(a)):
        wanted = a[row][a_ok[row]]
        if len(wanted):
            out[row] = np.isin(wanted, b[row][b_ok[row]]).mean()
    return out


def unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


def cascade_recall(cfg: Config, model_folder: str, as_of: str | None, users: int | None = None,
                   retrieve: int | None = None) -> dict:
    """The recall figures of the module docstring (`available` false, with the reason, when
    the model has no retrieval or the state or pool as of `as_of` is missing)."""
    users = cfg["evaluate.recall_users"] if users is None else users
    retrieve = cfg["score.retrieve"] if retrieve is None else retrieve
    if export.load_retrieval(model_folder) is None:
        return unavailable("the model has no retrieval (score.mode cascade unavailable)")
    try:
        if not as_of:
            raise RunNotFound("the dev rows record no as-of moment")
        state_uri, pool_uri = state_and_pool(cfg, dt.datetime.fromisoformat(as_of))
    except RunNotFound as err:
        return unavailable(str(err))
    profiles = sample_profiles(state_uri, users, cfg["evaluate.seed"])
    if cfg["score.cold_users"] != "model":      # only the users the model scores
        warm = profiles["history_len"] > 0
        profiles = {key: [v for v, w in zip(value, warm) if w] if isinstance(value, list)
                    else value[warm] for key, value in profiles.items()}
    pool = load_pool(pool_uri)
    settings = dict(tasks.task_settings(cfg), retrieve=retrieve)
    exact, batch = tasks.make_ranker(model_folder, dict(settings, mode="factorized"), pool)
    cascade, cascade_batch = tasks.make_ranker(model_folder, dict(settings, mode="cascade"), pool)
    # (the pool's index is made here, once, as the score job makes it on its driver)
    batch = min(batch, cascade_batch)
    position = {news_id: i for i, news_id in enumerate(pool["ids"])}
    k = cfg["score.k"]
    at_k, deep = [], []
    for start in range(0, len(profiles["ids"]), batch):
        stop = start + batch
        clicked = profiles["clicked"][start:stop]
        excluded = np.zeros((len(clicked), len(pool["ids"])), dtype=bool)
        for row, news in enumerate(clicked):
            excluded[row, [position[n] for n in news if n in position]] = True
        sides = exact.scorer.user_side(profiles["vectors"][start:stop], profiles["dense"][start:stop])
        best, best_ok, _ = exact.rank(sides, excluded, max(k, DEEP_RECALL))
        picked, picked_ok, _ = cascade.rank(sides, excluded, k)
        lists, listed = cascade.short_lists(sides, excluded)
        at_k.append(_overlap(best[:, :k], best_ok[:, :k], picked, picked_ok))
        deep.append(_overlap(best[:, :DEEP_RECALL], best_ok[:, :DEEP_RECALL], lists, listed))
    at_k, deep = np.concatenate(at_k), np.concatenate(deep)
    mean = lambda values: float(np.nanmean(values)) if np.isfinite(values).any() else None  # noqa: E731
    return {"available": True, "users": int(np.isfinite(at_k).sum()), "pool": len(pool["ids"]),
            "k": k, "retrieve": retrieve, "recall_at_k": mean(at_k),
            "min_recall_at_k": float(np.nanmin(at_k)) if np.isfinite(at_k).any() else None,
            f"short_list_recall_at_{DEEP_RECALL}": mean(deep),
            "as_of": as_of, "exact_pair_share": min(1.0, retrieve / len(pool["ids"]))}
