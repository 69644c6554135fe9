"""build_features: the log as of a moment -> the feature rows, the user state and the
candidate pool as of that moment.

    ./spark-submit.sh build_features [--as-of YYYY-MM-DD[THH:MM:SS]] [--time-split DATE]
                                     [--config FILE] [--set key=value ...]

Uses only impressions strictly before the as-of moment (default: just after the log's last
impression). What each output holds: README.md, "Stages and tables".
"""
from __future__ import annotations

import datetime as dt
import json
import sys

from pyspark.sql import SparkSession, functions as F

from common import columns as C
from common import outputs, packed_vectors as packed, schemas, storage
from common.cli import StageTimer, run_main
from common.config import Config
from common.dates import optional_day, optional_moment
from common.errors import UserInputError
from common.spark import cached_for_job, get_spark
from features import behavior_log as log
from features import side_features as side
from features import user_state
from features.news_vectors import load_vectors
from features.pool import candidate_pool, news_table, pool_window_start, side_summary
from features.rows import (DEV, DEV_IMPRESSIONS, NEWS_VEC_PACKED, TRAIN, VALID, by_impression,
                           dense_stats, feature_rows, read_as_of, reference_counts,
                           sampling_counts, with_split)
from features.tables import row_group_bytes, write_first_seen, write_parquet, write_pool, write_state


def run(cfg: Config, spark: SparkSession | None = None, as_of: dt.datetime | None = None,
        time_split: dt.date | None = None) -> dict:
    """`time_split` D (one MIND folder cut the way MIND was): train before D, dev on D; the
    features are as of D + 1 day."""
    if time_split is not None:
        if as_of is not None:
            raise UserInputError("--time-split and --as-of exclude each other: --time-split D "
                                 "builds as of D + 1 day")
        as_of = outputs.day_start(time_split + dt.timedelta(days=1))
    spark = spark or get_spark(cfg, "build_features")
    with cached_for_job(spark):
        return _run(cfg, spark, as_of, time_split is not None)


def _run(cfg: Config, spark: SparkSession, as_of: dt.datetime | None,
         time_split: bool = False) -> dict:
    mode = user_state.check_mode(cfg["features.user_clicks"])
    timer = StageTimer("build_features")
    seed, npratio = cfg["features.seed"], cfg["features.npratio"]
    run_id = storage.new_run_id()

    with timer.stage("read_inputs"):
        vectors, dim, vectors_summary = load_vectors(spark, cfg)
        vectors = vectors.cache()
        as_of, read, data_end, first_day = read_as_of(spark, cfg, as_of)
        news = user_state.NewsIndex.read(spark, vectors_summary["vectors_uris"])
        behaviors, train_end = with_split(read.behaviors, cfg, as_of, time_split)
        behaviors = behaviors.cache()
        references = side.news_references(behaviors).cache()
        seen = side.first_seen(references).cache()
        news_side, topics = news_table(spark, cfg, vectors, vectors_summary, news, seen)
        news_side = packed.with_packed(news_side, C.NEWS_VEC, NEWS_VEC_PACKED).cache()
        missing, dropped = reference_counts(spark, cfg, references, vectors)
    for kind in (outputs.STATE, outputs.ROWS, outputs.POOL):   # leased until published
        storage.begin_run(storage.runs_dir(outputs.as_of_root(cfg, as_of, kind)), run_id)
    lineage = {"as_of": outputs.as_of_key(as_of), "data_end": data_end.isoformat(),
               "user_clicks": mode, "news_vectors": vectors_summary["identity"],
               "news_vectors_run": vectors_summary["run_id"], "dim": dim,
               "side_features": side_summary(cfg)}
    with timer.stage("user_state"):
        impression_vectors, state = user_state.advance(
            user_state.empty_state(spark), behaviors, news, mode)
        impression_vectors = by_impression(side.with_topic_dots(impression_vectors, topics),
                                           cfg).cache()
        state_root = outputs.as_of_root(cfg, as_of, outputs.STATE)
        state_out = storage.run_dir(state_root, run_id)
        users = write_state(state, f"{state_out}/{outputs.STATE}", cfg)
        write_first_seen(seen, f"{state_out}/{outputs.FIRST_SEEN}")
    counts = {}
    rows_root = outputs.as_of_root(cfg, as_of, outputs.ROWS)
    out = storage.run_dir(rows_root, run_id)
    with timer.stage("popularity"):
        popularity = side.candidate_popularity(
            behaviors, cfg["features.popularity_window_hours"],
            int(spark.conf.get("spark.sql.shuffle.partitions")), cfg["features.files"]).cache()
        sampling = sampling_counts(behaviors.where(F.col("split") == TRAIN), npratio)
    for split, split_npratio in ((TRAIN, npratio), (VALID, 0), (DEV, 0)):
        with timer.stage(f"{split}_rows"):
            split_rows = behaviors.where(F.col("split") == split)
            expected = sampling["kept"] if split == TRAIN else split_rows.agg(F.sum(F.size(
                "candidates"))).first()[0] or 0   # valid and dev keep every candidate
            rows = feature_rows(split_rows, impression_vectors, news_side, popularity, cfg,
                                split_npratio)
            write_parquet(rows, f"{out}/{split}", row_group_bytes(expected, dim, cfg))
            written = spark.read.schema(schemas.FEATURE_ROWS).parquet(f"{out}/{split}")
            stats = written.agg(F.count("*").alias("rows"), F.sum(C.LABEL).alias("positives"),
                                F.countDistinct(C.IMPRESSION_ID).alias("impressions")).first()
            counts[split] = {"rows": stats["rows"], "impressions": stats["impressions"],
                             "positive_share": round((stats["positives"] or 0) / max(stats["rows"], 1), 5),
                             "files": len(written.inputFiles())}
            if split == TRAIN:
                train_stats = dense_stats(written)
    with timer.stage("dev_impressions"):
        listing = behaviors.where(F.col("split") == DEV).select(
            C.IMPRESSION_ID, F.transform("candidates", lambda c: c[C.NEWS_ID]).alias(C.CANDIDATES))
        schemas.conform(listing, schemas.DEV_IMPRESSIONS).coalesce(1).write.parquet(
            f"{out}/{DEV_IMPRESSIONS}")
    with timer.stage("candidate_pool"):
        pool_root = outputs.as_of_root(cfg, as_of, outputs.POOL)
        pool_out = storage.run_dir(pool_root, run_id)
        recent = behaviors.where(F.col("t") >= log.epoch_seconds(pool_window_start(as_of, cfg)))
        pool_size = write_pool(candidate_pool(recent, news_side, as_of, cfg), pool_out)
        # the train period's counts (the popularity baseline): train and validation rows
        popularity = side.impression_counts(behaviors.where(F.col("split").isin(TRAIN, VALID)))
        schemas.conform(popularity, schemas.NEWS_POPULARITY).coalesce(1).write.parquet(
            f"{out}/news_popularity")
    with timer.stage("rejected_rows"):
        read.write_rejected(f"{out}/rejected")

    summary = {
        "run_id": run_id, "output": out, **lineage, "npratio": npratio, "seed": seed,
        "train_end": train_end.isoformat(), "time_split": time_split,
        "validation_hours": cfg["features.validation_hours"],
        "sampling": sampling, "dense_stats": train_stats,
        "rows": counts, "users": users, "candidate_pool": pool_size,
        "sources": {"layout": "daily" if log.is_daily(cfg) else "folders",
                    "dev": storage.to_uri(cfg["paths.log"] or cfg["paths.dev"])},
        "rejected_rows": {c.file: c.rejected for c in read.checks},
        "duplicate_impression_ids": {c.file: c.duplicates for c in read.checks},
        "input_rows": {c.file: c.lines for c in read.checks},
        "ids_missing_from_news_tsv": missing,
        "candidates_without_vector": dropped,
        "seconds": timer.seconds,
    }
    storage.write_text(f"{out}/summary.json", json.dumps(summary, indent=2, sort_keys=True))
    keep = cfg["paths.keep_runs"]
    state_summary = dict(lineage, users=users, kind="full")
    if as_of == outputs.day_start(as_of.date()):   # a midnight: a valid base for the daily chain
        state_summary["chain"] = log.chain_fingerprint(
            cfg, first_day, as_of.date(), user_state.state_salt(mode, vectors_summary["identity"]))
    storage.publish_run(state_root, run_id, state_summary, keep)
    storage.publish_run(pool_root, run_id, dict(lineage, candidates=pool_size), keep)
    storage.publish_run(rows_root, run_id, summary, keep)
    news.release()
    return summary


def _arguments(parser) -> None:
    parser.add_argument("--as-of", help="use only impressions before this moment, "
                                        "YYYY-MM-DD[THH:MM:SS] UTC (default: the end of the data)")
    parser.add_argument("--time-split", help="one MIND folder cut by time: train on the "
                                             "impressions before DATE, evaluate on DATE (YYYY-MM-DD)")


def main(argv: list[str] | None = None) -> int:
    return run_main("Build the train/dev feature rows, user state and candidate pool as of a moment.",
                    lambda cfg, args: run(cfg, as_of=optional_moment(args.as_of, "--as-of"),
                                          time_split=optional_day(args.time_split, "--time-split")),
                    argv, extra_arguments=_arguments)


if __name__ == "__main__":
    sys.exit(main())
