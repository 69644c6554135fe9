"""Exported models: a versioned folder per training run and a pointer to the latest.

Layout under `paths.work/models/` (common/storage.py's run layout):

    runs/<version>/model.keras      the Keras model (load with `import dcn.model` done)
    runs/<version>/metadata.json    input widths, model spec, config, training data and
                                    row count, final metrics, version id
    CURRENT.json                    the latest version, replaced atomically

A version folder is complete before the pointer names it, so a reader never sees a
half-written model.
"""
from __future__ import annotations

import json
import os
import tempfile

from common import storage
from common.config import Config

MODELS_NAME = "models"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


def models_root(cfg: Config) -> str:
    return storage.join(cfg["paths.work"], MODELS_NAME)


def export_model(cfg: Config, model, metadata: dict, version: str | None = None) -> str:
    """Save `model` and `metadata` as a new version, then point CURRENT.json at it."""
    version = version or storage.new_run_id()
    folder = storage.run_dir(models_root(cfg), version)
    fs, path = storage.filesystem(folder)
    fs.create_dir(path, recursive=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        with open(local, "rb") as src, fs.open_output_stream(f"{path}/{MODEL_FILE}") as dst:
            dst.write(src.read())
    metadata = dict(metadata, version=version)
    with fs.open_output_stream(f"{path}/{METADATA_FILE}") as dst:
        dst.write(json.dumps(metadata, indent=2, sort_keys=True, default=str).encode("utf-8"))
    storage.publish_run(models_root(cfg), version, {"metrics": metadata.get("metrics", {})},
                        keep_runs=cfg["train.keep_versions"])
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
