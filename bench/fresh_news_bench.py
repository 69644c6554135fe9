"""Benchmark: a day's run that embeds the day's new news against the same run with their
vectors already there, side by side.

    python -m bench.fresh_news_bench [--scale mind-small] [--encoder minilm] [--repeats 1]

On the synthetic sample written as a log partitioned by day (python -m synthetic --daily-log,
whose catalogue grows by day: date=D/news.tsv holds the news first shown on day D), for the
log's last day D:

- with embedding: `./spark-submit.sh daily --date D --no-score`, the vectors of the catalogue
  as of D-1 present (made untimed beforehand by daily --date D-1): it embeds the news first
  published on D-1, then computes the state and the pool as of D;
- without: the same command with every news's vector already present (an untimed embed_news
  of the whole catalogue), so nothing is left to embed.

Both sides start from the same state as of D-1; before each timed run the state as of D (and,
on the first side, the vectors partition of D) is removed, so the run computes it. Both are
timed as whole commands (JVM start included), alternating, `--repeats` times; the figure is
the ratio of the best times (the issue's target: embedding adds <= 10% to a day's time,
ratio <= 1.10). Scoring is left out: it would add the same to both sides, so the ratio
measured is the stricter one. The embedding stages' own seconds are reported too.
"""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

from bench.daily_log import (ROOT, SUBMIT, arguments, sample, save, stage_settings, timed,
                             work_folders)

EMBED_STAGES = ("read_news", "encode", "categories", "rejected")


def local_path(uri: str) -> Path:
    return Path(uri.replace("file://", ""))


def main() -> None:
    args = arguments(__doc__.splitlines()[0], encoder=True)

    from common import outputs
    from common.config import load_config
    from features.news_vectors import vectors_identity

    data, days = sample(args.scale)
    target = dt.date.fromisoformat(days[-1])
    settings = stage_settings(data, args.encoder)
    works, submit = work_folders("fresh", args.scale, ("with", "without")), SUBMIT
    for side, work in works.items():
        on = [*settings, "--set", f"paths.work={work}"]
        timed([submit, "daily", "--date", (target - dt.timedelta(days=1)).isoformat(),
               "--no-score", *on])
        if side == "without":
            subprocess.run([submit, "embed_news", *on], cwd=ROOT, check=True, capture_output=True)

    def removed_before_a_run(side: str) -> list[Path]:
        cfg = load_config(overrides=[f"paths.work={works[side]}",
                                     f"embed.encoder={args.encoder}"])
        paths = [local_path(outputs.as_of_root(cfg, outputs.day_start(target), outputs.STATE))]
        if side == "with":
            paths.append(local_path(outputs.vectors_partition_root(
                cfg, vectors_identity(cfg)["id"], target)))
        return paths

    times = {"with": [], "without": []}
    summaries = {}
    for _ in range(args.repeats):
        for side in ("with", "without"):
            for path in removed_before_a_run(side):
                shutil.rmtree(path, ignore_errors=True)
            seconds, summary = timed([submit, "daily", "--date", target.isoformat(),
                                      "--no-score", *settings, "--set", f"paths.work={works[side]}"])
            assert summary["states_computed"] == [f"{target.isoformat()}T00:00:00"], summary
            times[side].append(seconds)
            summaries[side] = summary
    assert summaries["with"]["news_embedded"] > 0 and summaries["without"]["news_embedded"] == 0

    best = {side: min(values) for side, values in times.items()}
    stages = summaries["with"]["seconds"]
    embedding = sum(stages.get(stage, 0.0) for stage in EMBED_STAGES)
    report = {"scale": args.scale, "encoder": args.encoder, "date": target.isoformat(),
              "seconds": times, "ratio_with_over_without": best["with"] / best["without"],
              "news_embedded": summaries["with"]["news_embedded"],
              "catalogue_news": summaries["with"]["news"], "embedding_stage_seconds": embedding,
              "with_stage_seconds": stages,
              "without_stage_seconds": summaries["without"]["seconds"]}
    print(f"scale {args.scale}, encoder {args.encoder}, day {target}: "
          f"{report['news_embedded']:,} new news of {report['catalogue_news']:,}")
    print(f"daily with embedding: {best['with']:.1f} s, without: {best['without']:.1f} s")
    print(f"ratio with/without: {report['ratio_with_over_without']:.3f}  (target <= 1.10)")
    save("fresh_news", report, {
        "daily with embedding / without, seconds (target <= 1.10)":
            report["ratio_with_over_without"],
        "daily with embedding, seconds": best["with"], "daily without, seconds": best["without"],
        "embedding stages, seconds": embedding, "news embedded": report["news_embedded"],
        "news in the catalogue": report["catalogue_news"], "encoder": args.encoder})


if __name__ == "__main__":
    main()
