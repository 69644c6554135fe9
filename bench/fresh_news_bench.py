"""Benchmark: a day's run that embeds the day's new news against the same run with their
vectors already there, side by side.

    python -m bench.fresh_news_bench [--scale mind-small] [--encoder minilm] [--repeats 1]
                                     [--score-mode auto] [--train-steps 200]

On the synthetic sample written as a log partitioned by day (python -m synthetic --daily-log,
whose catalogue grows by day: date=D/news.tsv holds the news first shown on day D), for the
log's last day D:

- set-up, untimed, in one work folder: `daily --date D-1 --no-score` (embeds the catalogue as
  of D-1), `build_features --as-of D-1` and a short `dcn.train --as-of D-1` (`--train-steps`
  steps of one epoch: the model's quality does not change a day's cost). The folder is then
  copied, and the copy gets an `embed_news` of the whole catalogue;
- with embedding: `./spark-submit.sh daily --date D` in the first folder: it embeds the news
  first published on D-1, then computes the state and the pool as of D and scores the day;
- without: the same command in the copy, where every news already has its vector.

Both sides score with the model trained above (`score.model_version`), in `--score-mode`.
Before each timed run the state as of D (and, on the first side, the vectors partition of D)
is removed, so the run computes it. Both are timed as whole commands (JVM start included),
alternating, `--repeats` times; a figure is the ratio of the best times. Two ratios: the whole
day (the issue's target: embedding adds <= 10% to a day's time, ratio <= 1.10), and the day
with `--no-score`, a stricter one, since scoring is most of a day. The embedding stages' own
seconds are reported too.
"""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

from bench.daily_log import (ROOT, SUBMIT, argument_parser, sample, save, stage_settings,
                             timed, work_folders)

EMBED_STAGES = ("read_news", "encode", "categories", "rejected")
SIDES = ("with", "without")
DAYS = ("day", "no_score")   # the whole daily run, and the run with --no-score


def local_path(uri: str) -> Path:
    return Path(uri.replace("file://", ""))


def set_up(works: dict, settings: list[str], target: dt.date, train_steps: int) -> str:
    """Both work folders as of D-1, with a model trained as of D-1; returns its version."""
    before = (target - dt.timedelta(days=1)).isoformat()
    first = [*settings, "--set", f"paths.work={works['with']}"]
    for command in (["daily", "--date", before, "--no-score"],
                    ["build_features", "--as-of", before]):
        seconds, _ = timed([SUBMIT, *command, *first])
        print(f"set-up: {command[0]} {seconds:.0f} s", flush=True)
    seconds, trained = timed([sys.executable, "-m", "dcn.train", "--as-of", before, *first,
                              "--set", "train.epochs=1",
                              "--set", f"train.steps_per_epoch={train_steps}"])
    print(f"set-up: train {seconds:.0f} s, version {trained['version']}", flush=True)
    shutil.copytree(works["with"], works["without"])
    subprocess.run([SUBMIT, "embed_news", *settings, "--set", f"paths.work={works['without']}"],
                   cwd=ROOT, check=True, capture_output=True)
    return trained["version"]


def main() -> None:
    parser = argument_parser(__doc__.splitlines()[0], encoder=True)
    parser.add_argument("--score-mode", default="auto",
                        choices=["auto", "factorized", "plain", "cascade"])
    parser.add_argument("--train-steps", type=int, default=200)
    args = parser.parse_args()

    from common import outputs
    from common.config import load_config
    from features.news_vectors import vectors_identity

    data, days = sample(args.scale)
    target = dt.date.fromisoformat(days[-1])
    settings = stage_settings(data, args.encoder)
    works = work_folders("fresh", args.scale, SIDES)
    version = set_up(works, settings, target, args.train_steps)

    def removed_before_a_run(side: str) -> list[Path]:
        cfg = load_config(overrides=[f"paths.work={works[side]}",
                                     f"embed.encoder={args.encoder}"])
        paths = [local_path(outputs.as_of_root(cfg, outputs.day_start(target), outputs.STATE))]
        if side == "with":
            paths.append(local_path(outputs.vectors_partition_root(
                cfg, vectors_identity(cfg)["id"], target)))
        return paths

    times = {(day, side): [] for day in DAYS for side in SIDES}
    summaries = {}
    for _ in range(args.repeats):
        for day in DAYS:
            for side in SIDES:
                for path in removed_before_a_run(side):
                    shutil.rmtree(path, ignore_errors=True)
                command = [SUBMIT, "daily", "--date", target.isoformat(), *settings,
                           "--set", f"paths.work={works[side]}",
                           "--set", f"score.model_version={version}",
                           "--set", f"score.mode={args.score_mode}",
                           "--set", f"score.table=recs_fresh_{side}"]
                seconds, summary = timed(command + (["--no-score"] if day == "no_score" else []))
                assert summary["states_computed"] == [f"{target.isoformat()}T00:00:00"], summary
                times[day, side].append(seconds)
                summaries[day, side] = summary
                print(f"{day} {side} embedding: {seconds:.1f} s", flush=True)
    for day in DAYS:
        assert summaries[day, "with"]["news_embedded"] > 0, summaries[day, "with"]
        assert summaries[day, "without"]["news_embedded"] == 0, summaries[day, "without"]

    best = {key: min(values) for key, values in times.items()}
    ratio = {day: best[day, "with"] / best[day, "without"] for day in DAYS}
    stages = summaries["day", "with"]["seconds"]
    embedding = sum(stages.get(stage, 0.0) for stage in EMBED_STAGES)
    scored = summaries["day", "with"]["score"]
    report = {"scale": args.scale, "encoder": args.encoder, "score_mode": args.score_mode,
              "date": target.isoformat(), "model_version": version,
              "seconds": {f"{day} {side}": values for (day, side), values in times.items()},
              "ratio_with_over_without": ratio,
              "news_embedded": summaries["day", "with"]["news_embedded"],
              "catalogue_news": summaries["day", "with"]["news"],
              "embedding_stage_seconds": embedding, "users_scored": scored["users_written"],
              "pool": summaries["day", "with"]["candidates"],
              "stage_seconds": {f"{day} {side}": summary["seconds"]
                                for (day, side), summary in summaries.items()}}
    print(f"scale {args.scale}, encoder {args.encoder}, day {target}: "
          f"{report['news_embedded']:,} new news of {report['catalogue_news']:,}")
    for day in DAYS:
        print(f"{day}: with embedding {best[day, 'with']:.1f} s, without "
              f"{best[day, 'without']:.1f} s, ratio {ratio[day]:.3f}  (target <= 1.10)")
    save("fresh_news", report, {
        "daily with embedding / without, seconds (target <= 1.10)": ratio["day"],
        "daily --no-score with embedding / without, seconds": ratio["no_score"],
        "daily with embedding, seconds": best["day", "with"],
        "daily without, seconds": best["day", "without"],
        "daily --no-score with embedding, seconds": best["no_score", "with"],
        "daily --no-score without, seconds": best["no_score", "without"],
        "embedding stages, seconds": embedding, "news embedded": report["news_embedded"],
        "news in the catalogue": report["catalogue_news"],
        "users scored": report["users_scored"], "candidate pool": report["pool"],
        "encoder": args.encoder, "score.mode": args.score_mode})


if __name__ == "__main__":
    main()
