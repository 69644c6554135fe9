"""The fit of a fitted post-processing (features/vector_transform.py), made once per vectors
identity and kept beside its partitions: `news_vectors/<identity id>/fit/runs/<run>/fit.npz`.

The first committed fit run is the identity's fit for good: a later run never refits, even when
the catalogue has grown, because a news's vector must never change. The fit is computed from
moments that each Spark task sums over its own rows (n, the sum of x, the sum of x x^T: d + d^2
numbers per task, whatever the catalogue's size), so no vector reaches the driver.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, DoubleType, LongType, StructField, StructType

from common import columns as C
from common import outputs, storage
from common.config import Config
from common.errors import UserInputError
from features import vector_transform

FIT_FOLDER = "fit"
FIT_FILE = "fit.npz"
_MOMENTS = StructType([StructField("n", LongType(), False),
                       StructField("total", ArrayType(DoubleType(), False), True),
                       StructField("gram", ArrayType(DoubleType(), False), True)])


def fit_root(cfg: Config, identity_id: str) -> str:
    return storage.join(outputs.vectors_identity_root(cfg, identity_id), FIT_FOLDER)


def stored_fit(cfg: Config, identity_id: str) -> vector_transform.Fit | None:
    """The identity's fit (its first committed fit run), or None before the first embed."""
    root = fit_root(cfg, identity_id)
    runs = storage.committed_runs(root) if storage.exists(root) else []
    if not runs:
        return None
    return vector_transform.Fit.from_bytes(
        storage.read_bytes(storage.join(storage.run_dir(root, runs[0]), FIT_FILE)))


def _moments(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    n, total, gram = vector_transform.partial_moments(
        np.stack(batch[C.VECTOR].to_numpy()) for batch in batches if len(batch))
    yield pd.DataFrame({"n": [n], "total": [None if total is None else total],
                        "gram": [None if gram is None else gram.ravel()]})


def fit_vectors(vectors: DataFrame, settings: vector_transform.Settings) -> vector_transform.Fit:
    """The fit of `settings.kind` on `vectors` (news_id, vector): moments per task, summed on
    the driver (one row per task)."""
    n, total, gram = 0, None, None
    for row in vectors.select(C.VECTOR).mapInPandas(_moments, schema=_MOMENTS).collect():
        if not row["n"]:
            continue
        part_total, part_gram = np.asarray(row["total"]), np.asarray(row["gram"])
        n += row["n"]
        total = part_total if total is None else total + part_total
        gram = part_gram if gram is None else gram + part_gram
    if total is None:
        raise ValueError("no vectors to fit the post-processing on")
    dim = len(total)
    try:
        return vector_transform.fit_from_moments(settings, n, total, gram.reshape(dim, dim))
    except ValueError as err:      # a width the encoder cannot give, or too few news
        raise UserInputError(str(err)) from None


def store_fit(cfg: Config, identity_id: str, fit: vector_transform.Fit) -> vector_transform.Fit:
    """Commit `fit` as the identity's fit, unless one was committed first (a concurrent
    first embed): the identity's fit is whichever committed first, and it is returned."""
    root = fit_root(cfg, identity_id)
    run_id = storage.start_run(root)
    storage.write_bytes(storage.join(storage.run_dir(root, run_id), FIT_FILE), fit.to_bytes())
    storage.publish_run(root, run_id, {"kind": fit.kind, "rows": fit.rows,
                                       "digest": fit.digest(), "width": len(fit.mean)},
                        keep_runs=1 << 30)
    return stored_fit(cfg, identity_id)
