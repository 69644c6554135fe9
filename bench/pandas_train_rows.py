"""A straightforward single-process pandas/numpy implementation of build_features' train rows,
the baseline of bench/build_features_bench.py.

    python bench/pandas_train_rows.py BEHAVIORS_TSV VECTORS_PARQUET OUT_PARQUET NPRATIO

Same rows as the Spark job: the point-in-time user vector of jobs/user_state.py (the mean of
the vectors of the impression's own history plus every news in the histories and clicks of the
user's earlier impressions, same-second impressions not seeing each other), npratio negatives
per positive, candidates without a vector dropped. Negatives are drawn with numpy's generator
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

    # point-in-time user vectors: each user's impressions in time order, a running set and sum
    times = pd.to_datetime(behaviors["time"], format="%m/%d/%Y %I:%M:%S %p").to_numpy()
    order = np.lexsort((behaviors["impression_id"].astype(np.int64).to_numpy(), times,
                        behaviors["user_id"].to_numpy()))
    users, histories = behaviors["user_id"].to_numpy(), behaviors["history"].to_numpy()
    fields = behaviors["impressions"].to_numpy()
    user_vecs = np.zeros((len(behaviors), dim), dtype=np.float32)
    user_lens = np.zeros(len(behaviors), dtype=np.int32)
    position = 0
    while position < len(order):
        user = users[order[position]]
        seen, total = set(), np.zeros(dim, dtype=np.float64)
        while position < len(order) and users[order[position]] == user:
            moment, group = times[order[position]], []
            while (position < len(order) and users[order[position]] == user
                   and times[order[position]] == moment):
                group.append(order[position])
                position += 1
            added = set()
            for row in group:
                own = {index[n] for n in histories[row].split() if n in index} - seen
                vector = total + (matrix[list(own)].sum(axis=0, dtype=np.float64) if own else 0)
                count = len(seen) + len(own)
                if count:
                    user_vecs[row] = (vector / count).astype(np.float32)
                user_lens[row] = count
                clicked = [t[:-2] for t in fields[row].split() if t.endswith("-1")]
                added |= own | {index[n] for n in clicked if n in index}
            added -= seen
            if added:
                total = total + matrix[list(added)].sum(axis=0, dtype=np.float64)
                seen |= added

    rng = np.random.default_rng(42)
    rows_impression, rows_user, rows_news, rows_label, rows_history = [], [], [], [], []
    for code, (impression_id, user_id, field) in enumerate(zip(
            behaviors["impression_id"], behaviors["user_id"], behaviors["impressions"])):
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
        "user_vec": vector_column(user_vecs[hist_idx]),
        "news_vec": vector_column(matrix[news_idx]),
        "history_len": pa.array(user_lens[hist_idx]),
    })
    pq.write_table(table, out_path)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": table.num_rows, "seconds": seconds, "peak_rss_mb": peak_mb}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
