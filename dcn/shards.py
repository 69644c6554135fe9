"""What the trainer reads, described from the Parquet footers alone: the current features'
train, validation and dev tables, their widths and row groups, and how they split into one
shard per rank (Petastorm gives row group i to shard i % ranks)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from common import columns as C
from common import outputs, packed_vectors, storage
from common.config import Config
from common.errors import UserInputError


TRAIN_TABLE = "train"



VALID_TABLE = "valid"



# Besides the two vectors, a row holds at most this many floats of side features (the dense
# arrays and the category buckets); shard_bytes counts them.
EXTRA_FLOATS_PER_ROW = 8



DEV_TABLE = "dev"



def input_widths(user_dim: int, news_dim: int, extra: dict | None = None) -> dict:
    """The model's input columns and their widths (0: a scalar column), the two vectors first."""
    return {C.USER_VEC: user_dim, C.NEWS_VEC: news_dim, **(extra or {})}



@dataclasses.dataclass(frozen=True)
class Table:
    """One Parquet table of feature rows: where it is, how many rows, the vector widths."""

    uri: str
    rows: int
    row_groups: int
    user_dim: int
    news_dim: int



@dataclasses.dataclass(frozen=True)
class Features:
    """The current build_features run as the trainer sees it."""

    run_id: str
    path: str
    train: Table
    dev: Table
    lineage: dict = dataclasses.field(default_factory=dict)
    # The rows held out from the end of the train split (None when there are none): the
    # trainer judges its epochs on them.
    valid: Table | None = None
    # From the build_features summary: the train split's negative sampling, the dense
    # features' standardization, and the settings the side features were built with.
    sampling: dict = dataclasses.field(default_factory=dict)
    dense_stats: dict = dataclasses.field(default_factory=dict)



def parquet_files(uri: str) -> list[str]:
    """The Parquet data files of a table folder (or the file itself), sorted, as fs paths.

    Spark's `_SUCCESS` and hidden files (`.crc`, `_metadata`) are skipped, like Petastorm does.
    """
    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise UserInputError(f"feature table {storage.to_uri(uri)} does not exist")
    if info.type == pafs.FileType.File:
        return [path]
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(f.path for f in found if f.type == pafs.FileType.File
                  and not f.base_name.startswith(("_", ".")))



def _metadata(uri: str) -> list[pq.FileMetaData]:
    fs, _ = storage.filesystem(uri)
    result = []
    for path in parquet_files(uri):
        with fs.open_input_file(path) as handle:
            result.append(pq.ParquetFile(handle).metadata)
    return result



def count_rows(uri: str) -> int:
    """Rows of a Parquet table, from the file footers (no data is read)."""
    return sum(meta.num_rows for meta in _metadata(uri))



def count_row_groups(uri: str) -> int:
    return sum(meta.num_row_groups for meta in _metadata(uri))



def vector_widths(uri: str) -> tuple[int, int]:
    """(user_vec width, news_vec width) of the first row of the table."""
    fs, _ = storage.filesystem(uri)
    for path in parquet_files(uri):
        with fs.open_input_file(path) as handle:
            file = pq.ParquetFile(handle)
            if file.metadata.num_rows == 0:
                continue
            for group in range(file.metadata.num_row_groups):
                table = file.read_row_group(group, columns=[C.USER_VEC, C.NEWS_VEC])
                if table.num_rows:
                    return (packed_vectors.width(table.column(C.USER_VEC)[0].as_py()),
                            packed_vectors.width(table.column(C.NEWS_VEC)[0].as_py()))
    raise UserInputError(f"feature table {storage.to_uri(uri)} holds no rows")



def describe_table(uri: str, rows: int | None = None) -> Table:
    metas = _metadata(uri)
    counted = sum(m.num_rows for m in metas)
    if rows is not None and rows != counted:
        raise UserInputError(f"{uri}: the build_features summary says {rows} rows but the "
                             f"Parquet files hold {counted}")
    user_dim, news_dim = vector_widths(uri)
    return Table(uri=uri, rows=counted, row_groups=sum(m.num_row_groups for m in metas),
                 user_dim=user_dim, news_dim=news_dim)



def current_features(cfg: Config, as_of: dt.datetime | None = None) -> Features:
    """The current build_features run as of `as_of` (None: the newest as-of), with row counts
    and widths.

    The widths come from the Parquet itself; the summary's `dim` must agree with them.
    """
    pointer = outputs.current_rows(cfg, as_of)
    summary = pointer.get("summary", {})
    counts = summary.get("rows", {})
    tables = {}
    for name in (TRAIN_TABLE, DEV_TABLE):
        rows = counts.get(name, {}).get("rows") if isinstance(counts.get(name), dict) else None
        tables[name] = describe_table(f"{pointer['path']}/{name}", rows)
    train, dev = tables[TRAIN_TABLE], tables[DEV_TABLE]
    if (train.user_dim, train.news_dim) != (dev.user_dim, dev.news_dim):
        raise UserInputError(f"train vectors are {train.user_dim}+{train.news_dim} wide but dev "
                             f"vectors {dev.user_dim}+{dev.news_dim} ({pointer['path']})")
    dim = summary.get("dim")
    if dim is not None and dim != train.news_dim:
        raise UserInputError(f"{pointer['path']}: the build_features summary says dim {dim} but "
                             f"news_vec is {train.news_dim} wide in the Parquet")
    lineage = {key: summary.get(key) for key in ("as_of", "data_end", "user_clicks", "news_vectors",
                                                 "side_features", "train_end")}
    valid = None
    if (counts.get(VALID_TABLE) or {}).get("rows"):
        valid = describe_table(f"{pointer['path']}/{VALID_TABLE}", counts[VALID_TABLE]["rows"])
    return Features(run_id=pointer["run_id"], path=pointer["path"], train=train, dev=dev,
                    lineage=lineage, valid=valid, sampling=summary.get("sampling") or {},
                    dense_stats=summary.get("dense_stats") or {})



def check_shardable(table: Table, shard_count: int) -> None:
    """Every shard needs a row group: fail clearly (not with NoDataAvailableError) if not."""
    if table.row_groups < shard_count:
        raise UserInputError(
            f"{table.uri} has {table.row_groups} Parquet row groups but {shard_count} ranks need "
            f"at least one each (Petastorm shards by row group): rebuild the features with "
            f"features.min_row_groups >= {shard_count} (several per rank is better), or train "
            f"with fewer ranks")



def steps_per_epoch(rows: int, batch_size: int, size: int) -> int:
    """ceil(rows / batch / ranks): the steps every rank runs per epoch (never 0)."""
    return max(1, math.ceil(rows / batch_size / size))



def shard_bytes(table: Table, size: int) -> int:
    """Bytes of the largest shard's rows once decoded (float32 vectors and label), estimated
    from the row count with row groups of about equal size (shard i holds row groups i,
    i + size, ...)."""
    groups = math.ceil(table.row_groups / max(1, size))
    rows = math.ceil(table.rows * groups / max(1, table.row_groups))
    return rows * (table.user_dim + table.news_dim + 1 + EXTRA_FLOATS_PER_ROW) * 4



def _shard_row_group_sizes(uri: str, rank: int, size: int) -> list[tuple[str, int, int]]:
    """(file, row group, rows) of one shard, chosen as Petastorm chooses them (index % size)."""
    fs, _ = storage.filesystem(uri)
    groups = []
    for path in parquet_files(uri):
        with fs.open_input_file(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
        groups.extend((path, g, metadata.row_group(g).num_rows)
                      for g in range(metadata.num_row_groups))
    return [g for i, g in enumerate(groups) if i % size == rank]



def shard_row_groups(uri: str, rank: int, size: int) -> list[tuple[str, int]]:
    """(file, row group) pairs of one shard, chosen as Petastorm chooses them (index % size)."""
    return [(path, group) for path, group, _ in _shard_row_group_sizes(uri, rank, size)]



def shard_rows(uri: str, rank: int, size: int) -> int:
    """Rows of one shard, from the Parquet footers."""
    return sum(rows for _, _, rows in _shard_row_group_sizes(uri, rank, size))
