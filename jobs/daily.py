"""daily: one day of the scheduled pipeline. Brings the user state up to date, builds the
candidate pool as of the day, and scores the day. First it embeds the news of the catalogue as
of the day that have no vector yet (README.md, "News vectors").

    ./spark-submit.sh daily --date YYYY-MM-DD [--no-score] [--config FILE] [--set key=value ...]

`--date D` is the recommendation day: the lists written to `run_date=D` are for users reading
on day D, from everything logged before D 00:00 UTC. How states chain from day to day, and
what Airflow passes as D: README.md, "The daily run".
"""
from __future__ import annotations

import datetime as dt
import sys

from pyspark.sql import SparkSession

from common.cli import StageTimer, run_main
from common.config import Config
from common.dates import parse_day
from common.spark import cached_for_job, get_spark
from features.day_volume import check_day_volume
from features.fresh_news import embed_missing
from features.state_chain import StateChain
from jobs import score as score_job


def run(cfg: Config, date: dt.date, score: bool = True, spark: SparkSession | None = None) -> dict:
    spark = spark or get_spark(cfg, "daily", hive=score)
    timer = StageTimer("daily")
    with cached_for_job(spark):
        # the news of the catalogue as of the day that have no vector yet: every day the
        # chain computes reads only impressions before it
        embedded = embed_missing(spark, cfg, date, date, timer)
        chain = StateChain(spark, cfg, timer)
        chain.check_reaches(date)
        state = chain.ensure(date)
        pool = chain.pool(date, state)
        chain.release()
    summary = {"date": date.isoformat(), "state": state["path"], "states_computed": chain.computed,
               "users": state["summary"]["users"], "data_end": state["summary"]["data_end"],
               "pool": pool["path"], "candidates": pool["summary"]["candidates"],
               "news_embedded": embedded["embedded"], "news": embedded["news"],
               "news_without_vector": pool["summary"]["news_without_vector"],
               "news_without_vector_ids": pool["summary"]["news_without_vector_ids"]}
    if score:
        summary["volume"] = check_day_volume(cfg, date)
        with timer.stage("score"):
            summary["score"] = score_job.run(cfg, date.isoformat(), spark)
    summary["seconds"] = timer.seconds
    return summary


def main(argv: list[str] | None = None) -> int:
    def arguments(parser):
        parser.add_argument("--date", required=True,
                            help="recommendation day YYYY-MM-DD (uses the log before its 00:00 UTC)")
        parser.add_argument("--no-score", action="store_true",
                            help="only bring the state and pool up to date")

    return run_main("One day of the pipeline: user state, candidate pool and scoring as of a day.",
                    lambda cfg, args: run(cfg, parse_day(args.date, "--date"), not args.no_score), argv,
                    extra_arguments=arguments)


if __name__ == "__main__":
    sys.exit(main())
