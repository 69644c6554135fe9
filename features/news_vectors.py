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
from features import encoders
from features.behavior_log import news_folders
from features.mind import NEWS_FILE, check_rejected_share, parse_news, read_numbered_lines


def configured_dim(cfg: Config) -> int:
    """The width of the configured vectors (every vector is checked against it)."""
    if cfg["embed.projection_dim"]:
        return cfg["embed.projection_dim"]
    return {"use": encoders.UniversalSentenceEncoder.dim, "hashing": cfg["embed.hashing_dim"],
            "precomputed": cfg["embed.precomputed_dim"]}[cfg["embed.encoder"]]


def vectors_identity(cfg: Config, dim: int | None = None) -> dict:
    """What makes two vector sets interchangeable for a model: the encoder and everything
    that shapes its output (`dim`: configured_dim's unless given). Features and models
    record it; scoring and evaluation refuse a model whose identity differs from their
    features'."""
    dim = configured_dim(cfg) if dim is None else dim
    identity = {"encoder": cfg["embed.encoder"], "dim": dim,
                "projection_dim": cfg["embed.projection_dim"],
                "projection_seed": cfg["embed.projection_seed"],
                "normalize": cfg["embed.normalize"]}
    if cfg["embed.encoder"] == "hashing":
        identity["hashing_dim"] = cfg["embed.hashing_dim"]
    if cfg["embed.encoder"] == "precomputed":
        identity["precomputed_path"] = storage.to_uri(cfg["embed.precomputed_path"])
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return dict(identity, id=digest)



def read_all_news(spark: SparkSession, cfg: Config,
                  before: dt.date | None = None) -> tuple[DataFrame, DataFrame, list]:
    """Distinct news of every news.tsv of the log (of a daily log's catalogue as of `before`;
    the first folder's row wins), their rejected rows, and each file's line counts."""
    frames, rejected, checks = [], [], []
    folders = news_folders(cfg, before)
    if not folders:
        raise UserInputError(f"the log {cfg['paths.log']} has no {NEWS_FILE} before {before}")
    for order, folder in enumerate(folders):
        if not storage.exists(f"{folder}/{NEWS_FILE}"):
            raise UserInputError(f"{folder}/{NEWS_FILE} does not exist")
        parsed = parse_news(spark, folder)
        checks.append(check_rejected_share(parsed, f"{folder}/news.tsv",
                                           cfg["mind.max_rejected_share"]))
        frames.append(parsed.good.withColumn("split_order", F.lit(order)))
        rejected.append(parsed.rejected)
    union, bad_rows = frames[0], rejected[0]
    for frame, bad in zip(frames[1:], rejected[1:]):
        union, bad_rows = union.unionByName(frame), bad_rows.unionByName(bad)
    news = (union.groupBy(C.NEWS_ID)
            .agg(F.min_by(F.struct("title", "category", "subcategory"),
                          F.struct("split_order", "title")).alias("first"),
                 F.countDistinct("title").alias("titles"))
            .select(C.NEWS_ID, "first.title", "first.category", "first.subcategory", "titles"))
    return news, bad_rows, checks



def _encode_partitions(encoder_name: str, hashing_dim: int, batch_size: int,
                       projection_dim: int, seed: int, normalize: bool):
    def encode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        encoder = encoders.get_encoder(encoder_name, hashing_dim)
        for batch in batches:
            for start in range(0, len(batch), batch_size):
                part = batch.iloc[start:start + batch_size]
                vectors = encoders.postprocess(encoder.encode(part["title"].tolist()),
                                               projection_dim, seed, normalize)
                yield pd.DataFrame({C.NEWS_ID: part[C.NEWS_ID].to_numpy(),
                                    C.VECTOR: list(vectors)})
    return encode



def encode_titles(news: DataFrame, cfg: Config) -> DataFrame:
    partitions = cfg["embed.partitions"]
    encode = _encode_partitions(cfg["embed.encoder"], cfg["embed.hashing_dim"],
                                cfg["embed.batch_size"], cfg["embed.projection_dim"],
                                cfg["embed.projection_seed"], cfg["embed.normalize"])
    return (news.select(C.NEWS_ID, "title").repartition(partitions, C.NEWS_ID)
            .mapInPandas(encode, schema=schemas.NEWS_VECTORS))



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



def project_vectors(vectors: DataFrame, cfg: Config) -> DataFrame:
    projection_dim, seed, normalize = (cfg["embed.projection_dim"], cfg["embed.projection_seed"],
                                       cfg["embed.normalize"])

    def project(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np
        for batch in batches:
            if len(batch) == 0:
                continue
            matrix = np.stack(batch[C.VECTOR].to_numpy()).astype(np.float32)
            out = encoders.postprocess(matrix, projection_dim, seed, normalize)
            yield pd.DataFrame({C.NEWS_ID: batch[C.NEWS_ID].to_numpy(), C.VECTOR: list(out)})

    return vectors.mapInPandas(project, schema=schemas.NEWS_VECTORS)



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
