"""The one definition of a user's state, used for train rows, dev rows and scoring profiles.

With `features.user_clicks: history_and_clicks` (the default), for impressions i, j of the log
and distinct news ids:

    clicked(i)    = history(i) ∪ ⋃ { history(j) ∪ clicks(j) : user(j) = user(i), time(j) < time(i) }
    profile(u, D) =              ⋃ { history(j) ∪ clicks(j) : user(j) = u,       time(j) < D }

An impression's own history counts; impressions in the same second do not see each other. The
user vector is the mean of the vectors of the clicked news that have one, `history_len` their
number. With `features.user_clicks: history` (MIND's own convention, to compare with published
numbers) an impression sees only its own history column, and a profile as of D is the history
of the user's latest impression before D; the clicked ids that scoring excludes still hold
every click before D.

`advance(prior state, impressions)` computes both the user vector of every impression and the
state after them, and is the only code that does: a full rebuild as of T is `advance(empty,
every impression before T)`, a day's run is `advance_state(state as of D, impressions of day
D)`, the same kernel without the impressions' vectors.
The two give identical rows, to the bit: a state keeps its vector sum in float64, and the
sums are always accumulated in the same order (time, then impression, then news index), one
group of same-second impressions after another.

How it is computed. One shuffle brings together each user's impressions of the span (sorted
by time, then impression) and the user's prior state; a vectorized kernel in `mapInArrow`
does the rest per Arrow batch of users, with numpy: sorting every (user, news id) occurrence
gives each id its first appearance, so the news each same-second group adds, and the news of
an impression's own history first seen in its own second (which count for it); the vector
sums are `np.add.at` over those news' rows of the broadcast vector matrix, in a fixed order,
then a running sum over each user's groups.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession, functions as F
from pyspark.sql.types import (ArrayType, DoubleType, FloatType, IntegerType, LongType,
                               StringType, StructField, StructType)

from common import columns as C
from common import schemas, storage
from common.errors import UserInputError

HISTORY_AND_CLICKS = "history_and_clicks"
HISTORY_ONLY = "history"
USER_CLICKS_MODES = (HISTORY_AND_CLICKS, HISTORY_ONLY)

EVENTS = "events"

# What the kernel returns per user: the state after the span (STATE_OUTPUT), and with it, when
# the impressions' vectors are wanted, every impression's vector (KERNEL_OUTPUT).
STATE_OUTPUT = StructType([
    StructField(C.USER_ID, StringType(), False),
    StructField(C.CLICKED_NEWS, ArrayType(StringType(), False), False),
    StructField(C.VECTOR_SUM, ArrayType(DoubleType(), False), False),
    StructField(C.HISTORY_LEN, IntegerType(), False),
    StructField(C.USER_VEC, ArrayType(FloatType(), False), False),
    StructField(C.IMPRESSIONS, LongType(), False),
])
KERNEL_OUTPUT = StructType(STATE_OUTPUT.fields + [
    StructField("ev_src", ArrayType(IntegerType(), False), False),
    StructField("ev_imp", ArrayType(LongType(), False), False),
    StructField("ev_vec", ArrayType(ArrayType(FloatType(), False), False), False),
    StructField("ev_len", ArrayType(IntegerType(), False), False),
    StructField("ev_seen", ArrayType(LongType(), False), False),
])



def check_mode(mode: str) -> str:
    if mode not in USER_CLICKS_MODES:
        raise UserInputError(f"features.user_clicks must be one of {list(USER_CLICKS_MODES)}, "
                             f"got {mode!r}")
    return mode


@dataclass
class NewsIndex:
    """The news vectors broadcast to the Python workers: (news ids, float32 matrix whose row
    i is the vector of news i). A catalogue: bounded by the news, not by the users."""
    broadcast: object
    dim: int
    key: str = ""    # names the broadcast in the workers' cache
    ids: np.ndarray | None = None       # the same, on the driver
    matrix: np.ndarray | None = None

    @classmethod
    def read(cls, spark: SparkSession, uris: list[str]) -> "NewsIndex":
        """The vectors tables at `uris` (schemas.NEWS_VECTORS, the partitions of one identity),
        read on the driver with pyarrow like the candidate pool (a catalogue, cheaper to read
        without a Spark job), sorted by news id."""
        tables = [pq.read_table(path, filesystem=fs, columns=[C.NEWS_ID, C.VECTOR])
                  for fs, path in map(storage.filesystem, uris)]
        table, uri = pa.concat_tables(tables), ", ".join(uris)
        if table.num_rows == 0:
            raise UserInputError(f"{uri}: no news vectors")
        table = table.sort_by(C.NEWS_ID)
        vectors = table.column(C.VECTOR).combine_chunks()
        widths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
        if widths.min() != widths.max():
            raise UserInputError(f"{uri}: news vectors have different widths ({widths.min()} "
                                 f"to {widths.max()})")
        matrix = (vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
                  .reshape(len(widths), int(widths[0])))
        ids = np.asarray(table.column(C.NEWS_ID).to_pylist(), dtype=object)
        return cls(broadcast=spark.sparkContext.broadcast((ids, matrix)),
                   dim=int(matrix.shape[1]), key=uuid.uuid4().hex, ids=ids, matrix=matrix)

    def release(self) -> None:
        """Free the broadcast on the driver and the executors."""
        self.broadcast.destroy()


# Bumped when a state's content changes meaning (2: impressions, news first seen): states of
# an older format no longer match their chain and are recomputed.
STATE_FORMAT = 2


def state_salt(mode: str, vectors_identity: dict) -> str:
    """What shapes a state besides the log: the chain fingerprint of every state includes it."""
    fit = vectors_identity.get("fit")
    return f"{mode}:{vectors_identity['id']}{':' + fit if fit else ''}:{STATE_FORMAT}"


def empty_state(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], schemas.USER_STATE)


# --------------------------------------------------------------------------- the kernel

def _offsets(array: pa.ListArray) -> np.ndarray:
    """0-based offsets of a list array (a null list counts as empty)."""
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64)
    return np.concatenate([[0], np.cumsum(lengths)])


def _sum_rows(matrix: np.ndarray, segment_of: np.ndarray, rows: np.ndarray,
              segments: int) -> np.ndarray:
    """Per segment, the float64 sum of `matrix[rows]`, each segment's rows added one after
    the other in the order given (np.add.at is unbuffered): a segment's sum depends on its own
    rows only, never on what else the batch holds."""
    out = np.zeros((segments, matrix.shape[1]), dtype=np.float64)
    if len(rows):
        np.add.at(out, segment_of, matrix[rows].astype(np.float64))
    return out


def mean_vectors(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float32 means (zeros where the count is 0): the one place a user vector is made."""
    out = np.zeros(sums.shape, dtype=np.float32)
    known = counts > 0
    out[known] = (sums[known] / counts[known, None]).astype(np.float32)
    return out


def _sorted_codes(ids: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(codes, uniques) of string ids, as pandas.factorize(ids, sort=True) gives them (the
    uniques sorted, so codes order like the ids), by Arrow's hash encoding: no Python string
    is made for the ids (made and hashed by pandas, they were a third of the kernel's time)."""
    encoded = pc.dictionary_encode(ids)
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)] if len(ids) else np.zeros(0, np.int64)
    return codes, encoded.dictionary.take(pa.array(order, type=pa.int64()))


def _order_by(first: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """np.lexsort((third, second, first)) (non-negative ints but `third` >= -1), as one stable
    sort of a combined int64 key when it fits."""
    if not len(first):
        return np.zeros(0, np.int64)
    spans = [int(second.max()) + 1, int(third.max()) + 2]
    if (int(first.max()) + 1) * spans[0] * spans[1] >= 2 ** 62:
        return np.lexsort((third, second, first))
    key = (first.astype(np.int64) * spans[0] + second) * spans[1] + (third + 1)
    return np.argsort(key, kind="stable")


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _segment_sums(matrix, segment, vector_row, segments):
    """Sums (and counts) of the vectors of (segment, vector row) pairs, in segment then
    vector-row order; pairs whose news has no vector (row -1) are skipped."""
    keep = vector_row >= 0
    segment, vector_row = segment[keep], vector_row[keep]
    order = np.lexsort((vector_row, segment))
    segment, vector_row = segment[order], vector_row[order]
    return (_sum_rows(matrix, segment, vector_row, segments),
            np.bincount(segment, minlength=segments).astype(np.int64))


def advance_batch(batch: pa.RecordBatch, news_index: pd.Index, matrix: np.ndarray,
                  accumulate: bool, with_impressions: bool = True) -> pa.RecordBatch:
    """The kernel on one Arrow batch of users (see the module docstring): KERNEL_OUTPUT, or
    STATE_OUTPUT without `with_impressions`.

    Input columns: user_id; PRIOR_COLUMNS (the state before the span, null for a new user);
    events: list of struct(t, src, impression_id, history, clicks) sorted by (t, src,
    impression_id), history and clicks being news ids.

    The set logic is vectorized: every id occurrence (prior ids first, then each event's
    history and clicks in event order) is sorted by (user, id, position), which gives each
    (user, id) its first occurrence; an id is new in the same-second group of that first
    occurrence, and an impression's own history id counts for the impression itself when it
    was first seen in the impression's own second."""
    dim = matrix.shape[1]
    users = batch.column(C.USER_ID)
    n_users = len(users)
    prior_sum = np.zeros((n_users, dim), dtype=np.float64)
    prior_len = np.zeros(n_users, dtype=np.int64)
    prior_impressions = batch.column("prior_impressions").fill_null(0).to_numpy().astype(np.int64)
    if accumulate:
        sums = batch.column("prior_sum")
        valid = ~np.asarray(sums.is_null().to_numpy(zero_copy_only=False))
        if valid.any():
            prior_sum[valid] = sums.drop_null().flatten().to_numpy().reshape(-1, dim)
        prior_len = batch.column("prior_len").fill_null(0).to_numpy().astype(np.int64)
    prior_clicked = batch.column("prior_clicked")

    events = batch.column(EVENTS)
    ev_offsets = _offsets(events)
    structs = events.flatten()
    fields = dict(zip([f.name for f in structs.type], structs.flatten()))  # offset-aware
    n_ev = len(structs)
    t = fields["t"].to_numpy()
    ev_user = np.repeat(np.arange(n_users), np.diff(ev_offsets))

    # same-second groups of a user's impressions
    starts_group = np.ones(n_ev, dtype=bool)
    starts_group[1:] = (ev_user[1:] != ev_user[:-1]) | (t[1:] != t[:-1])
    ev_group = np.cumsum(starts_group) - 1
    n_groups = int(ev_group[-1]) + 1 if n_ev else 0
    group_user = ev_user[starts_group]
    # impressions the user had before each event's second (same-second ones do not count)
    group_first_event = np.flatnonzero(starts_group)
    ev_seen = (prior_impressions[ev_user] + group_first_event[ev_group]
               - ev_offsets[:-1][ev_user]) if n_ev else np.zeros(0, np.int64)

    # every id occurrence: prior ids (position -1), then histories and clicks by event
    p_off, h_off, c_off = (_offsets(prior_clicked), _offsets(fields["history"]),
                           _offsets(fields["clicks"]))
    codes, uniques = _sorted_codes(pa.concat_arrays(
        [prior_clicked.flatten(), fields["history"].flatten(), fields["clicks"].flatten()]))
    h_ev = np.repeat(np.arange(n_ev), np.diff(h_off))
    c_ev = np.repeat(np.arange(n_ev), np.diff(c_off))
    n_prior, n_hist = int(p_off[-1]), len(h_ev)
    position = np.concatenate([np.full(n_prior, -1), h_ev, c_ev]).astype(np.int64)
    owner = np.concatenate([np.repeat(np.arange(n_users), np.diff(p_off)), ev_user[h_ev],
                            ev_user[c_ev]]).astype(np.int64)
    vector_row = (news_index.get_indexer(uniques.to_numpy(zero_copy_only=False))[codes]
                  if len(codes) else codes)

    order = _order_by(owner, codes, position)
    first_in_run = np.ones(len(order), dtype=bool)
    first_in_run[1:] = ((owner[order][1:] != owner[order][:-1])
                        | (codes[order][1:] != codes[order][:-1]))
    runs = order[first_in_run]                      # first occurrence of each (user, id)
    run_of = np.empty(len(order), dtype=np.int64)
    run_of[order] = np.cumsum(first_in_run) - 1
    first_position = position[runs]

    last_event = ev_offsets[1:] - 1
    hist = np.arange(n_prior, n_prior + n_hist)
    if accumulate:
        new = runs[first_position >= 0]             # ids the span adds, at their first group
        group_delta, group_delta_len = _segment_sums(
            matrix, ev_group[position[new]], vector_row[new], n_groups)
        if with_impressions:    # an impression's own history ids first seen in its own second
            seen_at = first_position[run_of[hist]]
            own = hist[(seen_at >= 0) & (t[np.maximum(seen_at, 0)] == t[position[hist]])]
        else:                   # the state alone does not need them
            own = hist[:0]
    else:
        own = hist                                  # MIND's convention: the history alone
        if not with_impressions:                    # the state: the latest impression's
            is_last = np.zeros(n_ev, dtype=bool)
            is_last[last_event] = True
            own = own[is_last[position[own]]]
    own_key = position[own] * (len(uniques) + 1) + codes[own]
    own = own[np.unique(own_key, return_index=True)[1]]     # distinct ids per impression
    extra_sum, extra_len = _segment_sums(matrix, position[own], vector_row[own], n_ev)

    before_sum = np.zeros((n_groups, dim), dtype=np.float64)
    before_len = np.zeros(n_groups, dtype=np.int64)
    after_sum, after_len = before_sum.copy(), before_len.copy()
    if accumulate and n_groups:
        # the state before each group: the prior, then each earlier group of the user in order
        first_group = np.ones(n_groups, dtype=bool)
        first_group[1:] = group_user[1:] != group_user[:-1]
        group_start = np.flatnonzero(first_group)
        rank = np.arange(n_groups) - np.repeat(group_start, np.diff(np.append(group_start, n_groups)))
        for r in range(int(rank.max()) + 1):
            at = np.flatnonzero(rank == r)
            if r == 0:
                before_sum[at], before_len[at] = prior_sum[group_user[at]], prior_len[group_user[at]]
            else:
                before_sum[at], before_len[at] = after_sum[at - 1], after_len[at - 1]
            after_sum[at] = before_sum[at] + group_delta[at]
            after_len[at] = before_len[at] + group_delta_len[at]

    if accumulate:
        last_group = ev_group[last_event]
        state_sum, state_len = after_sum[last_group], after_len[last_group]
    else:   # MIND's convention: the latest impression's own history
        state_sum, state_len = extra_sum[last_event], extra_len[last_event]
    state_vec = mean_vectors(state_sum, state_len)
    # every id of the user, sorted (runs are in user, then id order)
    clicked_offsets = np.concatenate([[0], np.cumsum(np.bincount(owner[runs], minlength=n_users))])
    clicked = uniques.take(pa.array(codes[runs], type=pa.int64())).cast(pa.string())

    def vectors(values: np.ndarray, typ) -> pa.ListArray:
        flat = pa.array(values.ravel(), type=typ)
        return _list_array(np.arange(0, values.size + 1, dim), flat)

    columns = [
        users,
        _list_array(clicked_offsets, clicked),
        vectors(state_sum, pa.float64()),
        pa.array(state_len.astype(np.int32)),
        vectors(state_vec, pa.float32()),
        pa.array(prior_impressions + np.diff(ev_offsets)),
    ]
    if with_impressions:
        ev_len = before_len[ev_group] + extra_len
        ev_vec = mean_vectors(before_sum[ev_group] + extra_sum, ev_len)
        columns += [
            _list_array(ev_offsets, fields["src"].cast(pa.int32())),
            _list_array(ev_offsets, fields[C.IMPRESSION_ID].cast(pa.int64())),
            _list_array(ev_offsets, vectors(ev_vec, pa.float32())),
            _list_array(ev_offsets, pa.array(ev_len.astype(np.int32))),
            _list_array(ev_offsets, pa.array(ev_seen.astype(np.int64))),
        ]
    return pa.RecordBatch.from_arrays(
        columns, schema=_arrow_schema(KERNEL_OUTPUT if with_impressions else STATE_OUTPUT))


# The kernel input's prior-state columns.
PRIOR_COLUMNS = ("prior_clicked", "prior_sum", "prior_len", "prior_impressions")


def carried_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """STATE_OUTPUT for users of the prior state who have no impression in the span (their
    `events` is null): their prior state, unchanged. The user vector is not read from the
    prior: it is the mean of the prior's sum, made again by mean_vectors, to the bit."""
    schema = _arrow_schema(STATE_OUTPUT)
    sums = batch.column("prior_sum")
    counts = batch.column("prior_len").to_numpy()
    dim = len(sums[0]) if len(sums) else 0
    user_vec = mean_vectors(sums.flatten().to_numpy().reshape(len(sums), dim), counts)
    columns = [batch.column(C.USER_ID), batch.column("prior_clicked"), sums,
               batch.column("prior_len"),
               _list_array(np.arange(0, user_vec.size + 1, max(dim, 1)),
                           pa.array(user_vec.ravel(), type=pa.float32())),
               batch.column("prior_impressions")]
    return pa.RecordBatch.from_arrays(
        [column.cast(field.type) for column, field in zip(columns, schema)], schema=schema)


def _arrow_schema(spark_schema: StructType) -> pa.Schema:
    return pa.schema([pa.field(f.name, _arrow_type(f.dataType), nullable=f.nullable)
                      for f in spark_schema.fields])


def _arrow_type(spark_type) -> pa.DataType:
    if isinstance(spark_type, ArrayType):
        return pa.list_(pa.field("element", _arrow_type(spark_type.elementType),
                                 nullable=spark_type.containsNull))
    return {StringType: pa.string(), DoubleType: pa.float64(), FloatType: pa.float32(),
            IntegerType: pa.int32(), LongType: pa.int64()}[type(spark_type)]


_INDEXES: dict = {}


def _kernel(news_broadcast, key: str, accumulate: bool, with_impressions: bool):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        if key not in _INDEXES:      # once per Python worker and vector set
            ids, matrix = news_broadcast.value
            _INDEXES.clear()
            _INDEXES[key] = (pd.Index(ids), matrix)
        index, matrix = _INDEXES[key]
        for batch in batches:
            active = pc.is_valid(batch.column(EVENTS))
            if pc.all(active).as_py() is not False:     # every user has events (or no rows)
                if batch.num_rows:
                    yield advance_batch(batch, index, matrix, accumulate, with_impressions)
                continue
            if pc.any(active).as_py():
                yield advance_batch(batch.filter(active), index, matrix, accumulate,
                                    with_impressions)
            yield carried_batch(batch.filter(pc.invert(active)))
    return run


# ------------------------------------------------------------------- the DataFrame side

def advance(prior: DataFrame, impressions: DataFrame, news: NewsIndex,
            mode: str) -> tuple[DataFrame, DataFrame]:
    """(impression vectors, state after): the user vector of every impression in
    `impressions` (src, impression_id, user_vec, history_len, user_impressions: the user's
    impressions in earlier seconds), and the state (schemas.USER_STATE) of every
    user of `prior` or `impressions` after them. `prior` is the state as of the start of the
    span (schemas.USER_STATE); `impressions` are behavior_log rows of the span.

    One shuffle brings each user's impressions of the span together with the user's prior
    state; the kernel does the rest. Its output is cached: both results read it."""
    computed = _per_user(prior, impressions).mapInArrow(
        _kernel(news.broadcast, news.key, _accumulates(mode), True), KERNEL_OUTPUT).cache()
    vectors = computed.select(F.explode(F.arrays_zip("ev_src", "ev_imp", "ev_vec", "ev_len",
                                                     "ev_seen")).alias("e")).select(
        F.col("e.ev_src").alias("src"), F.col("e.ev_imp").alias(C.IMPRESSION_ID),
        F.col("e.ev_vec").alias(C.USER_VEC), F.col("e.ev_len").alias(C.HISTORY_LEN),
        F.col("e.ev_seen").alias(C.USER_IMPRESSIONS))
    return vectors, _state_after(prior, computed.select(C.USER_ID), computed)


def advance_state(prior: DataFrame, impressions: DataFrame, news: NewsIndex, mode: str,
                  partitions: int) -> DataFrame:
    """The state after `impressions` alone (what a day's run keeps), by the same kernel as
    advance without the impressions' vectors, in one pass over `prior`: the prior state and
    the span's per-user events are hash-partitioned alike by user_id into `partitions`, so
    their full outer join shuffles each once; the kernel advances the users with events and
    passes the others through (carried_batch). The result keeps that partitioning (by
    user, as build_features.write_state lays out a state): write it as it is. Nothing is cached:
    the kernel runs once, when the state is written."""
    # the day's events are the smaller side: hashed per partition (no sort of the prior)
    joined = (_prior_columns(prior).repartition(partitions, C.USER_ID)
              .join(_user_events(impressions, partitions).hint("shuffle_hash"), C.USER_ID, "full"))
    computed = joined.mapInArrow(
        _kernel(news.broadcast, news.key, _accumulates(mode), False), STATE_OUTPUT)
    return schemas.conform(computed, schemas.USER_STATE)


def _accumulates(mode: str) -> bool:
    return check_mode(mode) == HISTORY_AND_CLICKS


def _per_user(prior: DataFrame, impressions: DataFrame) -> DataFrame:
    """The kernel's input: per user of `impressions`, the span's events sorted by (t, src,
    impression_id), with the user's prior state (null for a new user)."""
    return _user_events(impressions).join(_prior_columns(prior), C.USER_ID, "left")


def _user_events(impressions: DataFrame, partitions: int | None = None) -> DataFrame:
    """Per user of `impressions`: `events`, the span's impressions sorted by (t, src,
    impression_id), each with its history and its clicked news. `partitions`: hash-partitioned
    by user_id into that many partitions (only the events' columns are shuffled)."""
    clicks = F.transform(F.filter("candidates", lambda c: c[C.LABEL] == 1), lambda c: c[C.NEWS_ID])
    events = impressions.select(C.USER_ID, F.struct(
        "t", "src", C.IMPRESSION_ID, "history", clicks.alias("clicks")).alias("e"))
    if partitions:
        events = events.repartition(partitions, C.USER_ID)
    return events.groupBy(C.USER_ID).agg(F.sort_array(F.collect_list("e")).alias(EVENTS))


def _prior_columns(prior: DataFrame) -> DataFrame:
    """A state (schemas.USER_STATE) as the kernel's prior columns (PRIOR_COLUMNS)."""
    return prior.select(C.USER_ID, *[F.col(name).alias(alias) for name, alias in zip(
        (C.CLICKED_NEWS, C.VECTOR_SUM, C.HISTORY_LEN, C.IMPRESSIONS), PRIOR_COLUMNS)])


def _state_after(prior: DataFrame, users: DataFrame, computed: DataFrame) -> DataFrame:
    """The kernel's users (`users`: the users of `computed`) from `computed`, and every other
    user of `prior` unchanged."""
    unchanged = prior.join(users, C.USER_ID, "left_anti")
    return schemas.conform(computed, schemas.USER_STATE).unionByName(
        schemas.conform(unchanged, schemas.USER_STATE))
