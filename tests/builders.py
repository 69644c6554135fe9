"""Builders the test modules share: the hand-made MIND sample and its config, the tiny
synthetic sample through embed_news and build_features, readers of the tables a build wrote,
export metadata, a random model, and feature rows published as a build_features run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common import outputs, packed_vectors, storage
from common.config import load_config
from common.dates import parse_moment
from features.news_vectors import current_vectors, vectors_identity
from features.pool import side_summary


def write_tsv(path, rows) -> str:
    """Write rows (lists of fields or raw lines) as a MIND-style TSV file; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else "\t".join(row)) + "\n")
    return str(path)


NEWS = {f"N{i}": (cat, title) for i, (cat, title) in enumerate([
    ("sports", "Coach wins the final game of the season"),
    ("sports", 'Striker "scores" twice | late goal & caf\u00e9 celebration'),
    ("finance", "Stocks fall as rates climb \u2014 markets react"),
    ("finance", "Bank earnings beat forecasts this quarter"),
    ("travel", "Ten beaches to visit in \u00e9t\u00e9"),
    ("travel", "Airport delays ahead of the holiday weekend"),
    ("health", "Doctors say sleep matters more than diet"),
    ("health", "New study on walking and heart health"),
    ("food", "The best pumpkin pie recipe"),
    ("food", "Chefs share their favourite soup"),
], start=1)}

TRAIN = [  # impression id, user, time, history, impressions
    ["1", "U1", "11/9/2019 8:00:00 AM", "N1 N2", "N3-1 N4-0 N5-0 N6-0 N7-0 N8-0"],
    ["2", "U2", "11/9/2019 9:30:00 AM", "", "N1-0 N2-1 N9-0"],
    ["3", "U1", "11/10/2019 1:15:00 PM", "N1 N2", "N5-0 N6-1 N7-0 N8-1 N9-0 N10-0 N4-0"],
    ["4", "U3", "11/11/2019 10:00:00 PM", "N7 N8 N99", "N1-0 N3-0 N9-1 N77-1"],
    ["5", "U2", "11/12/2019 6:45:10 AM", "N2", "N4-0 N5-1 N6-0"],
]
DEV = [
    ["10", "U1", "11/15/2019 8:00:00 AM", "N1 N2", "N3-0 N9-1 N10-0"],
    ["11", "U4", "11/15/2019 11:00:00 PM", "N5", "N6-1 N7-0 N8-0 N1-0"],
]


def news_rows(ids):
    return [[nid, NEWS[nid][0], "sub", NEWS[nid][1], "", f"https://example.org/{nid}", "[]", "[]"]
            for nid in ids]


def write_sample(root, train=TRAIN, dev=DEV):
    write_tsv(root / "train" / "behaviors.tsv", train)
    write_tsv(root / "train" / "news.tsv", news_rows(list(NEWS)[:9]))       # N10 only in dev
    write_tsv(root / "dev" / "behaviors.tsv", dev)
    write_tsv(root / "dev" / "news.tsv", news_rows(list(NEWS)))


def make_cfg(root, *extra):
    return load_config(overrides=[
        f"paths.train={root / 'train'}", f"paths.dev={root / 'dev'}", f"paths.work={root / 'work'}",
        "embed.encoder=hashing", "embed.postprocess=project", "embed.hashing_dim=16", "embed.projection_dim=0",
        "features.min_row_groups=4", "features.npratio=2", "features.candidate_window_hours=24",
        "features.validation_hours=0", *extra])


def read_table(uri):
    """A table as pandas, packed vectors (common/packed_vectors.py) decoded to arrays."""
    table = pq.read_table(uri.replace("file://", ""))
    frame = table.to_pandas()
    for name in ("user_vec", "news_vec"):
        if name in table.column_names and pa.types.is_binary(table.schema.field(name).type):
            frame[name] = list(packed_vectors.decode(table.column(name), name))
    return frame


def vectors_table(cfg):
    """The vectors of every partition of the configured identity, as pandas."""
    import pandas as pd
    return pd.concat([read_table(uri) for uri in current_vectors(cfg)["vectors_uris"]],
                     ignore_index=True)


def vectors_by_id(cfg):
    table = vectors_table(cfg)
    return {n: np.asarray(v, dtype=np.float64) for n, v in zip(table["news_id"], table["vector"])}


def features(cfg, table, as_of=None):
    """A table of the newest build (or the one as of `as_of`): train, dev, news_popularity,
    dev_impressions, rejected, or the state and candidate pool of the same as-of."""
    rows = outputs.current_rows(cfg, as_of)
    moment = parse_moment(rows["summary"]["as_of"], "as_of")
    if table in ("state", "user_profiles"):
        return read_table(f"{outputs.current_as_of(cfg, moment, outputs.STATE, '')['path']}/state")
    if table == "candidate_pool":
        pool = outputs.current_as_of(cfg, moment, outputs.POOL, "")
        return read_table(f"{pool['path']}/candidate_pool")
    return read_table(f"{rows['path']}/{table}")


def model_metadata(cfg, user_dim, news_dim=None, model=None):
    """Export metadata for a test model trained on the current news vectors (and, for a model
    with side features, on side features built with the config's settings)."""
    metadata = {"user_dim": user_dim, "news_dim": news_dim or user_dim,
                "news_vectors": vectors_identity(cfg),
                "features": {"side_features": side_summary(cfg)}}
    if model is not None:
        from dcn.model import model_spec
        metadata["model_spec"] = model_spec(model)
    return metadata


def random_model(dim, seed=0, **kwargs):
    """A small DCN with random Gaussian weights."""
    from dcn.model import build_dcn

    model = build_dcn(dim, dim, deep_units=(16,), seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def write_feature_rows(path: Path, group_sizes, dim: int, seed: int) -> int:
    """One Parquet file of FEATURE_ROWS-shaped rows, one row group per entry of group_sizes.

    Vectors are Gaussian; clicks follow a planted rule with a user-news interaction:
    P(click) = sigmoid(3 a.u b.n + a.u - 1), a and b fixed unit directions.
    """
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(1234).normal(size=(2, dim))
    a, b = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    path.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("impression_id", pa.int64()), ("user_id", pa.string()),
                        ("news_id", pa.string()), ("label", pa.int32()),
                        ("user_vec", pa.list_(pa.float32())), ("news_vec", pa.list_(pa.float32())),
                        ("history_len", pa.int32())])
    start = 0
    with pq.ParquetWriter(str(path / "part-00000.parquet"), schema) as writer:
        for size in group_sizes:
            user = rng.normal(size=(size, dim)).astype(np.float32)
            news = rng.normal(size=(size, dim)).astype(np.float32)
            logit = 3 * (user @ a) * (news @ b) + user @ a - 1
            label = (rng.random(size) < 1 / (1 + np.exp(-logit))).astype(np.int32)
            ids = np.arange(start, start + size)
            table = pa.table({
                "impression_id": ids, "user_id": [f"U{i % 97}" for i in ids],
                "news_id": [f"N{i}" for i in ids], "label": label,
                "user_vec": list(user), "news_vec": list(news),
                "history_len": np.full(size, 5, dtype=np.int32)}, schema=schema)
            writer.write_table(table, row_group_size=size)
            start += size
    return start


TEST_AS_OF = "2019-11-16T00:00:00"


def rows_root(work) -> str:
    return storage.join(str(work), "features", f"as_of={TEST_AS_OF}", "rows")


def train_uri_of(work) -> str:
    return storage.current_run(rows_root(work), "build_features")["path"] + "/train"


def publish_features(work: Path, train_groups, dev_groups, dim: int, seed: int = 0) -> str:
    """Write train/, valid/ and dev/ (valid and dev of `dev_groups`) and make them the newest
    build_features rows; returns its id."""
    root = rows_root(work)
    run_id = storage.new_run_id()
    folder = Path(storage.run_dir(root, run_id).replace("file://", ""))
    tables = (("train", train_groups), ("valid", dev_groups), ("dev", dev_groups))
    rows = {name: {"rows": write_feature_rows(folder / name, groups, dim, seed + i)}
            for i, (name, groups) in enumerate(tables)}
    storage.publish_run(root, run_id, {"run_id": run_id, "dim": dim, "rows": rows,
                                       "as_of": TEST_AS_OF}, keep_runs=3)
    return run_id


def np_cross(form, weights, x0, x):
    """The cross layer by the papers' column-vector formulas, row by row, in float64: the
    reference the Keras layer and the whole model are checked against."""
    out = np.empty_like(x0, dtype=np.float64)
    for n in range(x0.shape[0]):
        a0, a = x0[n].astype(np.float64), x[n].astype(np.float64)
        if form == "vector":
            out[n] = a0 * np.dot(a, weights["w"]) + weights["b"] + a
        elif form == "full":
            out[n] = a0 * (weights["W"] @ a + weights["b"]) + a
        else:
            out[n] = a0 * (weights["U"] @ (weights["V"] @ a) + weights["b"]) + a
    return out


PROJECT = Path(__file__).resolve().parent.parent
PROCESS_ENV = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=str(PROJECT))


def tiny_work(spark, root: Path, as_of=None):
    """The tiny synthetic MIND sample (seed 3) through embed_news and build_features (as of
    `as_of`, default the end of the data; 32-d hashed vectors, 8 row groups per table): returns
    (config, the work folder)."""
    from jobs import build_features, embed_news

    subprocess.run([sys.executable, "-m", "synthetic", "--scale", "tiny", "--out",
                    str(root / "mind"), "--seed", "3"], cwd=PROJECT, env=PROCESS_ENV, check=True,
                   stdout=subprocess.DEVNULL)
    cfg = load_config(overrides=[
        f"paths.train={root / 'mind' / 'MINDsmall_train'}",
        f"paths.dev={root / 'mind' / 'MINDsmall_dev'}", f"paths.work={root / 'work'}",
        "embed.encoder=hashing", "embed.postprocess=project", "embed.hashing_dim=512", "embed.projection_dim=32",
        "features.min_row_groups=8"])
    embed_news.run(cfg, spark)
    build_features.run(cfg, spark, as_of=as_of)
    return cfg, root / "work"
