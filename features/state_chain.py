"""The chain of daily user states of one log under one configuration: the state as of a day
from the state as of the day before plus that day's impressions, each state published with
the fingerprint of the days before it so that a changed day invalidates every later state.
The rules: README.md, "The daily run"."""
from __future__ import annotations

import datetime as dt
import math

from pyspark.sql import SparkSession, functions as F

from common import columns as C
from common import outputs, schemas, storage
from common.cli import StageTimer
from common.config import Config
from common.errors import UserInputError
from features import behavior_log as log
from features import side_features as side
from features import user_state
from features.fresh_news import check_without_vector, shown_without_vector
from features.news_vectors import load_vectors
from features.pool import candidate_pool, news_table, pool_window_start, side_summary
from features.tables import write_first_seen, write_pool, write_state


DAY = dt.timedelta(days=1)



def stored_state(cfg: Config, day: dt.date) -> dict | None:
    root = outputs.as_of_root(cfg, outputs.day_start(day), outputs.STATE)
    try:
        return storage.current_run(root, "state")
    except storage.RunNotFound:
        return None



class StateChain:
    """The daily states of one log under one configuration."""

    def __init__(self, spark: SparkSession, cfg: Config, timer: StageTimer):
        self.spark, self.cfg, self.timer = spark, cfg, timer
        self.mode = user_state.check_mode(cfg["features.user_clicks"])
        self.vectors, self.dim, self.vectors_summary = load_vectors(spark, cfg)
        self.first_day = log.first_day(cfg, spark)
        self.salt = user_state.state_salt(self.mode, self.vectors_summary["identity"])
        self._news = None
        self._chains: dict[dt.date, str] = {}
        self._last_day = None   # (start, end, impressions) of the day advanced last
        self.computed: list[str] = []

    def check_reaches(self, day: dt.date) -> None:
        """Before any state is computed: refuse a day past the log's end by more than score
        allows (every missing day up to it would be computed first, for nothing)."""
        problem = log.too_far_past(self.cfg, day, log.last_day(self.cfg, self.spark))
        if problem:
            raise UserInputError(f"cannot run the day {day}: {problem}")

    def release(self) -> None:
        if self._news is not None:
            self._news.release()
            self._news = None

    @property
    def news(self) -> user_state.NewsIndex:
        if self._news is None:
            self._news = user_state.NewsIndex.read(self.spark, self.vectors_summary["vectors_uris"])
        return self._news

    def chain(self, day: dt.date) -> str:
        if day not in self._chains:
            self._chains[day] = log.chain_fingerprint(self.cfg, self.first_day, day, self.salt)
        return self._chains[day]

    def valid(self, day: dt.date) -> dict | None:
        pointer = stored_state(self.cfg, day)
        if pointer and pointer.get("summary", {}).get("chain") == self.chain(day):
            return pointer
        return None

    def ensure(self, day: dt.date) -> dict:
        """The state as of `day` 00:00, computing it (and any missing earlier day) if needed."""
        base = day
        while base > self.first_day and self.valid(base) is None:
            base -= DAY
        pointer = self.valid(base)
        if pointer is None:   # the first day or before: nothing happened before it
            pointer = self._publish(base, user_state.empty_state(self.spark), self._no_news_seen(),
                                    None, "empty")
        while base < day:
            pointer = self._advance(base, pointer)
            base += DAY
        return pointer

    def _advance(self, day: dt.date, prior_pointer: dict) -> dict:
        """State as of day+1 from the state as of `day` and the impressions of `day`."""
        with self.timer.stage("state"):
            self.spark.catalog.clearCache()   # nothing of an earlier day is read again
            self._last_day = None
            start = outputs.day_start(day)
            read = (log.read_impressions(self.spark, self.cfg, start=start, end=start + DAY)
                    if not log.is_daily(self.cfg) or day in set(log.log_days(self.cfg)) else None)
            prior = self.spark.read.schema(schemas.USER_STATE).parquet(
                f"{prior_pointer['path']}/{outputs.STATE}")
            prior_seen = self.first_seen(prior_pointer)
            previous_end = prior_pointer["summary"].get("data_end")
            if read is None:
                return self._publish(day + DAY, prior, prior_seen, previous_end, "incremental")
            behaviors = read.behaviors.cache()
            unknown = shown_without_vector(behaviors, self.vectors)
            check_without_vector(unknown, f"the impressions of {day}", self.cfg)
            state = user_state.advance_state(prior, behaviors, self.news, self.mode,
                                             self.state_partitions(prior_pointer))
            seen = side.merge_first_seen(prior_seen, behaviors)
            pointer = self._publish(day + DAY, state, seen, previous_end, "incremental",
                                    read=read, by_user=True, unknown=unknown)
            self._last_day = (start, start + DAY, behaviors)   # the pool may read it again
            return pointer

    def state_partitions(self, prior_pointer: dict) -> int:
        """Partitions of a day's state, from the size of the previous state's files:
        `features.state_partition_mb` each, at least one (each task has a fixed cost, so
        fewer, larger partitions beat many small ones on a small state)."""
        size = storage.total_size(f"{prior_pointer['path']}/{outputs.STATE}")
        per_partition = self.cfg["features.state_partition_mb"] * 1024 * 1024
        return max(1, math.ceil(size / per_partition))

    def _no_news_seen(self):
        return self.spark.createDataFrame([], schemas.NEWS_FIRST_SEEN)

    def first_seen(self, pointer: dict):
        """The news first-seen table kept with the state of `pointer`."""
        return self.spark.read.schema(schemas.NEWS_FIRST_SEEN).parquet(
            f"{pointer['path']}/{outputs.FIRST_SEEN}")

    def _publish(self, day: dt.date, state, seen, previous_end: str | None, kind: str,
                 read: log.LogRead | None = None, by_user: bool = False,
                 unknown: dict | None = None) -> dict:
        """Publish a state as of `day`, with the rejected rows of `read` (the day's log, whose
        impressions advanced the state after `previous_end`) beside it (`by_user`: `state` is
        advance_state's, already laid out by user; `unknown`: its shown news without a
        vector, shown_without_vector's counts)."""
        as_of = outputs.day_start(day)
        root = outputs.as_of_root(self.cfg, as_of, outputs.STATE)
        run_id = storage.start_run(root)
        out = storage.run_dir(root, run_id)
        users_written = write_state(state, f"{out}/{outputs.STATE}", self.cfg, by_user)
        write_first_seen(seen, f"{out}/{outputs.FIRST_SEEN}")
        impressions, users, shown, data_end = 0, 0, 0, previous_end
        if read is not None:
            # after the state: the day's impressions are cached by then
            stats = read.behaviors.agg(F.count("*").alias("n"), F.max("t").alias("last"),
                                       F.countDistinct(C.USER_ID).alias("users")).first()
            impressions, users = stats["n"], stats["users"]
            shown = read.behaviors.select(F.explode(F.col(C.CANDIDATES)[C.NEWS_ID])).distinct().count()
            if stats["last"] is not None:
                data_end = max(filter(None, [previous_end, log.from_epoch(stats["last"]).isoformat()]))
            read.write_rejected(f"{out}/rejected")
        summary = {"as_of": outputs.as_of_key(as_of), "chain": self.chain(day), "kind": kind,
                   "data_end": data_end, "users": users_written, "day_impressions": impressions,
                   "day_users": users, "day_news_shown": shown,
                   "user_clicks": self.mode, "news_vectors": self.vectors_summary["identity"],
                   "news_vectors_run": self.vectors_summary["run_id"], "dim": self.dim,
                   **(unknown or {})}
        storage.publish_run(root, run_id, summary, self.cfg["paths.keep_runs"])
        self.computed.append(outputs.as_of_key(as_of))
        return storage.current_run(root, "state")

    def pool(self, day: dt.date, state_pointer: dict) -> dict:
        """Publish the candidate pool as of `day` 00:00 (`state_pointer`: the state as of then,
        whose first-seen table gives the news' ages)."""
        with self.timer.stage("pool") as stage:
            as_of = outputs.day_start(day)
            start = pool_window_start(as_of, self.cfg)
            if self._last_day and self._last_day[0] <= start and self._last_day[1] == as_of:
                recent = self._last_day[2].where(F.col("t") >= log.epoch_seconds(start))
            else:
                recent = log.read_impressions(self.spark, self.cfg, start=start, end=as_of).behaviors
            window = as_of - dt.timedelta(hours=self.cfg["features.candidate_window_hours"])
            unknown = shown_without_vector(
                recent.where(F.col("t") >= log.epoch_seconds(window)), self.vectors)
            check_without_vector(unknown, f"the candidate window before {as_of}", self.cfg)
            root = outputs.as_of_root(self.cfg, as_of, outputs.POOL)
            run_id = storage.start_run(root)
            news, _ = news_table(self.spark, self.cfg, self.vectors,
                                                self.vectors_summary, self.news,
                                                self.first_seen(state_pointer))
            size = write_pool(
                candidate_pool(recent, news, as_of, self.cfg),
                storage.run_dir(root, run_id))
            stage.rows = size
            storage.publish_run(root, run_id, {
                "as_of": outputs.as_of_key(as_of), "candidates": size,
                "news_vectors": self.vectors_summary["identity"], "dim": self.dim,
                "side_features": side_summary(self.cfg), **unknown},
                self.cfg["paths.keep_runs"])
            return storage.current_run(root, "pool")
