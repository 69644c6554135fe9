"""The trainer's input: feature rows (common/schemas.FEATURE_ROWS) as training batches.

Two sources of the same batches, `({"user_vec": [b, du], "news_vec": [b, dn]}, label [b])`
in float32:

* :func:`petastorm_batches`: Petastorm's `make_batch_reader` streams one rank's shard of the
  Parquet (file://, hdfs://, ...), row groups and the rows within them shuffled, endless
  (`num_epochs=None`) for training or one pass for validation; numpy batches.
* :func:`cached_passes`: in training, when a rank's shard fits `train.cache_in_memory_mb`,
  Petastorm streams the first pass and later passes permute the kept rows in memory
  (tensors, pulled by the training loop without the prefetch thread in between).
* :func:`memory_batches`: the same rows held in memory (:func:`load_rows`) as a tf.data
  pipeline of tensors, for the benchmark that measures what streaming costs.

Why the Petastorm pipeline looks the way it does (every microsecond of CPU spent on input per
row is taken from the training step on the same cores; bench/train_bench.py measures it):

* Petastorm shards by row group (row group i goes to shard i % shard_count), so a shard needs
  at least one row group: :func:`dcn.shards.check_shardable` says so in terms of the setting that
  controls it (`features.min_row_groups`) instead of petastorm's NoDataAvailableError.
* Petastorm converts list columns to numpy through pandas, one object per row, then
  `np.vstack`: :class:`_ArrowResults` reads the Arrow values buffer instead (same matrix,
  less CPU). Vectors come out 2-D and are reshaped to `[-1, dim]`.
* Row-level shuffling is free inside a row group (petastorm copies each one through `take`
  anyway); across row groups, blocks of `train.shuffle_buffer` rows are permuted with one
  numpy gather. build_features spreads rows over row groups by a hash, so each row group is
  already a random sample of the table.
* Batches are cut in numpy and prefetched by a Python thread, not by tf.data: feeding
  tf.data from a Python generator costs more per row than this numpy path, and
  `unbatch().shuffle().batch()` or `rebatch` more still. The training step takes the numpy
  arrays as they are.
* Stopping a reader while a thread waits inside it hangs the process (an endless reader
  never answers once stopped): :class:`_Prefetcher` first stops its thread, which only
  waits inside the reader while the reader is still running, and then stops the reader.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from common import columns as C
from common import packed_vectors, storage
from common.errors import UserInputError
from dcn.shards import input_widths, shard_row_groups, shard_rows

READ_COLUMNS = (C.USER_VEC, C.NEWS_VEC, C.LABEL)


# --------------------------------------------------------------------------- Parquet metadata


# --------------------------------------------------------------------------- Petastorm

def _quiet_petastorm() -> None:
    # petastorm 0.13 warns about pyarrow's legacy APIs on every reader: not actionable here.
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"petastorm(\.|$)")
        warnings.filterwarnings("ignore", category=category, module=r"pyarrow(\.|$)")


def make_reader(uri: str, rank: int, size: int, threads: int, endless: bool, shuffle: bool,
                seed: int | None = None, columns: tuple = READ_COLUMNS):
    """Petastorm batch reader over one rank's shard of a feature table."""
    _quiet_petastorm()
    from petastorm import make_batch_reader

    if shuffle and not seed:
        # petastorm polls its queues in a busy loop when rows are shuffled without a seed
        seed = int.from_bytes(os.urandom(4), "little") | 1
    reader = make_batch_reader(
        storage.to_uri(uri), schema_fields=list(columns),
        reader_pool_type="thread", workers_count=max(1, threads),
        # Each queued result is a whole row group (up to features.row_group_mb).
        results_queue_size=max(4, 4 * threads),
        # Rows within a row group: petastorm copies every row group through `take` anyway
        # (in natural order when not shuffling), so shuffling them costs nothing more.
        shuffle_row_groups=shuffle, shuffle_rows=shuffle, seed=seed,
        num_epochs=None if endless else 1,
        cur_shard=rank, shard_count=size, hdfs_driver="libhdfs")
    _use_arrow_conversion(reader)
    return reader


class _ArrowResults:
    """Petastorm's last step, Arrow row group -> numpy, without its pandas detour.

    Petastorm converts a list column through pandas (one numpy object per row, then
    np.vstack), in the consuming thread. Reading the list's
    flat values buffer and reshaping it gives the same matrix. Installed in place of the
    reader's results-queue reader (petastorm 0.13.1, the last release, is not changing).
    """

    batched_output = True

    def read_next(self, workers_pool, schema, ngram):
        from petastorm.workers_pool import EmptyResultError

        while True:
            try:
                result = workers_pool.get_results()
                break
            except EmptyResultError:
                if _pass_finished(workers_pool):
                    raise StopIteration from None
        if not isinstance(result, dict):
            result = {name: _column_to_numpy(name, result.column(name))
                      for name in result.column_names}
        return schema.make_namedtuple(**result)


def _pass_finished(pool) -> bool:
    """Whether a pool that raised EmptyResultError has really delivered every row group.

    petastorm 0.13.1's ThreadPool ends a pass when `all_workers_done()` and then
    `ventilator.completed()` hold, read in that order. If its ventilator thread ventilates
    the remaining row groups between the two reads (the GIL may switch there), the rest of
    the pass is silently dropped (a 2-rank training run lost a whole shard this way;
    bench/petastorm_pass_race.py counts how often). Read in the other order the two cannot
    disagree, because nothing is ventilated after `completed()`. A stopped pool is finished.
    """
    ventilator = getattr(pool, "_ventilator", None)
    stop_event = getattr(pool, "_stop_event", None)
    if ventilator is None or stop_event is None or not hasattr(pool, "all_workers_done"):
        return True  # not the ThreadPool this guards: trust its answer
    if stop_event.is_set():
        return True
    return ventilator.completed() and pool.all_workers_done()


def _column_to_numpy(name: str, column) -> np.ndarray:
    """A scalar column as a 1-D array; a column of equal-width vectors (packed or lists) as a
    2-D float32 array."""
    import pyarrow as pa

    array = column.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
            or pa.types.is_binary(array.type)):
        return array.to_numpy(zero_copy_only=False)
    try:   # packed vectors (common/packed_vectors.py) or array<float>
        return packed_vectors.decode(array, name)
    except ValueError as err:
        raise UserInputError(f"{err} in one row group") from None


def _use_arrow_conversion(reader) -> None:
    if hasattr(reader, "_results_queue_reader"):
        reader._results_queue_reader = _ArrowResults()


def _as_input(values, width: int) -> np.ndarray:
    """A vector column as float32 [rows, width]; a scalar one (width 0) as int32 [rows] (the
    scalar inputs are category buckets)."""
    if width:
        return np.asarray(values, dtype=np.float32).reshape(-1, width)
    return np.asarray(values, dtype=np.int32).reshape(-1)


def _row_groups(reader, widths):
    """Numpy arrays of each row group the reader yields: one per input column of `widths`
    (a dict name -> width, or the pair (user_dim, news_dim)), then the label."""
    if not isinstance(widths, dict):
        widths = input_widths(*widths)
    for group in reader:
        yield tuple(_as_input(getattr(group, name), width) for name, width in widths.items()) + (
            np.asarray(group.label, dtype=np.float32).reshape(-1),)


def _whole_pass(groups, expected_rows: int, where: str):
    """`groups` unchanged, checked at their end to hold the shard's rows as the Parquet
    footers count them: a pass that ends early would train on, or validate, part of the data
    without a word (see :func:`_pass_finished`)."""
    rows = 0
    for group in groups:
        rows += len(group[-1])
        yield group
    if rows != expected_rows:
        raise RuntimeError(f"petastorm delivered {rows} of the {expected_rows} rows of {where}")


def _stop_after(groups, reader):
    """`groups`, then the reader stopped: its idle worker threads poll their queues every
    millisecond, each time taking the GIL from the training loop."""
    yield from groups
    reader.stop()
    reader.join()


def shuffled_batches(groups, batch_size: int, shuffle_buffer: int, seed: int | None = None):
    """Row groups in, batches of `batch_size` out (the last one smaller when `groups` ends).

    With `shuffle_buffer` > 0, row groups are collected until that many rows are held and
    the rows are permuted together; the rows that do not fill a batch wait for the next
    block. Without it, batches are slices of consecutive rows.
    """
    rng = np.random.default_rng(seed)
    block_rows = max(batch_size, shuffle_buffer)
    held: list = []
    rows = 0
    for group in groups:
        held.append(group)
        rows += len(group[-1])
        if rows < block_rows:
            continue
        block = [np.concatenate(column) for column in zip(*held)] if len(held) > 1 else held[0]
        if shuffle_buffer > 0:
            order = rng.permutation(rows)
            block = [column[order] for column in block]
        full = rows - rows % batch_size
        for start in range(0, full, batch_size):
            yield tuple(column[start:start + batch_size] for column in block)
        held = [tuple(column[full:] for column in block)] if full < rows else []
        rows -= full
    if rows:
        block = [np.concatenate(column) for column in zip(*held)]
        if shuffle_buffer > 0:
            order = rng.permutation(rows)
            block = [column[order] for column in block]
        for start in range(0, rows, batch_size):
            yield tuple(column[start:start + batch_size] for column in block)


class Handover:
    """The last item of a batch stream: the rest of the stream, as an iterator of
    `(features, label)` that the consumer pulls from itself (see :class:`_Prefetcher`)."""

    def __init__(self, batches: Iterator):
        self.batches = batches


def cached_passes(groups, batch_size: int, shuffle_buffer: int, seed: int | None = None,
                  names: tuple = (C.USER_VEC, C.NEWS_VEC)):
    """Endless full batches: the first pass as :func:`shuffled_batches` makes them from
    `groups` (one pass over a shard; its last, partial batch is dropped), keeping every row;
    then one :class:`Handover` of the kept rows as tensors through :func:`memory_batches` (a
    new permutation each pass, gathered inside TensorFlow; the rows that do not fill a last
    batch wait for a later pass). Later epochs thus cost about what training from memory
    costs; gathering the batches in numpy in the prefetch thread, or passing tf.data's
    batches through it, would hold the GIL the training loop needs."""
    kept: list = []

    def keep(source):
        for group in source:
            kept.append(group)
            yield group

    for batch in shuffled_batches(keep(groups), batch_size, shuffle_buffer, seed):
        if len(batch[-1]) == batch_size:
            yield batch
    if not kept:
        raise UserInputError("the shard holds no rows")
    columns = [np.concatenate(column) for column in zip(*kept)]
    kept.clear()
    if len(columns[-1]) < batch_size:  # a tiny shard: repeat it, as an endless stream would
        copies = math.ceil(batch_size / len(columns[-1]))
        columns = [np.concatenate([column] * copies) for column in columns]
    dataset = memory_batches(dict(zip(names, columns[:-1])), columns[-1], batch_size,
                             seed=0 if seed is None else seed + 1)
    del columns
    yield Handover(iter(dataset))


class _Prefetcher:
    """Runs a batch generator in a daemon thread, `depth` batches ahead of the consumer.

    Iterating yields `({"user_vec", "news_vec"}, label)`; errors of the thread are raised in
    the consumer. A :class:`Handover` from the generator ends the thread, and the consumer
    then pulls the handed-over iterator directly. `close()` stops the thread: the thread
    checks the stop flag between batches and never blocks on a full queue for long, so it
    ends once its current read returns (the reader is still running then).
    """

    _END = object()

    def __init__(self, batches, depth: int = 4, names: tuple = (C.USER_VEC, C.NEWS_VEC)):
        self.batches = batches
        self.names = tuple(names)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.direct: Iterator | None = None
        self.thread = threading.Thread(target=self._run, name="petastorm-batches", daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self.batches:
                if isinstance(item, Handover):  # the consumer pulls the rest itself
                    self._put(item)
                    return
                if not self._put((dict(zip(self.names, item[:-1])), item[-1])):
                    return
            self._put(self._END)
        except BaseException as err:  # noqa: BLE001  handed to the consumer
            self._put(err)

    def __iter__(self):
        return self

    def __next__(self):
        if self.direct is not None:
            return next(self.direct)
        item = self.queue.get()
        if isinstance(item, Handover):
            self.direct = item.batches
            return next(self.direct)
        if item is self._END:
            self.queue.put(item)  # stay exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self, timeout: float = 120.0) -> bool:
        """True once the thread has ended (False if it stayed inside the reader too long)."""
        self.stopping.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()


@contextmanager
def petastorm_batches(uri: str, user_dim: int, news_dim: int, *, rank: int, size: int,
                      batch_size: int, reader_threads: int, shuffle_buffer: int = 0,
                      endless: bool = True, shuffle: bool = True, seed: int | None = None,
                      cache: bool = False, extra_inputs: dict | None = None) -> Iterator[Iterator]:
    """Yields an iterator of `(features, label)` batches of this rank's shard of `uri` (numpy
    arrays; tensors once a cached shard is served from memory).

    Training: `endless=True` (the caller runs a fixed number of steps, see
    :func:`steps_per_epoch`), `shuffle=True`: row groups in random order, rows shuffled within
    them and permuted in blocks of `shuffle_buffer`. Validation: `endless=False,
    shuffle=False`: one pass in row-group order, the last batch may be smaller. The reader is
    stopped when the block exits.

    `cache=True` (endless training whose shard fits in memory): Petastorm streams one pass
    over the shard and its rows are kept; every later pass is a fresh permutation of the
    kept rows (:func:`cached_passes`), so the reader's decoding is paid once instead of every epoch. Horovod's Spark
    estimator offers the same (`inmemory_cache_all`).
    """
    caching = cache and endless
    widths = input_widths(user_dim, news_dim, extra_inputs)
    names = tuple(widths)
    reader = make_reader(uri, rank, size, reader_threads, endless and not caching, shuffle, seed,
                         columns=names + (C.LABEL,))
    groups = _row_groups(reader, widths)
    if caching or not endless:
        groups = _whole_pass(groups, shard_rows(uri, rank, size), f"shard {rank}/{size} of {uri}")
    block = shuffle_buffer if shuffle else 0
    if caching:
        batches = cached_passes(_stop_after(groups, reader), batch_size, block, seed, names)
    else:
        batches = shuffled_batches(groups, batch_size, block, seed)
    prefetcher = _Prefetcher(batches, names=names)
    try:
        yield prefetcher
    finally:
        if prefetcher.close():
            reader.stop()
            reader.join()
        else:  # the thread is stuck in the reader: stopping it now would hang this process
            warnings.warn(f"petastorm reader of {uri} did not answer within the timeout; "
                          "left running")


# --------------------------------------------------------------------------- in memory


def load_rows(uri: str, rank: int = 0, size: int = 1, limit: int | None = None,
              extra_inputs: dict | None = None) -> tuple[np.ndarray, ...]:
    """(user_vec, news_vec, the `extra_inputs` columns..., label) numpy arrays of one shard,
    read with pyarrow."""
    fs, _ = storage.filesystem(uri)
    widths = {C.USER_VEC: 0, C.NEWS_VEC: 0, **(extra_inputs or {})}
    parts, total = {name: [] for name in [*widths, C.LABEL]}, 0
    for path, group in shard_row_groups(uri, rank, size):
        with fs.open_input_file(path) as handle:
            table = pq.ParquetFile(handle).read_row_group(group, columns=list(parts))
        for name, width in widths.items():
            values = _column_to_numpy(name, table.column(name))
            parts[name].append(values.astype(np.float32) if values.ndim == 2 else
                               values.astype(np.int32))
        parts[C.LABEL].append(table.column(C.LABEL).to_numpy().astype(np.float32))
        total += table.num_rows
        if limit is not None and total >= limit:
            break
    arrays = tuple(np.concatenate(a) for a in parts.values())
    return arrays if limit is None else tuple(a[:limit] for a in arrays)


def memory_batches(inputs: dict, label: np.ndarray, batch_size: int, seed: int = 0):
    """Endless batches of in-memory rows as a tf.data pipeline of tensors, reshuffled every
    pass (one gather per batch): the input that costs the training loop least. The
    benchmark compares Petastorm with it, and a cached shard's later passes use it."""
    import tensorflow as tf

    rows = len(label)
    per_pass = rows // batch_size
    if per_pass == 0:
        raise ValueError(f"{rows} rows are fewer than one batch of {batch_size}")
    tensors = {name: tf.constant(values) for name, values in inputs.items()}
    labels = tf.constant(label)

    def one_pass(_):
        order = tf.random.shuffle(tf.range(rows), seed=seed)[:per_pass * batch_size]
        return tf.data.Dataset.from_tensor_slices(tf.reshape(order, [per_pass, batch_size]))

    def gather(index):
        return {k: tf.gather(v, index) for k, v in tensors.items()}, tf.gather(labels, index)

    dataset = tf.data.Dataset.range(2**62).flat_map(one_pass).map(gather)
    return dataset.prefetch(tf.data.AUTOTUNE)
