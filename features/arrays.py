"""The candidate pool and a sample of user profiles as numpy arrays, read with pyarrow (no
Spark): the scoring tasks' pool (broadcast from the driver), the cascade's landmark users
(chosen at export) and the users evaluation measures the cascade's recall on. Both are bounded: the
pool by the news shown in one window, the sample by its size, never by the number of users.
"""
from __future__ import annotations

import numpy as np

from common import columns as C
from common import outputs, storage
from common.errors import UserInputError
from features import side_features as side


def load_pool(uri: str) -> dict:
    """The candidate pool as numpy arrays sorted by news id."""
    import pyarrow.parquet as pq
    fs, path = storage.filesystem(uri)
    table = pq.read_table(path, filesystem=fs).sort_by(C.NEWS_ID)
    if table.num_rows == 0:
        raise UserInputError(f"the candidate pool {uri} is empty: nothing to recommend "
                             "(widen features.candidate_window_hours?)")
    vectors = np.stack(table.column(C.NEWS_VEC).to_numpy(zero_copy_only=False)).astype(np.float32)
    dense = np.stack(table.column(C.NEWS_DENSE).to_numpy(zero_copy_only=False)).astype(np.float32)
    return {"ids": np.asarray(table.column(C.NEWS_ID).to_pylist(), dtype=object),
            "vectors": vectors, "dense": dense,
            "category": table.column(C.CATEGORY).to_numpy().astype(np.int32),
            "subcategory": table.column(C.SUBCATEGORY).to_numpy().astype(np.int32),
            "topic": np.stack(table.column(C.TOPIC_VEC).to_numpy(zero_copy_only=False)).astype(np.float32),
            # the smoothed click rate as of the run date (side_features.NEWS_DENSE_NAMES)
            "ctr": dense[:, side.NEWS_DENSE_NAMES.index("smoothed_ctr")].astype(np.float64)}


def pool_of(state_pointer: dict) -> str:
    """The candidate pool table's folder in a pool run (outputs.current_as_of(..., POOL))."""
    return f"{state_pointer['path']}/candidate_pool"


def sample_profiles(state_uri: str, users: int, seed: int = 0) -> dict:
    """About `users` user profiles of the state at `state_uri` (its Parquet folder), read file
    by file in a seeded random order until there are enough (the state is hash-partitioned by
    user, so every file is a random sample): ids, user_vec, user_dense and clicked news."""
    import pyarrow.parquet as pq
    fs, path = storage.filesystem(state_uri)
    files = sorted(f"{path}/{name}" for name, is_dir in storage.list_dir(state_uri)
                   if not is_dir and name.endswith(".parquet") and not name.startswith(("_", ".")))
    if not files:
        raise storage.RunNotFound(f"no user state files under {state_uri}")
    rng = np.random.default_rng(seed)
    columns = [C.USER_ID, C.USER_VEC, C.HISTORY_LEN, C.IMPRESSIONS, C.CLICKED_NEWS]
    tables, rows = [], 0
    for index in rng.permutation(len(files)):
        table = pq.read_table(files[index], filesystem=fs, columns=columns)
        tables.append(table)
        rows += table.num_rows
        if rows >= users:
            break
    import pyarrow as pa
    table = pa.concat_tables(tables)
    if table.num_rows > users:
        table = table.take(np.sort(rng.choice(table.num_rows, users, replace=False)))
    history = table.column(C.HISTORY_LEN).to_numpy().astype(np.float64)
    impressions = table.column(C.IMPRESSIONS).fill_null(0).to_numpy().astype(np.float64)
    return {"ids": np.asarray(table.column(C.USER_ID).to_pylist(), dtype=object),
            "vectors": np.stack(table.column(C.USER_VEC).to_numpy(zero_copy_only=False)).astype(np.float32),
            "dense": side.user_dense_values(history, impressions),
            "history_len": history.astype(np.int64),
            "clicked": table.column(C.CLICKED_NEWS).to_pylist()}


def state_and_pool(cfg, as_of) -> tuple[str, str]:
    """The user state's Parquet folder and the candidate pool's folder as of `as_of`."""
    how = "./spark-submit.sh build_features (or daily)"
    state = outputs.current_as_of(cfg, as_of, outputs.STATE, how)
    pool = outputs.current_as_of(cfg, as_of, outputs.POOL, how)
    return f"{state['path']}/{outputs.STATE}", pool_of(pool)
