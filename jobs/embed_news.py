"""embed_news: every news of the log -> a fixed-width vector, as Parquet (news_id, vector).

The news are those of both MIND folders' news.tsv, or of a daily log's catalogue.

    ./spark-submit.sh embed_news [--config FILE] [--set key=value ...]

Titles are encoded inside Spark tasks with `mapInPandas`; the encoder is built once per
Python worker. With `embed.encoder=precomputed` the user's own vectors are read instead
(Parquet with news_id/vector, or a text `.vec` file). Output: `paths.work/news_vectors`,
published atomically (see common/storage.py).
"""
from __future__ import annotations

import sys

from pyspark.sql import SparkSession, functions as F

from common import columns as C
from common import outputs, schemas, storage
from common.cli import StageTimer, run_main
from common.config import Config
from common.spark import cached_for_job, get_spark
from features.news_vectors import (encode_titles, project_vectors, read_all_news,
                                   read_precomputed, vectors_identity)


def run(cfg: Config, spark: SparkSession | None = None) -> dict:
    spark = spark or get_spark(cfg, "embed_news")
    with cached_for_job(spark):
        return _run(cfg, spark)


def _run(cfg: Config, spark: SparkSession) -> dict:
    timer = StageTimer("embed_news")
    root = outputs.vectors_root(cfg)
    run_id = storage.start_run(root)
    out = storage.run_dir(root, run_id)
    with timer.stage("read_news"):
        news, rejected, checks = read_all_news(spark, cfg)
        news = news.cache()
        n_news = news.count()
        # The same id with another title in a later folder (the first folder's row is used).
        conflicting = news.where(F.col("titles") > 1).count()
    with timer.stage("encode") as stage:
        if cfg["embed.encoder"] == "precomputed":
            given = read_precomputed(spark, cfg)
            vectors = project_vectors(given.join(news.select(C.NEWS_ID), C.NEWS_ID), cfg)
        else:
            vectors = encode_titles(news, cfg)
        schemas.conform(vectors, schemas.NEWS_VECTORS).write.parquet(f"{out}/vectors")
        written = spark.read.parquet(f"{out}/vectors")
        n_vectors = stage.rows = written.count()
        dim = written.select(F.max(F.size(C.VECTOR))).first()[0]
    with timer.stage("categories"):
        # beside the vectors, from the same rows: the side features read them here, so no
        # later job parses news.tsv again
        schemas.conform(news, schemas.NEWS_CATEGORIES).coalesce(1).write.parquet(
            outputs.categories_uri(out))
    with timer.stage("rejected"):
        schemas.conform(rejected, schemas.REJECTED_ROWS).write.parquet(f"{out}/rejected")
    summary = {
        "run_id": run_id, "output": f"{out}/vectors", "encoder": cfg["embed.encoder"],
        "dim": dim, "identity": vectors_identity(cfg, dim), "news": n_news, "vectors": n_vectors,
        "news_without_vector": n_news - n_vectors,
        "rejected_rows": {c.file: c.rejected for c in checks},
        "duplicate_news_ids": {c.file: c.duplicates for c in checks},
        "news_ids_with_other_titles_in_later_folders": conflicting,
        "seconds": timer.seconds,
    }
    storage.publish_run(root, run_id, summary, keep_runs=cfg["paths.keep_runs"])
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_main("Encode every news title of the log into a vector.",
                    lambda cfg, _args: run(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())
