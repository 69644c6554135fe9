"""News vectors: reading the catalogue, encoding titles inside Spark tasks, the user's own
precomputed vectors, and loading the current embed_news run for the jobs that read it.

A vectors run is identified by `vectors_identity`: the encoder and everything that shapes
its output. Features and models record it, and scoring and evaluation refuse to mix runs of
different identities (README.md, "News vectors")."""
from __future__ import annotations

import hashlib
import json
from typing import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, functions as F

from common import columns as C
from common import outputs, schemas, storage
from common.config import Config
from common.errors import RunNotFound, UserInputError
from features import encoders
from features.behavior_log import news_folders
from features.mind import NEWS_FILE, check_rejected_share, parse_news, read_numbered_lines


def vectors_identity(cfg: Config, dim: int) -> dict:
    """What makes two vector sets interchangeable for a model: the encoder and everything
    that shapes its output. Features and models record it; scoring and evaluation refuse a
    model whose identity differs from their features'."""
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



def read_all_news(spark: SparkSession, cfg: Config) -> tuple[DataFrame, DataFrame, list]:
    """Distinct news of every news.tsv of the log (the first folder's row wins), their
    rejected rows, and each file's line counts."""
    frames, rejected, checks = [], [], []
    for order, folder in enumerate(news_folders(cfg)):
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



def current_vectors_uri(cfg: Config) -> tuple[str, dict]:
    pointer = outputs.current_vectors(cfg)
    return f"{pointer['path']}/vectors", pointer["summary"]



def load_categories(spark: SparkSession, vectors_summary: dict) -> DataFrame:
    """(news_id, category, subcategory) of every news of the embed_news run that
    load_vectors returned `vectors_summary` for, as its news.tsv rows give them
    (schemas.NEWS_CATEGORIES)."""
    uri = vectors_summary["categories_uri"]
    if not storage.exists(uri):
        raise UserInputError(
            f"the news vectors run {vectors_summary['run_id']} has no news categories ({uri}): "
            "it was written by an older embed_news; rerun ./spark-submit.sh embed_news")
    return spark.read.schema(schemas.NEWS_CATEGORIES).parquet(uri)



def load_vectors(spark: SparkSession, cfg: Config) -> tuple[DataFrame, int, dict]:
    """(news_id, vector) of the current embed_news run, its width, and its summary (with
    `identity` and `run_id`, and where the run's tables are: `vectors_uri`,
    `categories_uri`; every reader of the run takes them from here, so all read the same run
    even if embed_news publishes another meanwhile). The width is the run's (embed_news
    checked every vector against it); user_state.NewsIndex checks it again when it gathers
    the vectors."""
    try:
        pointer = outputs.current_vectors(cfg)
    except RunNotFound as err:
        raise UserInputError(str(err)) from None
    uri = f"{pointer['path']}/vectors"
    summary = dict(pointer["summary"], vectors_uri=uri,
                   categories_uri=outputs.categories_uri(pointer["path"]))
    if not summary.get("vectors") or not summary.get("dim"):
        raise UserInputError(f"{uri}: no news vectors")
    return (spark.read.schema(schemas.NEWS_VECTORS).parquet(uri).select(C.NEWS_ID, C.VECTOR),
            int(summary["dim"]), summary)
