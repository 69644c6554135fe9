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
every impression before T)`, a day's run is `advance(state as of D, impressions of day D)`.
The two give identical rows, to the bit: a state keeps its vector sum in float64, and the
sums are always accumulated in the same order (time, then impression, then news index), one
group of same-second impressions after another.

How it is computed. The set logic is DataFrame operations: the first time each (user, news)
appears in the span (min over the histories and clicks that hold it), minus what the prior
state already holds, gives the news each same-second group adds; an impression also sees the
news of its own history first seen in its own second ("extra"). The vector arithmetic is a
vectorized numpy kernel in `mapInArrow` over one row per user (their prior sum and the time-
ordered list of their impressions with the indices of those news): per-group sums by
`np.add.at`, then a running sum over each user's groups. The news vectors reach the kernel
as a broadcast matrix (a catalogue, bounded by the news, not by users).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, functions as F
from pyspark.sql.types import (ArrayType, DoubleType, FloatType, IntegerType, LongType,
                               StringType, StructField, StructType)

from common import columns as C
from common import schemas
from common.cli import UserInputError

HISTORY_AND_CLICKS = "history_and_clicks"
HISTORY_ONLY = "history"
USER_CLICKS_MODES = (HISTORY_AND_CLICKS, HISTORY_ONLY)

IDX = "idx"
EVENTS = "events"
IMPRESSION_KEY = ["src", C.IMPRESSION_ID]

# What the kernel returns per user: the state's vector part and every impression's vector.
KERNEL_OUTPUT = StructType([
    StructField(C.USER_ID, StringType(), False),
    StructField(C.VECTOR_SUM, ArrayType(DoubleType(), False), False),
    StructField(C.HISTORY_LEN, IntegerType(), False),
    StructField(C.USER_VEC, ArrayType(FloatType(), False), False),
    StructField("ev_src", ArrayType(IntegerType(), False), False),
    StructField("ev_imp", ArrayType(LongType(), False), False),
    StructField("ev_vec", ArrayType(ArrayType(FloatType(), False), False), False),
    StructField("ev_len", ArrayType(IntegerType(), False), False),
])

# The user vector of each impression: what feature rows join on.
IMPRESSION_VECTORS = ["src", C.IMPRESSION_ID, C.USER_VEC, C.HISTORY_LEN]


def check_mode(mode: str) -> str:
    if mode not in USER_CLICKS_MODES:
        raise UserInputError(f"features.user_clicks must be one of {list(USER_CLICKS_MODES)}, "
                             f"got {mode!r}")
    return mode


@dataclass
class NewsIndex:
    """The news vectors as a matrix (row = index) broadcast to the Python workers, and the
    (news_id, idx) table the DataFrame side joins on."""
    ids: DataFrame
    matrix: object   # a Spark broadcast of a float32 [news, dim] array
    dim: int

    @classmethod
    def build(cls, spark: SparkSession, vectors: DataFrame) -> "NewsIndex":
        table = vectors.select(C.NEWS_ID, C.VECTOR).orderBy(C.NEWS_ID).toPandas()
        if table.empty:
            raise UserInputError("no news vectors")
        matrix = np.stack(table[C.VECTOR].to_numpy()).astype(np.float32)
        ids = table[[C.NEWS_ID]].assign(**{IDX: np.arange(len(table), dtype=np.int32)})
        id_frame = spark.createDataFrame(ids, schema=f"{C.NEWS_ID} string, {IDX} int")
        return cls(ids=id_frame, matrix=spark.sparkContext.broadcast(matrix),
                   dim=int(matrix.shape[1]))

    def release(self) -> None:
        """Free the broadcast matrix on the driver and the executors."""
        self.matrix.destroy()


def state_salt(mode: str, vectors_identity: dict) -> str:
    """What shapes a state besides the log: the chain fingerprint of every state includes it."""
    return f"{mode}:{vectors_identity['id']}"


def empty_state(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], schemas.USER_STATE)


# --------------------------------------------------------------------------- the kernel

def _offsets(array: pa.ListArray) -> np.ndarray:
    offsets = array.offsets.to_numpy()
    return offsets - offsets[0]


def _sum_rows(matrix: np.ndarray, segment_of: np.ndarray, rows: np.ndarray,
              segments: int) -> np.ndarray:
    """Per segment, the float64 sum of `matrix[rows]` in the order given (np.add.at adds
    one element after the other, so a segment's sum depends on its own rows only)."""
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


def _list_array(offsets: np.ndarray, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def advance_batch(batch: pa.RecordBatch, matrix: np.ndarray, accumulate: bool) -> pa.RecordBatch:
    """The kernel on one Arrow batch of users (see the module docstring).

    Input columns: user_id; prior_sum (list<double>, null for a new user) and prior_len;
    events: list of struct(t, src, impression_id, new_idx, extra_idx) sorted by (t, src, id),
    where new_idx are the news a user's same-second group adds to the state (attributed to the
    group's first impression) and extra_idx the news of the impression's own history first
    seen in that second."""
    dim = matrix.shape[1]
    users = batch.column(C.USER_ID)
    n_users = len(users)
    prior_sum = np.zeros((n_users, dim), dtype=np.float64)
    prior_len = np.zeros(n_users, dtype=np.int64)
    if accumulate:
        sums = batch.column("prior_sum")
        valid = ~np.asarray(sums.is_null().to_numpy(zero_copy_only=False))
        if valid.any():
            prior_sum[valid] = sums.drop_null().flatten().to_numpy().reshape(-1, dim)
        prior_len = batch.column("prior_len").fill_null(0).to_numpy().astype(np.int64)

    events = batch.column(EVENTS)
    ev_offsets = _offsets(events)
    structs = events.flatten()
    fields = dict(zip([f.name for f in structs.type], structs.flatten()))  # offset-aware
    n_ev = len(structs)
    t = fields["t"].to_numpy()
    ev_user = np.repeat(np.arange(n_users), np.diff(ev_offsets))

    # groups: a user's impressions in the same second
    starts_group = np.ones(n_ev, dtype=bool)
    starts_group[1:] = (ev_user[1:] != ev_user[:-1]) | (t[1:] != t[:-1])
    ev_group = np.cumsum(starts_group) - 1
    n_groups = int(ev_group[-1]) + 1 if n_ev else 0
    group_user = ev_user[starts_group]

    new = fields["new_idx"]
    new_rows = new.flatten().to_numpy()
    new_group = np.repeat(ev_group, np.diff(_offsets(new)))
    group_delta = _sum_rows(matrix, new_group, new_rows, n_groups)
    group_delta_len = np.bincount(new_group, minlength=n_groups).astype(np.int64)

    extra = fields["extra_idx"]
    extra_rows = extra.flatten().to_numpy()
    extra_len = np.diff(_offsets(extra)).astype(np.int64)
    extra_sum = _sum_rows(matrix, np.repeat(np.arange(n_ev), extra_len), extra_rows, n_ev)

    # the state before each group: the prior, then each earlier group of the user, in order
    before_sum = np.zeros((n_groups, dim), dtype=np.float64)
    before_len = np.zeros(n_groups, dtype=np.int64)
    after_sum, after_len = before_sum.copy(), before_len.copy()
    if accumulate and n_groups:
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

    ev_sum = before_sum[ev_group] + extra_sum
    ev_len = before_len[ev_group] + extra_len
    ev_vec = mean_vectors(ev_sum, ev_len)

    last_event = ev_offsets[1:] - 1
    if accumulate:
        last_group = ev_group[last_event]
        state_sum, state_len = after_sum[last_group], after_len[last_group]
    else:   # MIND's convention: the latest impression's own history
        state_sum, state_len = extra_sum[last_event], extra_len[last_event]
    state_vec = mean_vectors(state_sum, state_len)

    def vectors(values: np.ndarray, typ) -> pa.ListArray:
        flat = pa.array(values.ravel(), type=typ)
        return _list_array(np.arange(0, values.size + 1, dim), flat)

    return pa.RecordBatch.from_arrays([
        users,
        vectors(state_sum, pa.float64()),
        pa.array(state_len.astype(np.int32)),
        vectors(state_vec, pa.float32()),
        _list_array(ev_offsets, fields["src"].cast(pa.int32())),
        _list_array(ev_offsets, fields[C.IMPRESSION_ID].cast(pa.int64())),
        _list_array(ev_offsets, vectors(ev_vec, pa.float32())),
        _list_array(ev_offsets, pa.array(ev_len.astype(np.int32))),
    ], schema=pa.schema([pa.field(f.name, _arrow_type(f.dataType), nullable=f.nullable)
                         for f in KERNEL_OUTPUT.fields]))


def _arrow_type(spark_type) -> pa.DataType:
    if isinstance(spark_type, ArrayType):
        return pa.list_(pa.field("element", _arrow_type(spark_type.elementType),
                                 nullable=spark_type.containsNull))
    return {StringType: pa.string(), DoubleType: pa.float64(), FloatType: pa.float32(),
            IntegerType: pa.int32(), LongType: pa.int64()}[type(spark_type)]


def _kernel(matrix_broadcast, accumulate: bool):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        matrix = matrix_broadcast.value
        for batch in batches:
            if batch.num_rows:
                yield advance_batch(batch, matrix, accumulate)
    return run


# ------------------------------------------------------------------- the DataFrame side

def _sorted_indices(pairs: DataFrame, keys: list[str], news: NewsIndex, name: str) -> DataFrame:
    """keys + `name`: the sorted vector indices of each key's news (news without one dropped)."""
    return (pairs.join(F.broadcast(news.ids), C.NEWS_ID, "inner").groupBy(*keys)
            .agg(F.array_sort(F.collect_list(IDX)).alias(name)))


def advance(prior: DataFrame, impressions: DataFrame, news: NewsIndex, mode: str,
            partitions: int) -> tuple[DataFrame, DataFrame]:
    """(impression vectors, state after): the user vector of every impression in
    `impressions` (columns IMPRESSION_VECTORS), and the state (schemas.USER_STATE) of every
    user of `prior` or `impressions` after them. `prior` is the state as of the start of the
    span (schemas.USER_STATE); `impressions` are behavior_log rows of the span."""
    accumulate = check_mode(mode) == HISTORY_AND_CLICKS
    imp = impressions.select(C.USER_ID, "t", "src", C.IMPRESSION_ID, "history", "history_key",
                             "candidates")
    active = imp.select(C.USER_ID).distinct()
    # the first (t, src, id) at which each distinct history of a user appears
    history_first = (imp.groupBy(C.USER_ID, "history_key")
                     .agg(F.min(F.struct("t", "src", C.IMPRESSION_ID)).alias("first"),
                          F.first("history").alias("history")))
    history_ids = history_first.select(C.USER_ID, "history_key", "first",
                                       F.explode("history").alias(C.NEWS_ID))
    clicks = imp.select(C.USER_ID, F.struct("t", "src", C.IMPRESSION_ID).alias("first"),
                        F.explode("candidates").alias("c")).where(F.col("c")[C.LABEL] == 1) \
        .select(C.USER_ID, "first", F.col("c")[C.NEWS_ID].alias(C.NEWS_ID))
    span_ids = (history_ids.select(C.USER_ID, C.NEWS_ID, "first").unionByName(clicks)
                .groupBy(C.USER_ID, C.NEWS_ID).agg(F.min("first").alias("first")))
    prior_active = prior.join(active, C.USER_ID, "left_semi")
    prior_ids = prior_active.select(C.USER_ID, F.explode(C.CLICKED_NEWS).alias(C.NEWS_ID))

    if accumulate:
        new_ids = span_ids.join(prior_ids, [C.USER_ID, C.NEWS_ID], "left_anti").cache()
        new_idx = _sorted_indices(
            new_ids.select(C.USER_ID, "first.src", "first." + C.IMPRESSION_ID, C.NEWS_ID),
            [C.USER_ID, "src", C.IMPRESSION_ID], news, "new_idx")
        # an impression's own history news first seen in its own second
        extra_pairs = (history_ids.join(new_ids.select(C.USER_ID, C.NEWS_ID,
                                                       F.col("first.t").alias("seen_t")),
                                        [C.USER_ID, C.NEWS_ID])
                       .where(F.col("seen_t") == F.col("first.t"))
                       .select(C.USER_ID, "history_key", F.col("first.t").alias("t"), C.NEWS_ID))
        extra_idx = _sorted_indices(extra_pairs, [C.USER_ID, "history_key", "t"], news,
                                    "extra_idx")
        events = (imp.join(new_idx, [C.USER_ID, "src", C.IMPRESSION_ID], "left")
                  .join(extra_idx, [C.USER_ID, "history_key", "t"], "left"))
    else:
        distinct = imp.select("history_key", "history").dropDuplicates(["history_key"])
        extra_idx = _sorted_indices(
            distinct.select("history_key", F.explode("history").alias(C.NEWS_ID)),
            ["history_key"], news, "extra_idx")
        events = imp.join(extra_idx, "history_key", "left").withColumn(
            "new_idx", F.lit(None).cast("array<int>"))
    empty = F.array().cast("array<int>")
    events = events.select(C.USER_ID, F.struct(
        "t", "src", C.IMPRESSION_ID,
        F.coalesce("new_idx", empty).alias("new_idx"),
        F.coalesce("extra_idx", empty).alias("extra_idx")).alias("e"))
    per_user = (events.groupBy(C.USER_ID).agg(F.array_sort(F.collect_list("e")).alias(EVENTS))
                .join(prior_active.select(C.USER_ID, F.col(C.VECTOR_SUM).alias("prior_sum"),
                                          F.col(C.HISTORY_LEN).alias("prior_len")),
                      C.USER_ID, "left")
                .repartition(partitions, C.USER_ID))
    computed = per_user.mapInArrow(_kernel(news.matrix, accumulate), KERNEL_OUTPUT).cache()

    vectors = computed.select(F.explode(F.arrays_zip("ev_src", "ev_imp", "ev_vec", "ev_len"))
                              .alias("e")).select(
        F.col("e.ev_src").alias("src"), F.col("e.ev_imp").alias(C.IMPRESSION_ID),
        F.col("e.ev_vec").alias(C.USER_VEC), F.col("e.ev_len").alias(C.HISTORY_LEN))

    clicked = (prior_ids.unionByName(span_ids.select(C.USER_ID, C.NEWS_ID))
               .groupBy(C.USER_ID).agg(F.array_sort(F.collect_set(C.NEWS_ID)).alias(C.CLICKED_NEWS)))
    updated = computed.join(clicked, C.USER_ID, "left").withColumn(
        C.CLICKED_NEWS, F.coalesce(C.CLICKED_NEWS, F.array().cast("array<string>")))
    unchanged = prior.join(active, C.USER_ID, "left_anti")
    state = schemas.conform(updated, schemas.USER_STATE).unionByName(
        schemas.conform(unchanged, schemas.USER_STATE))
    return vectors, state
