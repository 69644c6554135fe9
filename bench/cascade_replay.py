"""The dev impressions replayed through the exact DCN and through the cascade restricted to
each impression's candidates (bench/cascade_bench.py, step 4): within an impression the
cascade keeps the `retrieve` candidates the retrieval scores best, ranks them by the DCN's
logit, and puts the others after them in the retrieval's order. Returns each mode's mean MIND
metrics over the impressions with a click and a non-click.

The exact logits are the dev rows' own (side features as of each impression, as evaluate
scores them). The retrieval is indexed on the candidate pool as of the rows' as-of moment,
which holds the dev day's shown news (features.dev_days = 1 and a 24-hour pool window): a
candidate's retrieval score is its column of that index (its side features as of the as-of),
and a candidate missing from the pool gets the lowest retrieval score."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from common import columns as C
import datetime as dt

from common import outputs, packed_vectors, storage
from dcn import export
from dcn.batching import users_per_batch
from dcn.metrics import MetricAccumulator
from features.arrays import load_pool, state_and_pool


def dev_rows(cfg) -> dict:
    rows = outputs.current_rows(cfg)
    fs, path = storage.filesystem(f"{rows['path']}/dev")
    table = pq.read_table(path, filesystem=fs).sort_by(C.IMPRESSION_ID)
    arrays = lambda name: np.stack(table.column(name).to_numpy(zero_copy_only=False)).astype(np.float32)  # noqa: E731
    return {"impression": table.column(C.IMPRESSION_ID).to_numpy(),
            "news_id": np.asarray(table.column(C.NEWS_ID).to_pylist(), dtype=object),
            "label": table.column(C.LABEL).to_numpy(),
            "user_vec": packed_vectors.decode(table.column(C.USER_VEC).combine_chunks()),
            "news_vec": packed_vectors.decode(table.column(C.NEWS_VEC).combine_chunks()),
            "user_dense": arrays(C.USER_DENSE), "news_dense": arrays(C.NEWS_DENSE),
            "pair_dense": arrays(C.PAIR_DENSE),
            "category": table.column(C.CATEGORY).to_numpy(),
            "subcategory": table.column(C.SUBCATEGORY).to_numpy()}


def cascade_order(logits: np.ndarray, retrieval: np.ndarray, retrieve: int) -> np.ndarray:
    """Scores whose order is the cascade's: the `retrieve` best by `retrieval` first, by
    logit, then the rest by `retrieval`."""
    listed = np.zeros(len(logits), dtype=bool)
    listed[np.argsort(-retrieval, kind="stable")[:retrieve]] = True
    ranks = np.empty(len(logits))
    ranks[listed] = np.argsort(np.argsort(-logits[listed], kind="stable"), kind="stable")
    ranks[~listed] = listed.sum() + np.argsort(np.argsort(-retrieval[~listed], kind="stable"),
                                               kind="stable")
    return -ranks


def retrieval_scores(cfg, scorer, found, users: np.ndarray, rows: dict) -> np.ndarray:
    """Each dev row's retrieval score (module docstring)."""
    _, pool_uri = state_and_pool(cfg, dt.datetime.fromisoformat(outputs.current_rows(cfg)["summary"]["as_of"]))
    pool = load_pool(pool_uri)
    news = scorer.prepare_news(scorer.news_side(pool["vectors"], pool["dense"], pool["category"],
                                                pool["subcategory"], pool["topic"]))
    batch = users_per_batch(scorer.memory(len(news)), len(news), 512 * 2 ** 20, 64)
    index = found.index_pool(scorer, news, batch)
    position = {news_id: i for i, news_id in enumerate(pool["ids"])}
    columns = np.array([position.get(n, -1) for n in rows["news_id"]])
    scores = np.full(len(columns), -np.inf)
    first = np.flatnonzero(np.r_[True, np.diff(rows["impression"]) != 0])
    owner = np.cumsum(np.r_[True, np.diff(rows["impression"]) != 0]) - 1
    embeddings = found.user_embeddings(scorer, users[first], news, index)
    known = columns >= 0
    scores[known] = np.einsum("ij,ji->i", embeddings[owner[known]], index.beta[:, columns[known]])
    return scores


def replay(cfg, retrieves) -> dict[str, dict]:
    folder = export.model_folder(cfg)
    scorer, found = export.load_factorized(folder), export.load_retrieval(folder)
    rows = dev_rows(cfg)
    users = scorer.user_side(rows["user_vec"], rows["user_dense"])
    news = scorer.news_side(rows["news_vec"], rows["news_dense"], rows["category"], rows["subcategory"])
    logits = scorer.pair_logits(users, news, rows["pair_dense"])
    retrieval = retrieval_scores(cfg, scorer, found, users, rows)
    modes = {"exact": None, **{f"cascade retrieve {r}": r for r in retrieves}}
    results = {label: MetricAccumulator() for label in modes}
    bounds = np.flatnonzero(np.diff(rows["impression"])) + 1
    for part in np.split(np.arange(len(logits)), bounds):
        labels = rows["label"][part]
        for label, retrieve in modes.items():
            scores = logits[part] if retrieve is None else \
                cascade_order(logits[part], retrieval[part], retrieve)
            results[label].add(labels, scores)
    out = {label: accumulator.result() for label, accumulator in results.items()}
    out["exact"]["rows_missing_from_pool"] = int(np.isinf(retrieval).sum())
    return out
