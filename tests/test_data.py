"""The trainer's input: in-memory caching of a shard after Petastorm's first pass."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from dcn import data
from dcn import shards
from tests.builders import publish_features, train_uri_of


def numbered_groups(sizes):
    """Row groups whose rows carry their global number: user = n, news = -n, label = n % 2."""
    groups, start = [], 0
    for size in sizes:
        n = np.arange(start, start + size, dtype=np.float32)
        groups.append((n[:, None].repeat(3, 1), -n[:, None].repeat(2, 1), n % 2))
        start += size
    return groups


def as_arrays(batch):
    """(user, news, label) numpy arrays of a `(features, label)` batch."""
    features, label = batch
    return (np.asarray(features["user_vec"]), np.asarray(features["news_vec"]),
            np.asarray(label))


def test_cached_passes_streams_once_then_permutes_the_kept_rows():
    groups = numbered_groups([5, 7, 6])            # 18 rows
    consumed = []

    def source():
        for group in groups:
            consumed.append(len(group[2]))
            yield group

    stream = data._Prefetcher(data.cached_passes(source(), batch_size=4, shuffle_buffer=0,
                                                 seed=3))
    batches = [as_arrays(next(stream)) for _ in range(30)]
    assert consumed == [5, 7, 6]                    # the source is read once, however long
    assert not stream.thread.is_alive()             # later passes are pulled directly
    for user, news, label in batches:
        assert user.shape == (4, 3) and news.shape == (4, 2) and label.shape == (4,)
        np.testing.assert_array_equal(news[:, 0], -user[:, 0])   # rows stay whole
        np.testing.assert_array_equal(label, user[:, 0] % 2)
    rows = np.concatenate([b[0][:, 0] for b in batches]).astype(int)
    # first pass: the source's order (no shuffle buffer), full batches only: 16 of 18 rows
    np.testing.assert_array_equal(rows[:16], np.arange(16))
    # then passes over all 18 kept rows, each a new permutation cut into 4 full batches (16
    # rows; 2 wait for a later pass): 26 batches = 6 passes + 2 batches
    passes = [rows[16 + 16 * k:32 + 16 * k] for k in range(6)]
    for one_pass in passes:
        assert len(set(one_pass.tolist())) == 16                # no row twice in a pass
    assert set(np.concatenate(passes).tolist()) == set(range(18))
    assert len({tuple(p) for p in passes}) == 6                 # each pass its own order
    assert passes[0].tolist() != list(range(16))


def test_cached_passes_of_a_shard_smaller_than_a_batch_repeats_it():
    stream = data._Prefetcher(data.cached_passes(iter(numbered_groups([3])), batch_size=4,
                                                 shuffle_buffer=0, seed=1))
    # the 3 rows are repeated to 6 per pass (two copies of each); over 3 batches every row
    # comes, whatever order TensorFlow's permutations take in this process
    batches = [as_arrays(next(stream)) for _ in range(3)]
    assert all(len(label) == 4 for _, _, label in batches)
    users = np.concatenate([user[:, 0] for user, _, _ in batches])
    counts = np.bincount(users.astype(int), minlength=3)
    assert len(counts) == 3 and counts.min() >= 2, counts
    for user, news, _ in batches:
        np.testing.assert_array_equal(news[:, 0], -user[:, 0])


def test_cached_passes_of_an_empty_shard_is_a_clear_error():
    with pytest.raises(data.UserInputError, match="no rows"):
        next(data._Prefetcher(data.cached_passes(iter([]), batch_size=4, shuffle_buffer=0)))


@pytest.mark.parametrize("cache", [False, True])
def test_petastorm_shard_rows_with_and_without_cache(tmp_path, cache):
    """Rank 0 of 2 gets row groups 0 and 2; over three passes it sees exactly those rows,
    each as often as the others (within one), whether cached or streamed every pass."""
    work = tmp_path / "work"
    publish_features(work, [120, 90, 150], [40], dim=4)
    uri = train_uri_of(work)
    user, _, label = data.load_rows(uri, rank=0, size=2)
    expected = {row.tobytes(): lab for row, lab in zip(user, label)}
    assert len(expected) == 270
    seen = collections.Counter()
    with data.petastorm_batches(uri, 4, 4, rank=0, size=2, batch_size=30, reader_threads=1,
                                shuffle_buffer=64, seed=5, cache=cache) as batches:
        for _ in range(27):                        # 810 rows: three passes
            features, labels = next(batches)
            labels = np.asarray(labels)
            assert labels.shape == (30,)
            for row, lab in zip(np.asarray(features["user_vec"]), labels):
                assert expected[row.tobytes()] == lab
                seen[row.tobytes()] += 1
    assert set(seen) == set(expected)
    assert max(seen.values()) - min(seen.values()) <= 2


def test_shard_bytes_estimates_the_largest_shard():
    table = shards.Table(uri="x", rows=1000, row_groups=10, user_dim=8, news_dim=8)
    assert shards.shard_bytes(table, 1) == 1000 * (17 + shards.EXTRA_FLOATS_PER_ROW) * 4
    assert shards.shard_bytes(table, 3) == 400 * (17 + shards.EXTRA_FLOATS_PER_ROW) * 4     # 4 of the 10 row groups


class _Echo:
    """A petastorm worker that publishes its work item."""

    def __init__(self, worker_id, publish_func, args):
        self.publish_func = publish_func

    def process(self, value):
        self.publish_func({"value": value})


def _one_pass_pool(items: int, switch_after_check: bool):
    """A real petastorm ThreadPool and ventilator for one pass over `items` work items whose
    ventilation runs at a chosen moment instead of in its own thread. With
    `switch_after_check`, the ventilator runs to its end right after the pool's first
    `all_workers_done()` check: the thread switch that makes petastorm 0.13.1 end a pass
    early."""
    from petastorm.workers_pool.thread_pool import ThreadPool
    from petastorm.workers_pool.ventilator import ConcurrentVentilator

    class Ventilator(ConcurrentVentilator):
        def start(self):
            if not switch_after_check:
                self._ventilate()

    class Pool(ThreadPool):
        switched = False

        def all_workers_done(self):
            done = super().all_workers_done()
            if switch_after_check and not self.switched:
                self.switched = True
                self._ventilator._ventilate()
            return done

    pool = Pool(1)
    ventilator = Ventilator(pool.ventilate, [{"value": i} for i in range(items)], iterations=1)
    pool.start(_Echo, None, ventilator=ventilator)
    return pool


@pytest.mark.parametrize("switch_after_check", [False, True])
def test_one_pass_read_gets_every_row_group_whatever_the_thread_switches(switch_after_check):
    schema = type("Schema", (), {"make_namedtuple": staticmethod(lambda **kw: kw["value"])})
    pool = _one_pass_pool(4, switch_after_check)
    results = data._ArrowResults()
    got = []
    try:
        with pytest.raises(StopIteration):
            while True:
                got.append(results.read_next(pool, schema, None))
    finally:
        pool.stop()
        pool.join()
    assert got == [0, 1, 2, 3]


def test_a_stopped_pool_ends_the_pass():
    pool = _one_pass_pool(4, switch_after_check=False)
    pool.stop()
    pool.join()
    assert data._pass_finished(pool)


def test_a_pass_short_of_the_shards_rows_is_an_error():
    groups = numbered_groups([5, 7])
    assert list(data._whole_pass(iter(groups), 12, "shard 0/1 of t")) == groups
    with pytest.raises(RuntimeError, match="delivered 5 of the 12 rows of shard 0/1 of t"):
        list(data._whole_pass(iter(groups[:1]), 12, "shard 0/1 of t"))


def test_shard_rows_counts_each_shard_from_the_footers(tmp_path):
    work = tmp_path / "work"
    publish_features(work, [120, 90, 150], [40], dim=4)
    uri = train_uri_of(work)
    assert [shards.shard_rows(uri, rank, 2) for rank in (0, 1)] == [270, 90]
    assert shards.shard_rows(uri, 0, 1) == len(data.load_rows(uri)[2])


def test_a_cached_shard_stops_its_reader_after_the_first_pass(tmp_path):
    """Once the shard is kept, no Petastorm worker thread is left polling for the GIL."""
    import threading

    from petastorm.workers_pool.thread_pool import WorkerThread

    def workers():
        return {t for t in threading.enumerate() if isinstance(t, WorkerThread) and t.is_alive()}

    work = tmp_path / "work"
    publish_features(work, [120, 90, 150], [40], dim=4)
    uri = train_uri_of(work)
    before = workers()
    with data.petastorm_batches(uri, 4, 4, rank=0, size=1, batch_size=30, reader_threads=2,
                                seed=5, cache=True) as batches:
        next(batches)
        assert workers() - before                  # streaming the first pass
        for _ in range(12):                        # 360 rows: past the first pass
            next(batches)
        assert batches.direct is not None and not workers() - before
