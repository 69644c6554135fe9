"""The scoring kernel of a Spark task: batches of users against the pool, the news each user
already clicked removed, the top k kept: exact (every user against the whole pool through the
DCN, dcn/scoring.py) or cascade (the retrieval's short list, then the DCN on it,
dcn/retrieval.py); dcn/batching.py sizes the batches. The scorer is loaded once per Python
worker; the evaluation scores the dev rows with the same scorer."""
from __future__ import annotations

import datetime as dt
import os
from typing import Iterator

import numpy as np
import pandas as pd

from common import columns as C
from common.config import Config
from common.errors import UserInputError
from dcn import export, retrieval
from dcn.batching import (MemoryBudgetTooSmall, cascade_memory, spec_memory, top_k,
                          users_per_batch)

POPULARITY_VERSION = "popularity"

# per Python worker: (model folder, mode) -> scorer
_SCORERS: dict = {}


def cached_scorer(model_folder: str, mode: str, threads: int):
    """The scorer of `model_folder` in `mode` (dcn.scoring.make_scorer's modes), loaded once
    per Python worker: the factorized arrays saved with the export where there are some (numpy
    only), else the Keras model."""
    key = (model_folder, mode)
    if key not in _SCORERS:
        if threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
            os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
        # numpy only when the export holds the factorized scorer's arrays
        scorer = export.load_factorized(model_folder) if mode != "plain" else None
        if scorer is None:
            if threads:
                import tensorflow as tf
                try:
                    tf.config.threading.set_intra_op_parallelism_threads(threads)
                    tf.config.threading.set_inter_op_parallelism_threads(threads)
                except RuntimeError:  # TensorFlow already initialized in this reused worker
                    pass
            from dcn.scoring import make_scorer
            model, _ = export.load_model(model_folder)
            scorer = make_scorer(model, mode)
        _SCORERS[key] = scorer
    return _SCORERS[key]


def cached_retrieval(model_folder: str, scorer):
    """The cascade's retrieval exported with the model, loaded once per Python worker and
    checked against the exact scorer it was made for."""
    key = (model_folder, "retrieval")
    if key not in _SCORERS:
        found = export.load_retrieval(model_folder)
        if found is None:
            raise UserInputError(
                f"score.mode is cascade but the model {model_folder} has no retrieval "
                f"({retrieval.RETRIEVAL_FILE}; training saves one when the user state as of its "
                "rows' as-of exists and the model has vector cross layers): retrain it, or "
                "score with an exact mode")
        if found.teacher != retrieval.scorer_digest(scorer):
            raise UserInputError(f"the retrieval of {model_folder} was made for another model "
                                 "than the one saved beside it: retrain it")
        _SCORERS[key] = found
    return _SCORERS[key]


class ExactRanker:
    """Every user against the whole pool through the exact scorer."""

    def __init__(self, scorer, news_side):
        self.scorer = scorer
        self.news = scorer.prepare_news(news_side)

    def rank(self, users: np.ndarray, excluded: np.ndarray, k: int):
        """(pool indices [B, k'], valid [B, k'], their logits [B, k'])."""
        logits = self.scorer.logits(users, self.news)
        idx, ok = top_k(logits, k, excluded)
        return idx, ok, np.take_along_axis(logits, idx, axis=1)


class CascadeRanker(ExactRanker):
    """The retrieval's short list of each user (dcn/retrieval.py), then the exact scorer on
    that list only: the same top k wherever the list holds the exact top k."""

    def __init__(self, scorer, news_side, found, retrieve: int, index):
        super().__init__(scorer, news_side)
        self.retrieval, self.retrieve, self.index = found, retrieve, index

    def short_lists(self, users: np.ndarray, excluded: np.ndarray):
        embeddings = self.retrieval.user_embeddings(self.scorer, users, self.news, self.index)
        return retrieval.short_lists(embeddings, self.index.beta, self.retrieve, excluded)

    def rank(self, users: np.ndarray, excluded: np.ndarray, k: int):
        lists, listed = self.short_lists(users, excluded)
        logits = self.scorer.short_list_logits(users, self.news, lists)
        idx, ok = top_k(logits, k, ~listed)
        return (np.take_along_axis(lists, idx, axis=1), ok,
                np.take_along_axis(logits, idx, axis=1))


def _pool_side(scorer, pool: dict):
    return scorer.prepare_news(scorer.news_side(pool["vectors"], pool["dense"], pool["category"],
                                                pool["subcategory"], pool["topic"]))


def _exact_batch(scorer, n_news: int, settings: dict) -> int:
    return users_per_batch(scorer.memory(n_news), n_news, settings["memory_budget_mb"] * 2 ** 20,
                           settings["user_batch_size"])


def pool_index(model_folder: str, settings: dict, pool: dict, news=None):
    """The cascade's retrieval index of the day's pool (dcn/retrieval.py: the landmark users'
    exact logits against the pool, regressed on the landmark news'), made once per run on the
    driver and shipped with the pool: its cost is the pool's (landmark users x pool pairs),
    not the users'. `news`: the pool's side, if already prepared. None for the exact modes."""
    if settings["mode"] != "cascade":
        return None
    scorer = cached_scorer(model_folder, "factorized", settings["threads_per_task"])
    news = news if news is not None else _pool_side(scorer, pool)
    return cached_retrieval(model_folder, scorer).index_pool(
        scorer, news, _exact_batch(scorer, len(pool["ids"]), settings))


def make_ranker(model_folder: str, settings: dict, pool: dict, index=None):
    """The ranker of `settings["mode"]` with its scorer, ready for a task's pool (and, for the
    cascade, the pool's `index`, made by `pool_index` when not given), and the users per batch
    that fit `settings["memory_budget_mb"]`."""
    mode, threads = settings["mode"], settings["threads_per_task"]
    scorer = cached_scorer(model_folder, "factorized" if mode == "cascade" else mode, threads)
    news = _pool_side(scorer, pool)
    n_news, budget = len(pool["ids"]), settings["memory_budget_mb"] * 2 ** 20
    if mode != "cascade":
        return ExactRanker(scorer, news), _exact_batch(scorer, n_news, settings)
    found = cached_retrieval(model_folder, scorer)
    index = index if index is not None else pool_index(model_folder, settings, pool, news)
    memory = cascade_memory(scorer.memory(n_news), 0, found.width(n_news), n_news,
                            settings["retrieve"])
    return (CascadeRanker(scorer, news, found, settings["retrieve"], index),
            users_per_batch(memory, n_news, budget, settings["user_batch_size"]))


def _rows(users, picked, valid, scores, pool_ids, version, scored_at) -> pd.DataFrame:
    """Table rows of each user's picked news (pool indices [B, k'], best first) and their
    scores [B, k']."""
    user_col, rank_col, news_col, score_col = [], [], [], []
    for row, user in enumerate(users):
        keep = valid[row]
        count = int(keep.sum())
        user_col.extend([user] * count)
        rank_col.extend(range(1, count + 1))
        news_col.extend(pool_ids[picked[row][keep]])
        score_col.extend(scores[row][keep])
    return pd.DataFrame({C.USER_ID: user_col, C.RANK: np.asarray(rank_col, dtype=np.int32),
                         C.NEWS_ID: news_col, C.SCORE: np.asarray(score_col, dtype=np.float32),
                         C.MODEL_VERSION: version, C.SCORED_AT: scored_at})


def task_settings(cfg: Config) -> dict:
    """The settings `score_partitions` reads, as plain values shipped to the tasks."""
    return {key: cfg[f"score.{key}"] for key in
            ("k", "user_batch_size", "mode", "retrieve", "cold_users", "threads_per_task",
             "memory_budget_mb")}


def score_partitions(pool_broadcast, model_folder: str, version: str, settings: dict,
                     scored_at: dt.datetime):
    """The mapInPandas function: profiles in, recommendation rows out. `pool_broadcast.value`
    is the pool (features/arrays.py load_pool), with the cascade's `pool_index` under
    "retrieval_index"."""
    k = settings["k"]
    cold_policy = settings["cold_users"]

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        pool = pool_broadcast.value
        n_news = len(pool["ids"])
        position = {news_id: i for i, news_id in enumerate(pool["ids"])}
        ranker, batch = None, None
        for frame in frames:
            if ranker is None:
                ranker, batch = make_ranker(model_folder, settings, pool,
                                            pool.get("retrieval_index"))
            for start in range(0, len(frame), batch):
                part = frame.iloc[start:start + batch]
                excluded = np.zeros((len(part), n_news), dtype=bool)
                for row, clicked in enumerate(part[C.CLICKED_NEWS]):
                    cols = [position[n] for n in clicked if n in position]
                    excluded[row, cols] = True
                cold = part[C.HISTORY_LEN].to_numpy() == 0
                warm = ~cold if cold_policy != "model" else np.ones(len(part), dtype=bool)
                if warm.any():
                    users = ranker.scorer.user_side(
                        np.stack(part[C.USER_VEC].to_numpy()[warm]).astype(np.float32),
                        np.stack(part[C.USER_DENSE].to_numpy()[warm]).astype(np.float32))
                    picked, ok, logits = ranker.rank(users, excluded[warm], k)
                    yield _rows(part[C.USER_ID].to_numpy()[warm], picked, ok,
                                1.0 / (1.0 + np.exp(-logits)), pool["ids"], version, scored_at)
                if cold.any() and cold_policy == "popularity":
                    # ranked by the smoothed click rate, which is also the score
                    popularity = np.broadcast_to(pool["ctr"], (int(cold.sum()), n_news))
                    idx, ok = top_k(popularity, k, excluded[cold])
                    yield _rows(part[C.USER_ID].to_numpy()[cold], idx, ok,
                                np.take_along_axis(popularity, idx, axis=1), pool["ids"],
                                POPULARITY_VERSION, scored_at)
    return run


def check_cascade(cfg: Config, model_folder: str):
    """On the driver, before any task: the cascade's retrieval exists and belongs to the model.
    Returns it (None for the exact modes)."""
    if cfg["score.mode"] != "cascade":
        return None
    return cached_retrieval(model_folder, cached_scorer(model_folder, "factorized", 0))


def check_memory_budget(cfg: Config, metadata: dict, n_news: int, found=None) -> None:
    """On the driver: a budget in which not even one user fits next to the pool is an error
    now, not in every task later. `found`: the cascade's retrieval (check_cascade)."""
    if "model_spec" not in metadata:
        return
    mode = cfg["score.mode"]
    try:
        users_per_batch(spec_memory(metadata["model_spec"], n_news, mode,
                                    landmark_users=len(found.landmark_users) if found else 0,
                                    landmark_news=found.landmark_news if found else 0,
                                    retrieve=cfg["score.retrieve"]), n_news,
                        cfg["score.memory_budget_mb"] * 2 ** 20, cfg["score.user_batch_size"])
    except MemoryBudgetTooSmall as err:
        raise UserInputError(str(err)) from None
