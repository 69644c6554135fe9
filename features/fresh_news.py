"""Giving vectors to the news that have none yet: the catalogue as of a day, less the news
some partition of the identity already holds, encoded and published as the partition of that
day (common/outputs.py). Both embed_news (a whole catalogue) and daily (each day's new news)
embed this way; the encoders are deterministic, so a news's vector never changes and the old
partitions are never rewritten. And counting the shown news that still have no vector.

A rerun for the same day publishes that day's partition again: its earlier news plus the
ones still missing (one day's news are copied, never the whole table)."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession, functions as F

from common import columns as C
from common import outputs, schemas, storage
from common.cli import StageTimer
from common.config import Config
from common.errors import UserInputError
from features import vector_fit, vector_transform
from features.news_vectors import (encode_texts, read_all_news, read_precomputed,
                                   transform_settings, transform_vectors, vectors_identity)

# ids of news without a vector a failure message names
SAMPLE_IDS = 5


def _embedded(spark: SparkSession, partitions: list[dict], name: str, schema) -> DataFrame | None:
    uris = [f"{pointer['path']}/{name}" for pointer in partitions]
    return spark.read.schema(schema).parquet(*uris) if uris else None


def _new_vectors(spark: SparkSession, cfg: Config, missing: DataFrame, identity: dict,
                 out: str) -> tuple[DataFrame, dict]:
    """The vectors of the `missing` news, and the identity they belong to. A fitted
    post-processing uses the identity's stored fit; the identity's first embed makes that fit
    from the encoder's vectors of the news it embeds (written once to `out`/encoded, so the
    encoder runs once)."""
    settings = transform_settings(cfg)
    fitted = settings.kind in vector_transform.FITTED
    fit = vector_fit.stored_fit(cfg, identity["id"]) if fitted else None
    if cfg["embed.encoder"] == "precomputed":
        raw = read_precomputed(spark, cfg).join(missing.select(C.NEWS_ID), C.NEWS_ID)
    elif fit is None and fitted:
        raw = encode_texts(missing, cfg, transform=False)
    else:
        return encode_texts(missing, cfg, transform=True, fit=fit), identity
    if fit is None and fitted:
        if outputs.vectors_partitions(cfg, identity["id"]):
            raise UserInputError(
                f"{outputs.vectors_identity_root(cfg, identity['id'])} holds vectors but not the "
                f"{settings.kind} fit they were made with: a new fit would give its news other "
                "vectors than the old ones. Delete that folder to embed the catalogue again")
        raw.write.parquet(f"{out}/encoded")
        raw = spark.read.schema(schemas.NEWS_VECTORS).parquet(f"{out}/encoded")
        fit = vector_fit.store_fit(cfg, identity["id"], vector_fit.fit_vectors(raw, settings))
        identity = vectors_identity(cfg, fit)
    return transform_vectors(raw, cfg, fit), identity


def embed_missing(spark: SparkSession, cfg: Config, day: dt.date, before: dt.date | None,
                  timer: StageTimer) -> dict:
    """Embed the news of the catalogue as of `before` (None: all of it) that no partition of
    the configured identity holds, into the partition of `day`; returns what was done (the
    partition is published only when there is something new)."""
    identity = vectors_identity(cfg)
    partitions = outputs.vectors_partitions(cfg, identity["id"])
    with timer.stage("read_news"):
        news, rejected, checks = read_all_news(spark, cfg, before)
        news = news.cache()
        stats = news.agg(F.count("*").alias("news"),
                         F.count(F.when(F.col("titles") > 1, 1)).alias("retitled")).first()
        n_news = stats["news"]
        held = _embedded(spark, partitions, "vectors", schemas.NEWS_VECTORS)
        missing = news if held is None else news.join(held.select(C.NEWS_ID), C.NEWS_ID, "left_anti")
        missing = missing.cache()
        n_missing = missing.count()
    summary = {"identity": identity, "dim": identity["dim"], "news": n_news,
               "embedded": n_missing, "day": day.isoformat(),
               "rejected_rows": {c.file: c.rejected for c in checks},
               "duplicate_news_ids": {c.file: c.duplicates for c in checks},
               "news_ids_with_other_titles_in_later_folders": stats["retitled"]}
    if n_missing == 0:
        return summary
    root = outputs.vectors_partition_root(cfg, identity["id"], day)
    same_day = [pointer for pointer in partitions if pointer["day"] == day]
    run_id = storage.start_run(root)
    out = storage.run_dir(root, run_id)
    with timer.stage("encode") as stage:
        vectors, identity = _new_vectors(spark, cfg, missing, identity, out)
        summary["identity"] = identity
        vectors, categories = (schemas.conform(vectors, schemas.NEWS_VECTORS),
                               schemas.conform(missing, schemas.NEWS_CATEGORIES))
        earlier = _embedded(spark, same_day, "vectors", schemas.NEWS_VECTORS)
        n_earlier = 0 if earlier is None else sum(p["summary"]["vectors"] for p in same_day)
        if earlier is not None:
            vectors = vectors.unionByName(earlier)
            categories = categories.unionByName(
                _embedded(spark, same_day, "categories", schemas.NEWS_CATEGORIES))
        vectors.write.parquet(f"{out}/vectors")
        written = spark.read.parquet(f"{out}/vectors")
        n_vectors = stage.rows = written.count()
        widths = written.select(F.min(F.size(C.VECTOR)), F.max(F.size(C.VECTOR))).first()
        if n_vectors and (widths[0] != identity["dim"] or widths[1] != identity["dim"]):
            raise UserInputError(f"news vectors have widths {widths[0]} to {widths[1]}, but "
                                 f"the configuration gives {identity['dim']}")
    with timer.stage("categories"):
        # beside the vectors, from the same rows: the side features read them here, so no
        # later job parses news.tsv again
        categories.coalesce(1).write.parquet(outputs.categories_uri(out))
    with timer.stage("rejected"):
        schemas.conform(rejected, schemas.REJECTED_ROWS).write.parquet(f"{out}/rejected")
    summary.update(run_id=run_id, output=f"{out}/vectors", encoder=cfg["embed.encoder"],
                   vectors=n_vectors, news_without_vector=n_missing - (n_vectors - n_earlier))
    storage.publish_run(root, run_id, summary, keep_runs=cfg["paths.keep_runs"])
    return summary


def shown_without_vector(behaviors: DataFrame, vectors: DataFrame) -> dict:
    """The distinct news shown in `behaviors` (behavior_log rows), and those of them without
    a vector in `vectors`, with a few of their ids."""
    shown = behaviors.select(F.explode(C.CANDIDATES).alias("c")).select(
        F.col(f"c.{C.NEWS_ID}").alias(C.NEWS_ID)).distinct()
    known = vectors.select(C.NEWS_ID, F.lit(True).alias("known"))
    lacking = F.when(F.col("known").isNull(), F.col(C.NEWS_ID))
    counts = shown.join(known, C.NEWS_ID, "left").agg(
        F.count("*").alias("shown"), F.count(lacking).alias("n"),
        F.slice(F.sort_array(F.collect_list(lacking)), 1, SAMPLE_IDS).alias("ids")).first()
    return {"shown_news": counts["shown"], "news_without_vector": counts["n"],
            "news_without_vector_ids": list(counts["ids"] or [])}


def check_without_vector(counts: dict, what: str, cfg: Config) -> None:
    """A day whose shown news lack vectors beyond `daily.max_news_without_vector_share`
    fails (its lists would silently miss them)."""
    limit = cfg["daily.max_news_without_vector_share"]
    if counts["shown_news"] and counts["news_without_vector"] > limit * counts["shown_news"]:
        raise UserInputError(
            f"{what}: {counts['news_without_vector']} of {counts['shown_news']} shown news have "
            f"no vector (above daily.max_news_without_vector_share={limit}), e.g. "
            f"{', '.join(counts['news_without_vector_ids'])}: are they in the news catalogue?")
