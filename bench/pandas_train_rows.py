"""A straightforward single-process pandas/numpy implementation of build_features' train rows,
the baseline of bench/build_features_bench.py.

    python bench/pandas_train_rows.py BEHAVIORS_TSV VECTORS_PARQUET OUT_PARQUET NPRATIO

Same rows as the Spark job (user vector = mean of the history's vectors, npratio negatives per
positive, candidates without a vector dropped); negatives are drawn with numpy's generator
instead of Spark's hash, so the same number of rows but not the same ones. Prints a JSON line
with rows, seconds and peak RSS.
"""
from __future__ import annotations

import csv
import json
import resource
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def vector_column(matrix: np.ndarray) -> pa.Array:
    flat = pa.array(matrix.astype(np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]).cast(pa.list_(pa.float32()))


def main(behaviors_path: str, vectors_path: str, out_path: str, npratio: int) -> None:
    start = time.perf_counter()
    vectors = pq.read_table(vectors_path).to_pandas()
    index = {news_id: i for i, news_id in enumerate(vectors["news_id"])}
    matrix = np.stack(vectors["vector"].to_numpy()).astype(np.float32)
    dim = matrix.shape[1]
    behaviors = pd.read_csv(behaviors_path, sep="\t", header=None, quoting=csv.QUOTE_NONE,
                            names=["impression_id", "user_id", "time", "history", "impressions"],
                            dtype=str, keep_default_na=False)

    # each distinct history averaged once
    history_codes, histories = pd.factorize(behaviors["history"])
    history_vecs = np.zeros((len(histories), dim), dtype=np.float32)
    history_lens = np.zeros(len(histories), dtype=np.int32)
    for h, text in enumerate(histories):
        ids = [index[n] for n in text.split() if n in index]
        if ids:
            history_vecs[h] = matrix[ids].mean(axis=0)
            history_lens[h] = len(ids)

    rng = np.random.default_rng(42)
    rows_impression, rows_user, rows_news, rows_label, rows_history = [], [], [], [], []
    for impression_id, user_id, code, field in zip(behaviors["impression_id"], behaviors["user_id"],
                                                   history_codes, behaviors["impressions"]):
        tokens = [t.rsplit("-", 1) for t in field.split()]
        known = [(index[n], int(l)) for n, l in tokens if n in index]
        positives = [c for c in known if c[1] == 1]
        negatives = [c for c in known if c[1] == 0]
        if npratio and len(negatives) > npratio * max(len(positives), 1):
            chosen = rng.choice(len(negatives), npratio * max(len(positives), 1), replace=False)
            negatives = [negatives[i] for i in chosen]
        for news, label in positives + negatives:
            rows_impression.append(int(impression_id))
            rows_user.append(user_id)
            rows_news.append(news)
            rows_label.append(label)
            rows_history.append(code)
    news_idx, hist_idx = np.asarray(rows_news), np.asarray(rows_history)
    table = pa.table({
        "impression_id": pa.array(rows_impression, pa.int64()),
        "user_id": pa.array(rows_user),
        "news_id": pa.array(vectors["news_id"].to_numpy()[news_idx]),
        "label": pa.array(rows_label, pa.int32()),
        "user_vec": vector_column(history_vecs[hist_idx]),
        "news_vec": vector_column(matrix[news_idx]),
        "history_len": pa.array(history_lens[hist_idx]),
    })
    pq.write_table(table, out_path)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": table.num_rows, "seconds": seconds, "peak_rss_mb": peak_mb}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
