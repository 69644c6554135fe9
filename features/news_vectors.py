"""News vectors: reading the catalogue, encoding titles inside Spark tasks, the user's own
precomputed vectors, and loading the vectors of the configured identity for the jobs that
read them.

Vectors are identified by `vectors_identity`: the encoder and everything that shapes its
output. Features and models record it, and scoring and evaluation refuse to mix vectors of
different identities (README.md, "News vectors"). An identity's vectors are partitioned by
the day their news were first embedded (common/outputs.py): news added later never change
the identity, and a news's vector, once written, is never written again."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, functions as F

from common import columns as C
from common import outputs, schemas, storage
from common.config import Config
from common.errors import UserInputError
from features import encoders, vector_fit, vector_transform
from features.behavior_log import news_folders
from features.mind import (FILE_INDEX, NEWS_FILE, check_rejected_shares, parse_news,
                           read_numbered_lines)


def transform_settings(cfg: Config) -> vector_transform.Settings:
    return vector_transform.Settings(cfg["embed.postprocess"], cfg["embed.projection_dim"],
                                     cfg["embed.projection_seed"], cfg["embed.normalize"])


def encoder_dim(cfg: Config) -> int:
    """The width of the configured encoder's own vectors (before post-processing)."""
    if cfg["embed.encoder"] == "precomputed":
        return cfg["embed.precomputed_dim"]
    return encoders.encoder_dim(cfg["embed.encoder"], cfg["embed.hashing_dim"])


def configured_dim(cfg: Config) -> int:
    """The width of the configured vectors (every vector is checked against it)."""
    return transform_settings(cfg).output_dim(encoder_dim(cfg))


def vectors_identity(cfg: Config, fit: vector_transform.Fit | None = None) -> dict:
    """What makes two vector sets interchangeable for a model: the encoder (with its model's
    package and version), the text it reads, and everything that shapes its output. Its `id`
    names the identity's folder. A fitted post-processing adds its fit's digest (`fit`, from
    `fit` or, when None, from the stored fit): features and models record the whole
    identity, and scoring and evaluation refuse a model whose identity differs from their
    features' (dcn/export.check_lineage)."""
    settings = transform_settings(cfg)
    identity = {"encoder": cfg["embed.encoder"], "dim": configured_dim(cfg),
                "postprocess": settings.kind, "projection_dim": settings.projection_dim,
                "normalize": settings.normalize}
    if settings.kind in ("project", "center"):
        identity["projection_seed"] = settings.seed
    if cfg["embed.encoder"] == "hashing":
        identity["hashing_dim"] = cfg["embed.hashing_dim"]
    if cfg["embed.encoder"] == "precomputed":
        identity["precomputed_path"] = storage.to_uri(cfg["embed.precomputed_path"])
    else:
        identity["text"] = cfg["embed.text"]
        identity["model"] = encoders.model_identity(cfg["embed.encoder"])
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    identity["id"] = digest
    if settings.kind in vector_transform.FITTED:
        fit = fit or vector_fit.stored_fit(cfg, digest)
        identity["fit"] = fit.digest() if fit is not None else None
    return identity



def read_all_news(spark: SparkSession, cfg: Config,
                  before: dt.date | None = None) -> tuple[DataFrame, DataFrame, list]:
    """Distinct news of every news.tsv of the log (of a daily log's catalogue as of `before`;
    the first folder's row wins), their rejected rows, and each file's line counts."""
    folders = news_folders(cfg, before)
    if not folders:
        raise UserInputError(f"the log {cfg['paths.log']} has no {NEWS_FILE} before {before}")
    for folder in folders:
        if not storage.exists(f"{folder}/{NEWS_FILE}"):
            raise UserInputError(f"{folder}/{NEWS_FILE} does not exist")
    parsed = parse_news(spark, folders)
    checks = check_rejected_shares(parsed, [f"{folder}/{NEWS_FILE}" for folder in folders],
                                   cfg["mind.max_rejected_share"])
    union = parsed.indexed_good.withColumnRenamed(FILE_INDEX, "split_order")
    news = (union.groupBy(C.NEWS_ID)
            .agg(F.min_by(F.struct("title", "abstract", "category", "subcategory"),
                          F.struct("split_order", "title")).alias("first"),
                 F.countDistinct("title").alias("titles"))
            .select(C.NEWS_ID, "first.title", "first.abstract", "first.category",
                    "first.subcategory", "titles"))
    return news, parsed.rejected, checks



def encoder_texts(news: DataFrame, cfg: Config) -> F.Column:
    """What the encoder reads of each news (`embed.text`)."""
    title, abstract = F.trim("title"), F.trim(F.coalesce(F.col("abstract"), F.lit("")))
    return {"title": title,
            "title_abstract": F.when(abstract == "", title).otherwise(
                F.concat(title, F.lit(". "), abstract)),
            "title_category": F.concat(F.trim("category"), F.lit(": "), title),
            }[cfg["embed.text"]]


def _encode_partitions(spec: encoders.EncoderSpec, batch_size: int,
                       settings: vector_transform.Settings | None,
                       fit: vector_transform.Fit | None):
    def encode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = encoders.get_encoder(spec)
        for batch in batches:
            for start in range(0, len(batch), batch_size):
                part = batch.iloc[start:start + batch_size]
                vectors = encoder.encode(part["text"].tolist())
                if settings is not None:
                    vectors = vector_transform.apply(vectors, settings, fit)
                yield pd.DataFrame({C.NEWS_ID: part[C.NEWS_ID].to_numpy(),
                                    C.VECTOR: list(vectors)})
    return encode



def encode_texts(news: DataFrame, cfg: Config, transform: bool,
                 fit: vector_transform.Fit | None = None) -> DataFrame:
    """(news_id, vector) of `news` (read_all_news rows), encoded inside Spark tasks: the
    encoder's own vectors, or, with `transform`, the identity's (`fit`: the stored fit of a
    fitted post-processing)."""
    spec = encoders.EncoderSpec(cfg["embed.encoder"], cfg["embed.hashing_dim"],
                                task_threads(news.sparkSession, cfg))
    encode = _encode_partitions(spec, cfg["embed.batch_size"],
                                transform_settings(cfg) if transform else None, fit)
    return (news.select(C.NEWS_ID, encoder_texts(news, cfg).alias("text"))
            .repartition(cfg["embed.partitions"], C.NEWS_ID)
            .mapInPandas(encode, schema=schemas.NEWS_VECTORS))


def task_threads(spark: SparkSession, cfg: Config) -> int:
    """Threads an encoder may use inside one Spark task: `embed.threads_per_task`, or (0)
    the cores Spark reserves per task (`spark.task.cpus`), so that concurrent tasks do not
    oversubscribe the executor's cores."""
    return cfg["embed.threads_per_task"] or int(spark.conf.get("spark.task.cpus", "1"))



def read_precomputed(spark: SparkSession, cfg: Config) -> DataFrame:
    """The user's vectors, checked against `embed.precomputed_dim`."""
    path, dim = cfg["embed.precomputed_path"], cfg["embed.precomputed_dim"]
    uri = storage.to_uri(path)
    if not storage.exists(uri):
        raise UserInputError(f"precomputed vectors not found: {uri}")
    if uri.endswith(".vec") or uri.endswith(".txt"):
        lines = read_numbered_lines(spark, uri).where(F.trim("text") != "")
        tokens = F.split(F.trim("text"), r"[\t ]+")
        vectors = lines.select("file", "line", F.element_at(tokens, 1).alias(C.NEWS_ID),
                               F.slice(tokens, 2, 1 << 20).cast("array<float>").alias(C.VECTOR))
    else:
        vectors = (spark.read.parquet(uri)
                   .select(F.lit(uri).alias("file"), F.lit(None).cast("long").alias("line"),
                           C.NEWS_ID, F.col(C.VECTOR).cast("array<float>").alias(C.VECTOR)))
    checked = vectors.select("*", F.when(F.size(C.VECTOR) != dim, F.format_string(
        f"has width %d, but embed.precomputed_dim is {dim}", F.size(C.VECTOR))).when(
        F.exists(C.VECTOR, lambda v: v.isNull()), F.format_string(
            "has a value that is not a number at position %d",
            F.array_position(F.transform(C.VECTOR, lambda v: v.isNull()), True))).when(
        F.exists(C.VECTOR, lambda v: F.isnan(v)), F.format_string(
            "has NaN at position %d",
            F.array_position(F.transform(C.VECTOR, lambda v: F.isnan(v)), True))).when(
        F.exists(C.VECTOR, lambda v: F.abs(v) == float("inf")), F.format_string(
            "has an infinite value at position %d",
            F.array_position(F.transform(C.VECTOR, lambda v: F.abs(v) == float("inf")), True)))
        .alias("problem"))
    bad = checked.where(F.col("problem").isNotNull()).orderBy("line").limit(1).collect()
    if bad:
        row = bad[0]
        where = f"{row['file']}:{row['line']}" if row["line"] is not None else row["file"]
        raise UserInputError(f"{where}: vector of news {row[C.NEWS_ID]!r} {row['problem']}")
    return vectors.select(C.NEWS_ID, C.VECTOR)



def transform_vectors(vectors: DataFrame, cfg: Config,
                      fit: vector_transform.Fit | None) -> DataFrame:
    """The identity's vectors from an encoder's (or the user's own) vectors (news_id, vector)."""
    settings = transform_settings(cfg)

    def transform(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np
        for batch in batches:
            if len(batch) == 0:
                continue
            matrix = np.stack(batch[C.VECTOR].to_numpy()).astype(np.float32)
            out = vector_transform.apply(matrix, settings, fit)
            yield pd.DataFrame({C.NEWS_ID: batch[C.NEWS_ID].to_numpy(), C.VECTOR: list(out)})

    return vectors.mapInPandas(transform, schema=schemas.NEWS_VECTORS)



def has_vectors(cfg: Config) -> bool:
    """Whether the configured identity has vectors (some finished embed_news or daily run)."""
    return bool(outputs.vectors_partitions(cfg, vectors_identity(cfg)["id"]))



def current_vectors(cfg: Config) -> dict:
    """The summary of the configured identity's vectors: `identity`, `dim`, `vectors` (how
    many), `run_id` (names the set of partition runs read), and where their tables are:
    `vectors_uris`, `categories_uris` (one per partition). Every reader of the vectors takes
    them from here, so all read the same runs even if a new one is published meanwhile."""
    identity = vectors_identity(cfg)
    partitions = outputs.vectors_partitions(cfg, identity["id"])
    if not partitions:
        raise UserInputError(
            f"no finished embed_news run of the vectors identity {identity['id']} under "
            f"{outputs.vectors_root(cfg)}: run the embed_news step (or daily) first")
    runs = [f"{pointer['day']}/{pointer['run_id']}" for pointer in partitions]
    return {"identity": identity, "dim": identity["dim"], "partitions": len(partitions),
            "vectors": sum(pointer["summary"]["vectors"] for pointer in partitions),
            "run_id": hashlib.sha256(" ".join(runs).encode()).hexdigest()[:12],
            "vectors_uris": [f"{pointer['path']}/vectors" for pointer in partitions],
            "categories_uris": [outputs.categories_uri(pointer["path"]) for pointer in partitions]}



def load_categories(spark: SparkSession, vectors_summary: dict) -> DataFrame:
    """(news_id, category, subcategory) of every news of the vectors that load_vectors
    returned `vectors_summary` for, as its news.tsv rows give them (schemas.NEWS_CATEGORIES)."""
    return spark.read.schema(schemas.NEWS_CATEGORIES).parquet(*vectors_summary["categories_uris"])



def load_vectors(spark: SparkSession, cfg: Config) -> tuple[DataFrame, int, dict]:
    """(news_id, vector) of every partition of the configured identity, their width, and
    their summary (current_vectors). The width is the identity's (every vector was checked
    against it); user_state.NewsIndex checks it again when it gathers the vectors."""
    summary = current_vectors(cfg)
    if not summary["vectors"]:
        raise UserInputError(f"{outputs.vectors_root(cfg)}: no news vectors")
    return (spark.read.schema(schemas.NEWS_VECTORS).parquet(*summary["vectors_uris"])
            .select(C.NEWS_ID, C.VECTOR), int(summary["dim"]), summary)
