"""A straightforward single-process pandas/numpy implementation of build_features' train rows,
the baseline of bench/build_features_bench.py.

    python -m bench.pandas_train_rows BEHAVIORS_TSV VECTORS_PARQUET OUT_PARQUET NPRATIO \
        --news NEWS_TSV [NEWS_TSV ...] [--dev DEV_BEHAVIORS_TSV --dev-out DEV_OUT_PARQUET]
        [--window-hours 24] [--ctr-prior 0.04] [--prior-impressions 20] [--buckets 1024]

The same rows as the Spark job (schemas.FEATURE_ROWS), every column:
- the point-in-time user vector of features/user_state.py (the mean of the vectors of the
  impression's own history plus every news in the histories and clicks of the user's earlier
  impressions, same-second impressions not seeing each other), `history_len`, and the user's
  impressions in earlier seconds;
- the side features of features/side_features.py: category and subcategory buckets (the first
  news.tsv that lists a news wins), the news item's age from its first sighting in the log,
  its impressions and clicks in the window before the impression, the smoothed click rate,
  and the user vector against the mean vector of the candidate's category.
npratio negatives per positive, candidates without a vector dropped. With --dev, also the dev
rows (every candidate), as the full rebuild writes them: the rows/s of the benchmark are then
over the same rows on both sides. With NPRATIO 0 every
candidate is kept and the rows are Spark's, row for row (tests/test_reference_rows.py); with
NPRATIO > 0 negatives are drawn with numpy's generator instead of Spark's hash, so the same
number of rows but not the same ones. Prints a JSON line with rows, seconds and peak RSS.
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import struct
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MASK = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & MASK


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * P2) & MASK, 31) * P1) & MASK


def xxh64(data: bytes, seed: int) -> int:
    """xxHash64 of `data` (the published algorithm), as the signed long Spark's xxhash64
    returns. Used on category names only: a few hundred calls."""
    seed &= MASK
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & MASK, (seed + P2) & MASK, seed, (seed - P1) & MASK]
        while i + 32 <= n:
            for lane in range(4):
                v[lane] = _round(v[lane], struct.unpack_from("<Q", data, i + 8 * lane)[0])
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & MASK
        for lane in v:
            h = (((h ^ _round(0, lane)) * P1) + P4) & MASK
    else:
        h = (seed + P5) & MASK
    h = (h + n) & MASK
    while i + 8 <= n:
        h ^= _round(0, struct.unpack_from("<Q", data, i)[0])
        h = (_rotl(h, 27) * P1 + P4) & MASK
        i += 8
    if i + 4 <= n:
        h ^= (struct.unpack_from("<I", data, i)[0] * P1) & MASK
        h = (_rotl(h, 23) * P2 + P3) & MASK
        i += 4
    while i < n:
        h ^= (data[i] * P5) & MASK
        h = (_rotl(h, 11) * P1) & MASK
        i += 1
    h ^= h >> 33
    h = (h * P2) & MASK
    h ^= h >> 29
    h = (h * P3) & MASK
    h ^= h >> 32
    return h - (1 << 64) if h >= 1 << 63 else h


def category_bucket(name: str, buckets: int) -> int:
    """Spark's `pmod(xxhash64('category', name), buckets - 1) + 1`; 0 for an empty name."""
    if not name.strip():
        return 0
    h = xxh64(name.encode("utf-8"), xxh64(b"category", 42))
    return h % (buckets - 1) + 1


def vector_column(matrix: np.ndarray) -> pa.Array:
    flat = pa.array(matrix.astype(np.float32).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]).cast(pa.list_(pa.float32()))


def packed_column(matrix: np.ndarray) -> pa.Array:
    """Vectors as build_features stores them: float32 little-endian bytes, one binary value each."""
    matrix = np.ascontiguousarray(matrix, dtype="<f4")
    n, width = matrix.shape
    offsets = np.arange(0, n * width * 4 + 1, width * 4, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(matrix.tobytes())])


def read_categories(news_files: list[str], buckets: int) -> dict:
    """news id -> (category bucket, subcategory bucket); the first file listing an id wins."""
    found: dict = {}
    for path in news_files:
        news = pd.read_csv(path, sep="\t", header=None, quoting=csv.QUOTE_NONE, usecols=[0, 1, 2],
                           names=["news_id", "category", "subcategory"], dtype=str,
                           keep_default_na=False)
        names = pd.unique(pd.concat([news["category"], news["subcategory"]]))
        bucket = {name: category_bucket(name, buckets) for name in names}
        for news_id, category, subcategory in zip(news["news_id"], news["category"], news["subcategory"]):
            found.setdefault(news_id, (bucket[category], bucket[subcategory]))
    return found


def windowed_popularity(news: np.ndarray, t: np.ndarray, label: np.ndarray,
                        window: int) -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks of each candidate's news in [t - window, t)."""
    order = np.lexsort((t, news))
    sorted_news, sorted_t = news[order], t[order]
    running = np.concatenate([[0], np.cumsum(label[order])])
    impressions = np.zeros(len(t), np.int64)
    clicks = np.zeros(len(t), np.int64)
    bounds = np.flatnonzero(np.diff(sorted_news)) + 1
    for start, end in zip(np.r_[0, bounds], np.r_[bounds, len(order)]):
        times = sorted_t[start:end]
        hi = start + np.searchsorted(times, times, side="left")
        lo = start + np.searchsorted(times, times - window, side="left")
        impressions[order[start:end]] = hi - lo
        clicks[order[start:end]] = running[hi] - running[lo]
    return impressions, clicks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("behaviors")
    parser.add_argument("vectors")
    parser.add_argument("out")
    parser.add_argument("npratio", type=int)
    parser.add_argument("--news", nargs="+", required=True)
    parser.add_argument("--dev", help="the dev behaviors.tsv: its impressions follow the train "
                                      "ones (same state, same popularity) and keep every candidate")
    parser.add_argument("--dev-out", help="where the dev rows go (with --dev)")
    parser.add_argument("--window-hours", type=int, default=24)
    parser.add_argument("--ctr-prior", type=float, default=0.04)
    parser.add_argument("--prior-impressions", type=float, default=20)
    parser.add_argument("--buckets", type=int, default=1024)
    args = parser.parse_args()

    began = time.perf_counter()
    vectors = pq.read_table(args.vectors).to_pandas().sort_values("news_id", ignore_index=True)
    index = {news_id: i for i, news_id in enumerate(vectors["news_id"])}
    matrix = np.stack(vectors["vector"].to_numpy()).astype(np.float32)
    dim = matrix.shape[1]
    categories = read_categories(args.news, args.buckets)
    news_category = np.array([categories.get(n, (0, 0))[0] for n in vectors["news_id"]])
    news_subcategory = np.array([categories.get(n, (0, 0))[1] for n in vectors["news_id"]])
    topic = np.zeros((args.buckets, dim), np.float32)     # mean vector per category bucket
    for bucket in np.unique(news_category):
        topic[bucket] = matrix[news_category == bucket].astype(np.float64).mean(axis=0)

    files = [args.behaviors] + ([args.dev] if args.dev else [])
    behaviors = pd.concat([pd.read_csv(
        path, sep="\t", header=None, quoting=csv.QUOTE_NONE,
        names=["impression_id", "user_id", "time", "history", "impressions"], dtype=str,
        keep_default_na=False).assign(src=src) for src, path in enumerate(files)], ignore_index=True)
    times = pd.to_datetime(behaviors["time"], format="%m/%d/%Y %I:%M:%S %p").to_numpy()
    seconds = times.astype("datetime64[s]").astype(np.int64)

    # point-in-time user vectors: each user's impressions in time order, a running set and sum
    order = np.lexsort((behaviors["impression_id"].astype(np.int64).to_numpy(),
                        behaviors["src"].to_numpy(), times, behaviors["user_id"].to_numpy()))
    users, histories = behaviors["user_id"].to_numpy(), behaviors["history"].to_numpy()
    fields = behaviors["impressions"].to_numpy()
    user_vecs = np.zeros((len(behaviors), dim), dtype=np.float32)
    user_lens = np.zeros(len(behaviors), dtype=np.int32)
    user_impressions = np.zeros(len(behaviors), dtype=np.int64)
    position = 0
    while position < len(order):
        user = users[order[position]]
        seen, total, earlier = set(), np.zeros(dim, dtype=np.float64), 0
        while position < len(order) and users[order[position]] == user:
            moment, group = times[order[position]], []
            while (position < len(order) and users[order[position]] == user
                   and times[order[position]] == moment):
                group.append(order[position])
                position += 1
            added = set()
            for row in group:
                own = {index[n] for n in histories[row].split() if n in index} - seen
                vector = total + (matrix[sorted(own)].sum(axis=0, dtype=np.float64) if own else 0)
                count = len(seen) + len(own)
                if count:
                    user_vecs[row] = (vector / count).astype(np.float32)
                user_lens[row] = count
                user_impressions[row] = earlier
                clicked = [t[:-2] for t in fields[row].split() if t.endswith("-1")]
                added |= own | {index[n] for n in clicked if n in index}
            earlier += len(group)
            added -= seen
            if added:
                total = total + matrix[sorted(added)].sum(axis=0, dtype=np.float64)
                seen |= added

    # every shown candidate, and each news's first sighting (as a candidate or in a history)
    shown_row, shown_news, shown_label, shown_known = [], [], [], []
    first_seen: dict = {}
    for code, (field, history, second) in enumerate(zip(fields, histories, seconds)):
        for news_id in history.split():
            if first_seen.get(news_id, second + 1) > second:
                first_seen[news_id] = second
        for token in field.split():
            news_id, label = token.rsplit("-", 1)
            if first_seen.get(news_id, second + 1) > second:
                first_seen[news_id] = second
            shown_row.append(code)
            shown_news.append(news_id)
            shown_label.append(int(label))
            shown_known.append(index.get(news_id, -1))
    shown_row, shown_label, shown_known = (np.asarray(a, np.int64) for a in
                                           (shown_row, shown_label, shown_known))
    news_codes = pd.factorize(np.asarray(shown_news, dtype=object))[0]
    pop_impressions, pop_clicks = windowed_popularity(
        news_codes, seconds[shown_row], shown_label, args.window_hours * 3600)

    # the kept candidates with a vector: every positive, npratio negatives per positive
    rng = np.random.default_rng(42)
    is_train = behaviors["src"].to_numpy()[shown_row] == 0
    kept = []
    bounds = np.flatnonzero(np.diff(shown_row)) + 1
    for start, end in zip(np.r_[0, bounds], np.r_[bounds, len(shown_row)]):
        known = np.arange(start, end)[shown_known[start:end] >= 0]
        positives = known[shown_label[known] == 1]
        negatives = known[shown_label[known] == 0]
        want = max(len(positives) * args.npratio, 1)   # as Spark's sample_candidates
        if args.npratio and is_train[start] and len(negatives) > want:   # dev keeps all
            negatives = negatives[np.sort(rng.choice(len(negatives), want, replace=False))]
        kept.append(np.concatenate([positives, negatives]))
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    row, news = shown_row[kept], shown_known[kept]
    label = shown_label[kept]

    t = seconds[row]
    seen_at = np.array([first_seen[n] for n in vectors["news_id"].to_numpy()[news]], np.int64)
    age = np.maximum(0.0, (t - seen_at) / 3600.0)
    impressions, clicks = pop_impressions[kept], pop_clicks[kept]
    ctr = (clicks + args.ctr_prior * args.prior_impressions) / (impressions + args.prior_impressions)
    user_vec = user_vecs[row]
    # user . topic: per impression against each category bucket in use, then picked per row
    used, bucket_of = np.unique(news_category[news], return_inverse=True)
    impressions_dots = user_vecs.astype(np.float64) @ topic[used].astype(np.float64).T
    topic_dot = impressions_dots[row, bucket_of]
    columns = {
        "impression_id": pa.array(behaviors["impression_id"].astype(np.int64).to_numpy()[row]),
        "user_id": pa.array(users[row]),
        "news_id": pa.array(vectors["news_id"].to_numpy()[news]),
        "label": pa.array(label.astype(np.int32)),
        "user_vec": packed_column(user_vec),
        "news_vec": packed_column(matrix[news]),
        "history_len": pa.array(user_lens[row]),
        "category": pa.array(news_category[news].astype(np.int32)),
        "subcategory": pa.array(news_subcategory[news].astype(np.int32)),
        "age_hours": pa.array(age.astype(np.float32)),
        "user_dense": vector_column(np.stack([np.log1p(user_lens[row]),
                                              np.log1p(user_impressions[row])], axis=1)),
        "news_dense": vector_column(np.stack([np.log1p(age), np.log1p(impressions),
                                              np.log1p(clicks), ctr], axis=1)),
        "pair_dense": vector_column(topic_dot[:, None]),
    }
    table = pa.table(columns)
    train_rows = int((behaviors["src"].to_numpy()[row] == 0).sum())   # the train rows come first
    # as build_features writes (no dictionary encoding: it does not pay on float vectors)
    pq.write_table(table.slice(0, train_rows), args.out, use_dictionary=False)
    if args.dev:
        pq.write_table(table.slice(train_rows), args.dev_out, use_dictionary=False)
    seconds_taken = time.perf_counter() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": table.num_rows, "train_rows": train_rows,
                      "seconds": seconds_taken, "peak_rss_mb": peak_mb}))


if __name__ == "__main__":
    main()
