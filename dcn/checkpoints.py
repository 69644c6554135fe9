"""A training run's identity and its checkpoints.

The *run key* hashes what defines the result (:func:`run_identity`): rerunning the same
command finds the same run, resumes from its newest checkpoint, or, once `FINISHED.json`
names its exported model version, returns that version without training. A run's folder,
`paths.work/checkpoints/<run key>/`, holds `ckpt-<global step>.npz` (model and optimizer
variables plus a JSON header), `RUN.json` (what the key hashes) and that marker. README.md,
"Training", is the specification.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re

import numpy as np
import pyarrow.fs as pafs

from common import storage
from common.config import Config

log = logging.getLogger("dcn.train")  # the training's one logger (dcn.train sets it up)

FINISHED_NAME = "FINISHED.json"
RUN_NAME = "RUN.json"
CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{10})\.npz$")
# train: keys that change how fast or how safely a run goes, not the model it produces; they
# are left out of the run key so that rerunning with other values resumes the same run.
OPERATIONAL_TRAIN_KEYS = ("reader_threads", "threads_per_rank", "checkpoint_every_steps",
                          "keep_checkpoints", "spark_num_proc", "spark_start_timeout_s",
                          "keep_versions", "cache_in_memory_mb")


def run_identity(cfg: Config, features_run_id: str, size: int) -> tuple[str, dict]:
    """(run key, what it hashes): equal for reruns of the same command."""
    train = {k: v for k, v in cfg["train"].items() if k not in OPERATIONAL_TRAIN_KEYS}
    identity = {"features_run_id": features_run_id, "model": cfg["model"], "train": train,
                "ranks": size}
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], identity


@dataclasses.dataclass
class Checkpoint:
    header: dict            # global_step, epoch, history, spec, variable names, ...
    arrays: list            # model variables, then optimizer variables


class CheckpointStore:
    """Checkpoints of one run: `ckpt-<step>.npz` files, newest `keep` kept, plus markers."""

    def __init__(self, uri: str, keep: int):
        self.uri = uri
        self.keep = max(1, keep)
        self.fs, self.path = storage.filesystem(uri)

    def _names(self) -> list[tuple[int, str]]:
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            return []
        found = self.fs.get_file_info(pafs.FileSelector(self.path))
        steps = [(int(m.group(1)), f.base_name) for f in found
                 if (m := CHECKPOINT_PATTERN.match(f.base_name))]
        return sorted(steps)

    def save(self, checkpoint: Checkpoint) -> str:
        """Write once under the final name (no rename: object stores have none); prune old
        checkpoints. A file cut short by a crash fails to load and `latest` skips it."""
        buffer = io.BytesIO()
        named = {f"v{i:05d}": a for i, a in enumerate(checkpoint.arrays)}
        np.savez(buffer, header=np.array(json.dumps(checkpoint.header)), **named)
        name = f"ckpt-{checkpoint.header['global_step']:010d}.npz"
        storage.write_bytes(f"{self.uri}/{name}", buffer.getvalue())
        for _, stale in self._names()[:-self.keep]:
            self.fs.delete_file(f"{self.path}/{stale}")
        return f"{self.uri}/{name}"

    def latest(self) -> Checkpoint | None:
        """The newest readable checkpoint (an unreadable one is skipped with a warning)."""
        for _, name in reversed(self._names()):
            try:
                with self.fs.open_input_file(f"{self.path}/{name}") as handle:
                    with np.load(io.BytesIO(handle.read()), allow_pickle=False) as archive:
                        header = json.loads(str(archive["header"]))
                        arrays = [archive[f"v{i:05d}"] for i in range(len(archive.files) - 1)]
                return Checkpoint(header, arrays)
            except Exception as err:  # noqa: BLE001  a damaged file: fall back to an older one
                log.warning("skipping unreadable checkpoint %s/%s: %s", self.uri, name, err)
        return None

    def clear(self) -> None:
        storage.delete_dir(self.uri)

    def remove_temporaries(self) -> None:
        """Delete leftovers of writes that were killed half-way."""
        if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
            return
        for info in self.fs.get_file_info(pafs.FileSelector(self.path)):
            if info.base_name.startswith(".") and ".tmp-" in info.base_name:
                self.fs.delete_file(info.path)

    def read_marker(self, name: str) -> dict | None:
        uri = f"{self.uri}/{name}"
        return json.loads(storage.read_text(uri)) if storage.exists(uri) else None

    def write_marker(self, name: str, content: dict) -> None:
        storage.write_text(f"{self.uri}/{name}",
                           json.dumps(content, indent=2, sort_keys=True, default=str))
