"""Benchmark: a week of unattended operation, the shipped schedule's commands run day after day
on a log that grows by a day before each run (issue #22's measure).

    python -m bench.seven_days [--scale tiny|few|small] [--days 6] [--encoder hashing|use]

The synthetic sample written as a log partitioned by day (`python -m synthetic --scale S --out
bench/data/seven-days-S --seed 0 --daily-log`) spans 2019-11-09 .. 2019-11-15. The simulation
reads a copy of it that grows (bench/data/seven-days-S/arrived/log): before the run for day D,
the partition date=D-1 lands in it, as the loader would deliver it, so every command sees only the
log a real deployment would have on day D (`embed_news` at the bootstrap cannot embed the
week's news ahead of time). The recommendation days are the last `--days` days up to the day
after the log's last day; the first of them, D0, is also the bootstrap's as-of. A bootstrap
needs two days of log before D0 (train and, with `features.validation_hours=12`, valid rows on
the first, dev rows on the second), so the 7-day log allows at most 6 days (2019-11-11 ..
2019-11-16); `--days 7` is refused.

- bootstrap, as of D0: `./spark-submit.sh embed_news`, `build_features --as-of D0`,
  `python -m dcn.train --as-of D0` (one process), `evaluate --as-of D0`, `promote --as-of D0`;
  if the gate refuses that first model (a small sample), the refusal is recorded and the model
  is served with `promote --version V --force`, as run-demo.sh does, so the days can be scored;
- every day D: `./spark-submit.sh daily --date D` (deploy/crontab's daily line);
- on day `--retrain-day` (default 4), after that day's run, the weekly retrain of
  deploy/crontab: `build_features`, `dcn.train`, `evaluate`, `promote`, each `--as-of D`; the
  days after it are scored by whatever the gate left served.

Every command gets the same `--set` settings (bench/daily_log.py's, plus `paths.work`,
`features.validation_hours=12` and `train.epochs`). Reported per day: `news_embedded` (the daily
summary's), the rows and users scored, the served model version, and the fresh share: the share
of the rows of the table's partition run_date=D (read with pyarrow from the folder the score
summary names) whose news_id is in date=D-1/news.tsv, i.e. news first published on day D-1 (in
the synthetic log, the news first shown on D-1 that no user's history holds). With every
promote decision: action, version, as-of, promoted or refused, and the AUC figures of the gate.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from bench.daily_log import ROOT, SUBMIT, sample, save, stage_settings, timed

BOOTSTRAP_LOG_DAYS = 2   # days of log before the bootstrap's as-of: train (+ valid), then dev


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny", choices=["tiny", "few", "small"])
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--retrain-day", type=int, default=4, help="1-based; 0: no retrain")
    parser.add_argument("--encoder", default="hashing", choices=["hashing", "minilm", "use", "e5-small"])
    parser.add_argument("--epochs", type=int, default=3)
    return parser.parse_args()


def land(log: Path, arrived: Path, day: str) -> None:
    """Day `day`'s partition of the full log arrives in the growing copy."""
    if not (arrived / f"date={day}").exists():
        shutil.copytree(log / f"date={day}", arrived / f"date={day}")


def news_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with open(path, encoding="utf-8") as handle:
        return {line.split("\t", 1)[0] for line in handle if line.strip()}


def train(as_of: str, settings: list[str]) -> None:
    cmd = [sys.executable, "-m", "dcn.train", "--as-of", as_of, *settings]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{(done.stdout + done.stderr)[-3000:]}")


def decision(summary: dict, day: str) -> dict:
    figures = summary.get("figures") or {}
    return {"day": day, "action": summary["action"], "version": summary["version"],
            "as_of": summary.get("as_of"), "promoted": summary["promoted"],
            "served": summary["served"], "candidate_auc": figures.get("candidate_auc"),
            "served_auc": figures.get("served_auc"),
            "best_baseline_auc": figures.get("best_baseline_auc"),
            "reasons": summary.get("reasons")}


def retrain(as_of: str, settings: list[str]) -> list[dict]:
    """The weekly retrain's four stages as of `as_of`; the promote decisions it took (with a
    forced one when nothing is served after a refusal, as run-demo.sh does)."""
    timed([SUBMIT, "build_features", "--as-of", as_of, *settings])
    train(as_of, settings)
    timed([SUBMIT, "evaluate", "--as-of", as_of, *settings])
    decisions = [decision(timed([SUBMIT, "promote", "--as-of", as_of, *settings])[1], as_of)]
    if not decisions[0]["promoted"] and not decisions[0]["served"]:
        forced = timed([SUBMIT, "promote", "--version", decisions[0]["version"], "--force",
                        *settings])[1]
        decisions.append(decision(forced, as_of))
    for made in decisions:
        print(f"  promote ({made['action']}) {made['version']} as of {made['as_of']}: "
              f"{'promoted' if made['promoted'] else 'refused'}; candidate AUC "
              f"{made['candidate_auc']}, served {made['served_auc']}, best baseline "
              f"{made['best_baseline_auc']}", flush=True)
    return decisions


def fresh_share(score: dict, fresh: set[str]) -> tuple[float, int]:
    import pyarrow.parquet as pq

    folder = urlparse(score["partition_location"]).path
    recommended = pq.read_table(folder, columns=["news_id"]).column("news_id").to_pylist()
    hits = sum(news_id in fresh for news_id in recommended)
    return hits / max(len(recommended), 1), len(set(recommended) & fresh)


def main() -> None:
    args = arguments()
    data, log_days = sample(args.scale, "seven-days")
    log = data / "log"
    first, last = (dt.date.fromisoformat(d) for d in (log_days[0], log_days[-1]))
    most = (last - first).days + 2 - BOOTSTRAP_LOG_DAYS
    if not 1 <= args.days <= most:
        raise SystemExit(f"--days {args.days}: the log spans {log_days[0]} .. {log_days[-1]}; "
                         f"with a bootstrap needing {BOOTSTRAP_LOG_DAYS} days of it before the "
                         f"first day, at most {most} days can be run")
    days = [(last + dt.timedelta(days=1 - n)).isoformat() for n in reversed(range(args.days))]
    arrived, work = data / "arrived" / "log", data / "work"
    for folder in (arrived, work):
        shutil.rmtree(folder, ignore_errors=True)
    arrived.mkdir(parents=True)
    shutil.copy(log / "news.tsv", arrived / "news.tsv")
    for day in log_days:
        if day < days[0]:
            land(log, arrived, day)
    settings = [*stage_settings(arrived.parent, args.encoder), "--set", f"paths.work={work}",
                "--set", "features.validation_hours=12",
                "--set", f"train.epochs={args.epochs}"]

    print(f"scale {args.scale}, log {log_days[0]} .. {log_days[-1]}, days {days[0]} .. "
          f"{days[-1]}; bootstrap as of {days[0]}", flush=True)
    timed([SUBMIT, "embed_news", *settings])
    decisions = retrain(days[0], settings)
    rows = []
    for number, day in enumerate(days, 1):
        before = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        land(log, arrived, before)
        seconds, summary = timed([SUBMIT, "daily", "--date", day, *settings])
        score = summary["score"]
        share, distinct = fresh_share(score, news_ids(log / f"date={before}" / "news.tsv"))
        rows.append({"day": day, "news_embedded": summary["news_embedded"],
                     "fresh_share": share, "fresh_news_recommended": distinct,
                     "candidates": summary["candidates"], "rows": score["rows_written"],
                     "users": score["users_written"], "model_version": score["model_version"],
                     "seconds": seconds})
        print(f"  {day}: {summary['news_embedded']} news embedded, {share:.1%} of "
              f"{score['rows_written']:,} rows fresh, model {score['model_version']}", flush=True)
        if number == args.retrain_day:
            decisions += retrain(day, settings)

    header = ("day", "news embedded", "fresh share", "fresh news", "pool", "rows", "users",
              "model served", "seconds")
    table = [header] + [(r["day"], str(r["news_embedded"]), f"{r['fresh_share']:.1%}",
                         str(r["fresh_news_recommended"]), str(r["candidates"]), f"{r['rows']:,}",
                         f"{r['users']:,}", r["model_version"], f"{r['seconds']:.0f}")
                        for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print()
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
    print("promote decisions:")
    for made in decisions:
        print(f"  {made}")
    figures = [("scale", args.scale), ("encoder", args.encoder), ("train epochs", args.epochs),
               ("days", f"{days[0]} .. {days[-1]}, retrain as of "
                        f"{days[args.retrain_day - 1] if args.retrain_day else '-'}")]
    figures += [(f"{r['day']}: news embedded, fresh share of rows, fresh news, rows, users, "
                 "model", f"{r['news_embedded']}, {r['fresh_share']:.1%}, "
                          f"{r['fresh_news_recommended']}, {r['rows']:,}, {r['users']:,}, "
                          f"{r['model_version']}") for r in rows]
    figures += [(f"promote as of {d['as_of']} ({d['action']}) {d['version']}",
                 f"{'promoted' if d['promoted'] else 'refused'}; AUC candidate "
                 f"{_auc(d['candidate_auc'])}, served {_auc(d['served_auc'])}, best baseline "
                 f"{_auc(d['best_baseline_auc'])}") for d in decisions]
    save("seven_days", {"scale": args.scale, "encoder": args.encoder, "days": rows,
                        "decisions": decisions}, figures)


def _auc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
