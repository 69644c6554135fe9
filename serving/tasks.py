"""The scoring kernel of a Spark task: batches of users against the whole pool matrix, the
news each user already clicked removed, the exact top k kept (dcn/scoring.py,
dcn/batching.py). The scorer is loaded once per Python worker; the evaluation scores the dev
rows with the same scorer."""
from __future__ import annotations

import datetime as dt
import os
from typing import Iterator

import numpy as np
import pandas as pd

from common import columns as C
from common.config import Config
from common.errors import UserInputError
from dcn import export
from dcn.batching import MemoryBudgetTooSmall, spec_memory, top_k, users_per_batch

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


def _rows(users, indices, valid, scores, pool_ids, version, scored_at) -> pd.DataFrame:
    user_col, rank_col, news_col, score_col = [], [], [], []
    for row, user in enumerate(users):
        keep = indices[row][valid[row]]
        user_col.extend([user] * len(keep))
        rank_col.extend(range(1, len(keep) + 1))
        news_col.extend(pool_ids[keep])
        score_col.extend(scores[row, keep])
    return pd.DataFrame({C.USER_ID: user_col, C.RANK: np.asarray(rank_col, dtype=np.int32),
                         C.NEWS_ID: news_col, C.SCORE: np.asarray(score_col, dtype=np.float32),
                         C.MODEL_VERSION: version, C.SCORED_AT: scored_at})


def task_settings(cfg: Config) -> dict:
    """The settings `score_partitions` reads, as plain values shipped to the tasks."""
    return {key: cfg[f"score.{key}"] for key in
            ("k", "user_batch_size", "mode", "cold_users", "threads_per_task",
             "memory_budget_mb")}


def score_partitions(pool_broadcast, model_folder: str, version: str, settings: dict,
                     scored_at: dt.datetime):
    """The mapInPandas function: profiles in, recommendation rows out."""
    k, cap, mode = settings["k"], settings["user_batch_size"], settings["mode"]
    budget = settings["memory_budget_mb"] * 2 ** 20
    cold_policy, threads = settings["cold_users"], settings["threads_per_task"]

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        pool = pool_broadcast.value
        n_news = len(pool["ids"])
        position = {news_id: i for i, news_id in enumerate(pool["ids"])}
        scorer, batch, news = None, None, None
        for frame in frames:
            if scorer is None:
                scorer = cached_scorer(model_folder, mode, threads)
                batch = users_per_batch(scorer.memory(n_news), n_news, budget, cap)
                news = scorer.news_side(pool["vectors"], pool["dense"], pool["category"],
                                        pool["subcategory"], pool["topic"])
            for start in range(0, len(frame), batch):
                part = frame.iloc[start:start + batch]
                excluded = np.zeros((len(part), n_news), dtype=bool)
                for row, clicked in enumerate(part[C.CLICKED_NEWS]):
                    cols = [position[n] for n in clicked if n in position]
                    excluded[row, cols] = True
                cold = part[C.HISTORY_LEN].to_numpy() == 0
                warm = ~cold if cold_policy != "model" else np.ones(len(part), dtype=bool)
                if warm.any():
                    users = scorer.user_side(
                        np.stack(part[C.USER_VEC].to_numpy()[warm]).astype(np.float32),
                        np.stack(part[C.USER_DENSE].to_numpy()[warm]).astype(np.float32))
                    logits = scorer.logits(users, news)
                    idx, ok = top_k(logits, k, excluded[warm])
                    yield _rows(part[C.USER_ID].to_numpy()[warm], idx, ok,
                                1.0 / (1.0 + np.exp(-logits)), pool["ids"], version, scored_at)
                    del logits
                if cold.any() and cold_policy == "popularity":
                    # ranked by the smoothed click rate, which is also the score
                    popularity = np.broadcast_to(pool["ctr"], (int(cold.sum()), n_news))
                    idx, ok = top_k(popularity, k, excluded[cold])
                    yield _rows(part[C.USER_ID].to_numpy()[cold], idx, ok, popularity,
                                pool["ids"], POPULARITY_VERSION, scored_at)
    return run


def check_memory_budget(cfg: Config, metadata: dict, n_news: int) -> None:
    """On the driver: a budget in which not even one user fits next to the pool is an error
    now, not in every task later."""
    if "model_spec" not in metadata:
        return
    try:
        users_per_batch(spec_memory(metadata["model_spec"], n_news, cfg["score.mode"]), n_news,
                        cfg["score.memory_budget_mb"] * 2 ** 20, cfg["score.user_batch_size"])
    except MemoryBudgetTooSmall as err:
        raise UserInputError(str(err)) from None
