"""The impression log, in either of its two layouts, read for a span of time.

- MIND folders (`paths.train`, `paths.dev`): each holds behaviors.tsv and news.tsv, as MIND is
  distributed. Impressions keep the split of their folder.
- A log partitioned by day (`paths.log`): `ROOT/date=YYYY-MM-DD/behaviors.tsv` (MIND's
  behaviors format, every row's time on that day), which is what a production log looks like.
  Its news catalogue grows by day: `ROOT/date=D/news.tsv` holds the news first published (or
  changed) on day D, and `ROOT/news.tsv` the news from before the log; either may be absent,
  not both. A day's run reads only that day's partition.

Rows come out as `parse_behaviors` gives them plus `t` (seconds since the epoch), `src` (0 for
the train folder and for a daily log, 1 for the dev folder; with `impression_id` it identifies
an impression, since MIND numbers each split's impressions from 1), `source` (train, dev or
log) and `history_key` (the history as one string, to average each distinct history once).
"""
from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass

import pyarrow.fs as pafs
from pyspark.sql import DataFrame, SparkSession, functions as F

from common import columns as C
from common import outputs, storage
from common.errors import UserInputError
from common.config import Config
from features.mind import (BEHAVIORS_FILE, NEWS_FILE, FileCheck, ParsedFile, check_rejected_shares,
                       parse_behaviors)

DAY_PARTITION = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
FOLDER_SOURCES = (("train", 0), ("dev", 1))


def is_daily(cfg: Config) -> bool:
    return bool(cfg["paths.log"])


def folder_sources(cfg: Config) -> list[tuple[str, int]]:
    """The MIND folders that are set: (source, src). `paths.dev` may be empty (one folder,
    split by time with build_features --time-split)."""
    return [(source, src) for source, src in FOLDER_SOURCES
            if source == "train" or cfg[f"paths.{source}"]]


def news_folders(cfg: Config, before: dt.date | None = None) -> list[str]:
    """Folders holding a news.tsv, in priority order (a news id's first row wins). A daily
    log's catalogue as of `before` (None: all of it) is its root news.tsv and the news.tsv of
    the days before `before`."""
    if not is_daily(cfg):
        return [storage.to_uri(cfg[f"paths.{source}"]) for source, _ in folder_sources(cfg)]
    root = storage.to_uri(cfg["paths.log"])
    days = [f"{root}/date={day.isoformat()}" for day in log_days(cfg)
            if before is None or day < before]
    return [folder for folder in [root] + days if storage.exists(f"{folder}/{NEWS_FILE}")]


def log_days(cfg: Config) -> list[dt.date]:
    """The day partitions of a daily log, oldest first."""
    root = storage.to_uri(cfg["paths.log"])
    fs, path = storage.filesystem(root)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise UserInputError(f"paths.log {root} is not a folder")
    days = []
    for entry in fs.get_file_info(pafs.FileSelector(path)):
        match = DAY_PARTITION.match(entry.base_name)
        if entry.type == pafs.FileType.Directory and match:
            try:
                days.append(dt.date.fromisoformat(match.group(1)))
            except ValueError:
                raise UserInputError(f"{entry.path}: not a date partition date=YYYY-MM-DD") from None
    if not days:
        raise UserInputError(f"paths.log {root} has no date=YYYY-MM-DD partitions")
    if not storage.exists(f"{root}/{NEWS_FILE}") and not any(
            storage.exists(f"{root}/date={day.isoformat()}/{NEWS_FILE}") for day in days):
        raise UserInputError(f"paths.log {root} has no {NEWS_FILE}, neither at its root nor in "
                             "a date= partition (the news catalogue)")
    return sorted(days)


def _file_identity(uri: str) -> dict:
    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise UserInputError(f"{uri} does not exist")
    if info.type == pafs.FileType.Directory:
        raise UserInputError(f"{uri} is a directory: expected the file itself there")
    return {"file": uri, "size": info.size,
            "mtime_ns": info.mtime_ns if info.mtime_ns is not None else None}


def day_files(cfg: Config, day: dt.date) -> list[str]:
    """The behaviors files that can hold impressions of `day`."""
    if is_daily(cfg):
        return [f"{storage.to_uri(cfg['paths.log'])}/date={day.isoformat()}/{BEHAVIORS_FILE}"]
    return [f"{folder}/{BEHAVIORS_FILE}" for folder in news_folders(cfg)]


def day_fingerprint(cfg: Config, day: dt.date) -> str:
    """Changes when a file that holds the day's impressions changes (size or modification
    time): a day that arrives late, or is corrected, invalidates the states after it."""
    files = day_files(cfg, day)
    if is_daily(cfg) and not storage.exists(files[0]):
        return "no-partition"
    identity = json.dumps([_file_identity(f) for f in files], sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


@dataclass
class LogRead:
    """Impressions of a span, their rejected rows, and per-file line counts."""
    behaviors: DataFrame
    rejected: DataFrame
    checks: list[FileCheck]

    def write_rejected(self, uri: str) -> None:
        """Write the rejected rows (one file). When the checks counted none, the empty table
        is written without computing anything (line numbers cost a pass over the lines)."""
        rejected = self.rejected
        if not any(check.rejected for check in self.checks):
            rejected = rejected.sparkSession.createDataFrame([], rejected.schema)
        rejected.coalesce(1).write.parquet(uri)


def _with_keys(df: DataFrame, source: str, src: int) -> DataFrame:
    return (df.withColumn("source", F.lit(source)).withColumn("src", F.lit(src))
            .withColumn("t", F.col(C.TIME).cast("long"))
            .withColumn("history_key", F.array_join("history", " ")))


def read_impressions(spark: SparkSession, cfg: Config, start: dt.datetime | None = None,
                     end: dt.datetime | None = None) -> LogRead:
    """Impressions with `start <= time < end` (either bound may be open).

    A daily log reads only the partitions of the days the span touches; MIND folders are read
    whole and filtered. Each file read is checked against `mind.max_rejected_share`."""
    parts: list[tuple[ParsedFile, list[str], str, int]] = []
    if is_daily(cfg):
        root = storage.to_uri(cfg["paths.log"])
        days = [day for day in log_days(cfg)
                if (start is None or outputs.day_start(day) + dt.timedelta(days=1) > start)
                and (end is None or outputs.day_start(day) < end)]
        if days:   # every day's partition in one parse
            folders = [f"{root}/date={day.isoformat()}" for day in days]
            parts.append((parse_behaviors(spark, folders, days=[d.isoformat() for d in days]),
                          [f"{folder}/{BEHAVIORS_FILE}" for folder in folders], "log", 0))
    else:
        for source, src in folder_sources(cfg):
            folder = storage.to_uri(cfg[f"paths.{source}"])
            if not storage.exists(f"{folder}/{BEHAVIORS_FILE}"):
                raise UserInputError(f"paths.{source}: {folder}/{BEHAVIORS_FILE} does not exist")
            parts.append((parse_behaviors(spark, folder), [f"{folder}/{BEHAVIORS_FILE}"],
                          source, src))
    frames, rejected, checks = [], [], []
    for parsed, uris, source, src in parts:   # both read from the parser's one cache
        checks.extend(check_rejected_shares(parsed, uris, cfg["mind.max_rejected_share"]))
        frames.append(_with_keys(parsed.good, source, src))
        rejected.append(parsed.rejected)
    if not frames:
        raise UserInputError(f"the log {cfg['paths.log']} has no day before "
                             f"{end.isoformat() if end else 'the end'}")
    behaviors, bad_rows = frames[0], rejected[0]
    for frame, bad in zip(frames[1:], rejected[1:]):
        behaviors, bad_rows = behaviors.unionByName(frame), bad_rows.unionByName(bad)
    if start is not None:
        behaviors = behaviors.where(F.col("t") >= epoch_seconds(start))
    if end is not None:
        behaviors = behaviors.where(F.col("t") < epoch_seconds(end))
    return LogRead(behaviors, bad_rows, checks)


def epoch_seconds(moment: dt.datetime) -> int:
    """Seconds since the epoch of a naive UTC datetime (times are compared as `t`, never as
    Python datetimes, which PySpark would read in the driver's local time zone)."""
    return calendar.timegm(moment.timetuple())


def from_epoch(seconds: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(seconds))


def first_day(cfg: Config, spark: SparkSession) -> dt.date:
    """The log's first day: its first partition, or the day of the folders' first impression."""
    if is_daily(cfg):
        return log_days(cfg)[0]
    first = read_impressions(spark, cfg).behaviors.agg(F.min("t")).first()[0]
    if first is None:
        raise UserInputError("the behaviors files hold no impressions")
    return from_epoch(first).date()


def last_day(cfg: Config, spark: SparkSession) -> dt.date:
    """The log's last day: its last partition, or the day of the folders' last impression."""
    if is_daily(cfg):
        return log_days(cfg)[-1]
    last = read_impressions(spark, cfg).behaviors.agg(F.max("t")).first()[0]
    if last is None:
        raise UserInputError("the behaviors files hold no impressions")
    return from_epoch(last).date()


def too_far_past(cfg: Config, day: dt.date, last: dt.date) -> str | None:
    """Why `day` cannot be scored from a log whose last day is `last`, by score's rule
    (score.max_staleness_hours), known before any day is read: the log's data before `day`
    ends by the end of `last` at the latest. None when `day` may be within the rule."""
    one = dt.timedelta(days=1)
    limit = cfg["score.max_staleness_hours"]
    hours = (outputs.day_start(day) - outputs.day_start(min(last, day - one) + one)).total_seconds() / 3600
    if hours <= limit:
        return None
    latest = last + one + dt.timedelta(hours=limit) // one * one
    return (f"the log's last day is {last}, at least {hours:.0f} hours before {day} 00:00 "
            f"(score.max_staleness_hours is {limit}): load the days from {last + one} into the "
            f"log, or pick a date up to {latest}")


def chain_fingerprint(cfg: Config, first_day: dt.date, day: dt.date, salt: str) -> str:
    """Identity of the state as of `day` 00:00: a hash over `salt` (what else shapes the state:
    the user_clicks mode, the news vectors) and the fingerprint of every day before `day`. A
    stored state whose chain differs was computed from other inputs and is recomputed."""
    chain = hashlib.sha256(salt.encode()).hexdigest()[:16]
    current = first_day
    while current < day:
        chain = hashlib.sha256(f"{chain}:{day_fingerprint(cfg, current)}".encode()).hexdigest()[:16]
        current += dt.timedelta(days=1)
    return chain
