"""The dev impressions replayed through the exact DCN and through the cascade restricted to
each impression's candidates (bench/cascade_bench.py, step 4): within an impression the
cascade keeps the `retrieve` candidates the retrieval tower scores best, ranks them by the
DCN's logit, and puts the others after them in the tower's order. Returns each mode's mean
MIND metrics over the impressions with a click and a non-click."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from common import columns as C
from common import outputs, packed_vectors, storage
from dcn import export
from dcn.metrics import MetricAccumulator


def dev_rows(cfg) -> dict:
    rows = outputs.current_rows(cfg)
    fs, path = storage.filesystem(f"{rows['path']}/dev")
    table = pq.read_table(path, filesystem=fs).sort_by(C.IMPRESSION_ID)
    arrays = lambda name: np.stack(table.column(name).to_numpy(zero_copy_only=False)).astype(np.float32)  # noqa: E731
    return {"impression": table.column(C.IMPRESSION_ID).to_numpy(),
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


def replay(cfg, retrieves) -> dict[str, dict]:
    folder = export.model_folder(cfg)
    scorer, tower = export.load_factorized(folder), export.load_retrieval(folder)
    rows = dev_rows(cfg)
    users = scorer.user_side(rows["user_vec"], rows["user_dense"])
    news = scorer.news_side(rows["news_vec"], rows["news_dense"], rows["category"], rows["subcategory"])
    logits = scorer.pair_logits(users, news, rows["pair_dense"])
    retrieval = tower.pair_scores(users, news, rows["pair_dense"][:, 0])
    modes = {"exact": None, **{f"cascade retrieve {r}": r for r in retrieves}}
    results = {label: MetricAccumulator() for label in modes}
    bounds = np.flatnonzero(np.diff(rows["impression"])) + 1
    for part in np.split(np.arange(len(logits)), bounds):
        labels = rows["label"][part]
        for label, retrieve in modes.items():
            scores = logits[part] if retrieve is None else \
                cascade_order(logits[part], retrieval[part], retrieve)
            results[label].add(labels, scores)
    return {label: accumulator.result() for label, accumulator in results.items()}
