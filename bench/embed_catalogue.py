"""Benchmark: the embed_news job on a whole real catalogue, per encoder, side by side in one run
(issue #23's throughput measure: does the default embed MIND-small's 51k titles in under 15
minutes on this machine?).

    python -m bench.embed_catalogue --news PATH/news.tsv [--encoders minilm,use]
        [--text title_abstract] [--work DIR]

The catalogue is read where it lies: a daily-log folder under `--work` holds only a symbolic
link to it (and one empty day). For each encoder, embed_news (features/fresh_news.embed_missing, the job's own
code, in one local Spark session with every core of this machine) embeds the whole catalogue
into a fresh work folder, with the configuration's post-processing (fitted on that catalogue).
Reported per encoder: minutes for the catalogue (the whole job and its encode stage), titles/s,
titles/s per core, and the job's time over the first encoder's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.record import record
from common.cli import StageTimer
from common.config import load_config
from common.dates import today_utc
from common.spark import get_spark
from features.fresh_news import embed_missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--news", required=True, help="a MIND news.tsv (read in place)")
    parser.add_argument("--encoders", default="minilm,use")
    parser.add_argument("--text", default=None, help="embed.text (default: the configuration's)")
    parser.add_argument("--work", default=None, help="default: a temporary folder")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="embed-catalogue-"))
    log = work / "log"
    (log / "date=2000-01-01").mkdir(parents=True, exist_ok=True)   # a log needs a day
    if not (log / "news.tsv").exists():
        (log / "news.tsv").symlink_to(Path(args.news).resolve())
    cores = os.cpu_count()
    figures, first = [("cores", cores)], None
    spark = None
    for name in args.encoders.split(","):
        out = work / f"work-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = load_config(overrides=[f"paths.log={log}", f"paths.work={out}",
                                     f"embed.encoder={name}",
                                     *([f"embed.text={args.text}"] if args.text else []),
                                     f"embed.partitions={max(2, 4 * cores)}"])
        spark = spark or get_spark(cfg, "embed_catalogue")
        timer = StageTimer("embed_catalogue")
        started = time.perf_counter()
        summary = embed_missing(spark, cfg, today_utc(), None, timer)
        seconds = time.perf_counter() - started
        encode = timer.seconds.get("encode", seconds)
        first = first or seconds
        rate = summary["news"] / seconds
        figures += [(f"{name}: news embedded", summary["vectors"]),
                    (f"{name}: minutes for the catalogue (job / encode stage)",
                     f"{seconds / 60:.1f} / {encode / 60:.1f}"),
                    (f"{name}: titles/s (job), per core", f"{rate:.0f}, {rate / cores:.0f}"),
                    (f"{name}: job time / {args.encoders.split(',')[0]}'s", seconds / first)]
        print(f"{name}: {summary['vectors']} news in {seconds / 60:.1f} min "
              f"({rate:.0f} titles/s, {rate / cores:.0f} per core)", flush=True)
    record("embed_catalogue", figures)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
