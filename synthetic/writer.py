"""Writing a sample: the MIND files of a split with their ground truth, the same impressions as
a daily log, and the move of a finished sample into place."""
from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timedelta

import numpy as np

from synthetic.impressions import Split
from synthetic.population import News, Users
from synthetic.timeline import HISTORY_START

SAMPLE_ENTRIES = ("MINDsmall_train", "MINDsmall_dev", "ground_truth")
GROUND_TRUTH_HEADER = "impression_id\tnews_id\tclick_prob\n"


def format_time(seconds: float) -> str:
    """MIND's time format: M/D/YYYY h:mm:ss AM|PM, no leading zeros on month, day, hour."""
    moment = HISTORY_START + timedelta(seconds=int(seconds))
    hour12 = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return (f"{moment.month}/{moment.day}/{moment.year} "
            f"{hour12}:{moment.minute:02d}:{moment.second:02d} {half}")


def _write_lines(path: str, lines) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line)
            handle.write("\n")


def write_split(folder: str, truth_path: str, split: Split, users: Users, news: News,
                history_offsets: np.ndarray, history_news: np.ndarray,
                news_lines: list[str]) -> set:
    """Write behaviors.tsv, news.tsv (the news the split refers to) and the ground truth.
    Returns the set of news indices written."""
    os.makedirs(folder)
    ids = news.ids
    tokens = np.where(split.label == 1, (ids + "-1")[split.candidates],
                      (ids + "-0")[split.candidates]).tolist()
    history_text = {}
    for u in np.unique(split.user).tolist():
        history_text[u] = " ".join(ids[history_news[history_offsets[u]:history_offsets[u + 1]]])
    candidates = split.candidates.tolist()
    offsets = split.offsets.tolist()
    owners = split.user.tolist()

    def behaviors():
        for i, user in enumerate(owners):
            start, end = offsets[i], offsets[i + 1]
            impressions = " ".join(tokens[start:end])
            yield (f"{i + 1}\t{users.ids[user]}\t{format_time(split.time[i])}\t"
                   f"{history_text[user]}\t{impressions}")

    _write_lines(os.path.join(folder, "behaviors.tsv"), behaviors())

    news_ids = ids.tolist()
    probabilities = split.probability.tolist()
    with open(truth_path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(GROUND_TRUTH_HEADER)
        for i in range(len(owners)):
            start, end = offsets[i], offsets[i + 1]
            handle.write("".join(f"{i + 1}\t{news_ids[n]}\t{p:.6f}\n" for n, p in
                                 zip(candidates[start:end], probabilities[start:end])))

    referenced = set(candidates)
    for u in history_text:
        referenced.update(history_news[history_offsets[u]:history_offsets[u + 1]].tolist())
    _write_lines(os.path.join(folder, "news.tsv"), (news_lines[n] for n in sorted(referenced)))
    return referenced


def write_daily_log(mind_dir: str, log_dir: str) -> dict:
    """Rewrite a sample's two MIND folders as a log partitioned by day, the production layout:
    `log_dir/date=YYYY-MM-DD/behaviors.tsv` and a catalogue that grows by day: the news some
    history holds (clicked before the log) in `log_dir/news.tsv`, every other news in
    `log_dir/date=D/news.tsv` of the first day D that shows it. Dev impression ids are moved
    past the train ones (MIND numbers each split from 1; a log's ids are unique). Written to a
    temporary folder and renamed into place."""
    parent, name = os.path.split(os.path.abspath(log_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        by_day: dict[str, list[str]] = {}
        offset = 0
        in_history: set[str] = set()
        first_shown: dict[str, str] = {}
        for folder in ("MINDsmall_train", "MINDsmall_dev"):
            largest = 0
            with open(os.path.join(mind_dir, folder, "behaviors.tsv"), encoding="utf-8") as handle:
                for line in handle:
                    fields = line.rstrip("\n").split("\t")
                    largest = max(largest, int(fields[0]))
                    fields[0] = str(int(fields[0]) + offset)
                    day = datetime.strptime(fields[2], "%m/%d/%Y %I:%M:%S %p").date().isoformat()
                    by_day.setdefault(day, []).append("\t".join(fields))
                    in_history.update(fields[3].split())
                    for token in fields[4].split():
                        news_id = token.rsplit("-", 1)[0]
                        first_shown[news_id] = min(first_shown.get(news_id, day), day)
            offset += largest
        for day, lines in by_day.items():
            os.makedirs(os.path.join(staging, f"date={day}"))
            _write_lines(os.path.join(staging, f"date={day}", "behaviors.tsv"), lines)
        news: dict[str, str] = {}
        for folder in ("MINDsmall_train", "MINDsmall_dev"):
            with open(os.path.join(mind_dir, folder, "news.tsv"), encoding="utf-8") as handle:
                for line in handle:
                    news.setdefault(line.split("\t", 1)[0], line.rstrip("\n"))
        catalogue: dict[str, list[str]] = {}
        for news_id, line in news.items():
            day = None if news_id in in_history else first_shown.get(news_id)
            catalogue.setdefault(f"date={day}" if day else "", []).append(line)
        for folder, lines in catalogue.items():
            _write_lines(os.path.join(staging, folder, "news.tsv"), lines)
        if os.path.exists(log_dir):
            shutil.rmtree(log_dir)
        os.rename(staging, log_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"log": log_dir, "days": sorted(by_day), "impressions": sum(map(len, by_day.values()))}


def publish(staging: str, out_dir: str) -> None:
    """Move the finished sample from `staging` into `out_dir`.

    A missing out_dir is created by one rename. Otherwise the sample folders already there
    (MINDsmall_train, MINDsmall_dev, ground_truth) are moved aside first, then the new ones
    moved in: an interruption leaves some folders missing, never a mix of old and new that
    looks complete. Other files in out_dir are left alone."""
    if not os.path.exists(out_dir):
        os.rename(staging, out_dir)
        return
    parent, name = os.path.split(os.path.abspath(out_dir))
    trash = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
    for entry in SAMPLE_ENTRIES:
        if os.path.lexists(os.path.join(out_dir, entry)):
            os.rename(os.path.join(out_dir, entry), os.path.join(trash, entry))
    for entry in SAMPLE_ENTRIES:
        os.rename(os.path.join(staging, entry), os.path.join(out_dir, entry))
    shutil.rmtree(trash)
    os.rmdir(staging)
