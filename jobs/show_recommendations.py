"""Read a few users' top-k back from the recommendations table with Spark SQL.

    ./spark-submit.sh show_recommendations [--run-date YYYY-MM-DD] [--users N] [--config F] [--set k=v]
"""
from __future__ import annotations

import sys

from common.cli import run_main
from common.config import Config
from common.spark import get_spark, metastore_errors
from common.dates import day_or_today
from serving.table import quoted_table


def show(cfg: Config, run_date: str | None, users: int) -> None:
    table = quoted_table(cfg)
    spark = get_spark(cfg, "show_recommendations", hive=True)
    date = day_or_today(run_date, "--run-date").isoformat()
    query = (f"SELECT user_id, rank, news_id, round(score, 4) AS score, model_version, scored_at "
             f"FROM {table} WHERE run_date = '{date}' AND user_id IN "
             f"(SELECT DISTINCT user_id FROM {table} WHERE run_date = '{date}' "
             f"ORDER BY user_id LIMIT {int(users)}) ORDER BY user_id, rank")
    print(f"-- {query}")
    with metastore_errors(cfg):
        spark.sql(query).show(users * cfg["score.k"], truncate=False)
    counts = spark.sql(f"SELECT run_date, count(*) AS rows, count(DISTINCT user_id) AS users "
                       f"FROM {table} GROUP BY run_date ORDER BY run_date")
    counts.show(truncate=False)


def main(argv: list[str] | None = None) -> int:
    def arguments(parser):
        parser.add_argument("--run-date", help="partition to show (default: today, UTC)")
        parser.add_argument("--users", type=int, default=3, help="users to show (default 3)")
    return run_main("Show a few users' recommendations from the table.",
                    lambda cfg, args: show(cfg, args.run_date, args.users), argv,
                    extra_arguments=arguments)


if __name__ == "__main__":
    sys.exit(main())
