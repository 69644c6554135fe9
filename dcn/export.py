"""Exported models: a versioned folder per training run and a pointer to the latest.

Layout under `paths.work/models/` (common/storage.py's run layout):

    runs/<version>/model.keras      the Keras model (load with `import dcn.model` done)
    runs/<version>/factorized.npz   the factorized scorer's arrays (vector cross form only)
    runs/<version>/retrieval.npz    the cascade's landmark users for this model
                                    (dcn/retrieval.py), when training could choose them
    runs/<version>/metadata.json    input widths, model spec, config, training data and
                                    row count, final metrics, version id
    runs/<version>/_COMMITTED       written last: the version is complete

The newest committed version is the current one, so a reader never sees a half-written model.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Iterable

import numpy as np

from common import outputs, storage
from common.config import Config
from dcn.retrieval import RETRIEVAL_FILE, LandmarkRetrieval

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
# The factorized scorer's arrays (dcn/scoring.py), for models whose form has one: scoring
# tasks load these with numpy and never import TensorFlow.
FACTORIZED_FILE = "factorized.npz"


def models_root(cfg: Config) -> str:
    return outputs.models_root(cfg)


def check_lineage(metadata: dict, news_vectors: dict | None, features_where: str) -> None:
    """Refuse a model trained on other news vectors (encoder, text, post-processing and its
    fit, or width) than the features it is about to read: its scores would be meaningless,
    silently."""
    trained = metadata.get("news_vectors") or {}
    if not trained or not news_vectors:
        raise ValueError(f"model {metadata.get('version')} or the features at {features_where} "
                         "record no news-vector identity (built before lineage was recorded): "
                         "rebuild the features and retrain")
    if trained != news_vectors:
        differs = sorted(k for k in set(trained) | set(news_vectors)
                         if k != "id" and trained.get(k) != news_vectors.get(k))
        detail = ", ".join(f"{k}: model {trained.get(k)!r}, features {news_vectors.get(k)!r}"
                           for k in differs)
        raise ValueError(f"model {metadata.get('version')} was trained on other news vectors than "
                         f"the features at {features_where} ({detail}): retrain on these "
                         "features, or rebuild the features with the model's embedding settings")


def check_side_features(metadata: dict, side_features: dict | None, where: str) -> None:
    """Refuse a model whose side features were built with other settings (category hashing,
    popularity window, click-rate prior) than the rows or pool at `where`: it would be fed
    features it never saw. A vectors-only model reads none of them."""
    if not (metadata.get("model_spec") or {}).get("features"):
        return
    trained = (metadata.get("features") or {}).get("side_features")
    if trained != side_features:
        raise ValueError(f"model {metadata.get('version')} was trained on side features built "
                         f"with {trained}, but {where} has {side_features}: rebuild with the "
                         "model's features.* settings, or retrain")


def export_model(cfg: Config, model, metadata: dict, version: str | None = None,
                 protected: Iterable[str] = (), retrieval=None) -> str:
    """Save `model` and `metadata` (and the cascade's `retrieval` for it, if any) as a
    new version, then commit it (it becomes current). Versions beyond train.keep_versions are
    deleted, except the `protected` ones (the versions the registry serves or may roll back
    to)."""
    version = storage.begin_run(storage.runs_dir(models_root(cfg)), version)
    folder = storage.run_dir(models_root(cfg), version)
    fs, path = storage.filesystem(folder)
    fs.create_dir(path, recursive=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as src, fs.open_output_stream(f"{path}/{MODEL_FILE}") as dst:
            dst.write(src.read())
    from dcn.scoring import FactorizedScorer, NotFactorizable
    try:
        buffer = io.BytesIO()
        np.savez(buffer, **FactorizedScorer(model).to_arrays())
        with fs.open_output_stream(f"{path}/{FACTORIZED_FILE}") as dst:
            dst.write(buffer.getvalue())
    except NotFactorizable:
        pass
    if retrieval is not None:
        with fs.open_output_stream(f"{path}/{RETRIEVAL_FILE}") as dst:
            dst.write(retrieval.to_bytes())
    metadata = dict(metadata, version=version)
    with fs.open_output_stream(f"{path}/{METADATA_FILE}") as dst:
        dst.write(json.dumps(metadata, indent=2, sort_keys=True, default=str).encode("utf-8"))
    storage.publish_run(models_root(cfg), version, {"metrics": metadata.get("metrics", {})},
                        keep_runs=cfg["train.keep_versions"], keep=set(protected))
    return version


def model_folder(cfg: Config, version: str = "") -> str:
    """The folder of `version`, or of the latest export when `version` is empty."""
    if version:
        folder = storage.run_dir(models_root(cfg), version)
        if not storage.exists(f"{folder}/{METADATA_FILE}"):
            raise storage.RunNotFound(f"no exported model version {version!r} under "
                                      f"{models_root(cfg)}")
        return folder
    return storage.current_run(models_root(cfg), "train")["path"]


def load_metadata(folder: str) -> dict:
    return json.loads(storage.read_text(f"{folder}/{METADATA_FILE}"))


def load_factorized(folder: str):
    """The factorized scorer saved with the model (numpy only), or None if there is none."""
    from dcn.scoring import FactorizedScorer
    uri = f"{folder}/{FACTORIZED_FILE}"
    if not storage.exists(uri):
        return None
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as stream:
        with np.load(io.BytesIO(stream.read()), allow_pickle=False) as arrays:
            return FactorizedScorer.from_arrays(arrays)


def load_model(folder: str):
    """(keras model, metadata) of an exported version folder."""
    import keras
    import dcn.model  # noqa: F401  registers the Cross layer for deserialization

    fs, path = storage.filesystem(folder)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        with fs.open_input_stream(f"{path}/{MODEL_FILE}") as src, open(local, "wb") as dst:
            dst.write(src.read())
        model = keras.models.load_model(local)
    return model, load_metadata(folder)


def load_retrieval(folder: str) -> LandmarkRetrieval | None:
    """The cascade's retrieval exported with the model (numpy only), or None if there is none."""
    uri = f"{folder}/{RETRIEVAL_FILE}"
    if not storage.exists(uri):
        return None
    return LandmarkRetrieval.from_bytes(storage.read_bytes(uri))
