"""Writing the feature tables as Parquet laid out for their readers: row groups sized for
Petastorm's sharding, the user state hash-partitioned by user, and the small catalogue-sized
tables in one file each. Every table's schema is in common/schemas.py."""
from __future__ import annotations

from pyspark.sql import DataFrame

from common import columns as C
from common import schemas
from common.config import Config


MIN_ROW_GROUP_BYTES = 64 * 1024



def row_group_bytes(rows: int, dim: int, cfg: Config) -> int:
    """Row-group size giving at least `features.min_row_groups` groups for `rows` rows of two
    `dim`-float vectors, capped at `features.row_group_mb`."""
    estimated = rows * (2 * dim * 4 + 64)
    wanted = estimated // max(cfg["features.min_row_groups"], 1)
    return int(max(MIN_ROW_GROUP_BYTES, min(wanted, cfg["features.row_group_mb"] * 1024 * 1024)))



def write_parquet(df: DataFrame, uri: str, block_bytes: int, dictionary: bool = False) -> None:
    """Write Parquet (one file per partition) with row groups of about `block_bytes`.

    Dictionary encoding is off by default: on float vectors it saves almost nothing and
    makes the write much slower (bench/spark_copy_floor.py measures both)."""
    (df.write.option("parquet.block.size", block_bytes)
     .option("parquet.enable.dictionary", str(dictionary).lower()).parquet(uri))



def write_state(state: DataFrame, uri: str, cfg: Config, by_user: bool = False) -> int:
    """Write a user state table, hash-partitioned by user_id into `features.files` files, and
    return its row count. `by_user`: `state` is hash-partitioned by user_id already (a day's
    state from user_state.advance_state, in its own number of partitions), and is written
    as it is, a file per partition, without another shuffle."""
    if not by_user:
        state = state.repartition(cfg["features.files"], C.USER_ID)
    write_parquet(state, uri, cfg["features.row_group_mb"] * 1024 * 1024)
    return state.sparkSession.read.schema(schemas.USER_STATE).parquet(uri).count()



def write_first_seen(seen: DataFrame, uri: str) -> None:
    schemas.conform(seen, schemas.NEWS_FIRST_SEEN).coalesce(1).write.parquet(uri)



def write_pool(pool: DataFrame, out: str) -> int:
    pool.coalesce(1).write.parquet(f"{out}/candidate_pool")
    return pool.sparkSession.read.schema(schemas.CANDIDATE_POOL).parquet(
        f"{out}/candidate_pool").count()
