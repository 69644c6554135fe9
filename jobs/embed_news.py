"""embed_news: every news of the log -> a fixed-width vector, as Parquet (news_id, vector).

The news are those of both MIND folders' news.tsv, or of a daily log's whole catalogue (its
root news.tsv and every day's). Only the news that have no vector of the configured identity
yet are encoded, into the partition of today (features/fresh_news.py): a first run embeds
every news; `daily` embeds each day's new news the same way.

    ./spark-submit.sh embed_news [--config FILE] [--set key=value ...]

Titles are encoded inside Spark tasks with `mapInPandas`; the encoder is built once per
Python worker. With `embed.encoder=precomputed` the user's own vectors are read instead
(Parquet with news_id/vector, or a text `.vec` file). Output: `paths.work/news_vectors/<identity
id>/embedded=<today>`, published atomically (see common/storage.py).
"""
from __future__ import annotations

import sys

from pyspark.sql import SparkSession

from common.cli import StageTimer, run_main
from common.config import Config
from common.dates import today_utc
from common.spark import cached_for_job, get_spark
from features.fresh_news import embed_missing


def run(cfg: Config, spark: SparkSession | None = None) -> dict:
    spark = spark or get_spark(cfg, "embed_news")
    timer = StageTimer("embed_news")
    with cached_for_job(spark):
        summary = embed_missing(spark, cfg, today_utc(), None, timer)
    return dict(summary, seconds=timer.seconds)


def main(argv: list[str] | None = None) -> int:
    return run_main("Encode every news title of the log into a vector.",
                    lambda cfg, _args: run(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())
