"""What a training run is, decided by rank 0 before it trains, and the model's settings
derived from the config and the feature rows (shared by the trainer and the benchmarks).

README.md, "Training", is the specification.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math

from common import outputs, storage
from common.errors import UserInputError
from common.config import Config
from dcn import shards
from dcn.checkpoints import FINISHED_NAME, RUN_NAME, Checkpoint, CheckpointStore, run_identity
from dcn.export import model_folder

log = logging.getLogger("dcn.train")  # the training's one logger (dcn.train sets it up)


@dataclasses.dataclass
class Plan:
    """What rank 0 decided before training; broadcast to every rank."""

    features: shards.Features
    run_key: str
    identity: dict
    checkpoints: str
    steps_per_epoch: int
    finished: dict | None = None          # FINISHED.json of a completed run
    resume: dict | None = None            # header of the checkpoint to resume from


def model_arguments(cfg: Config, features: shards.Features | None = None) -> dict:
    """build_dcn's arguments besides the widths: the `model.*` settings, and what the feature
    rows say about the side features (the dense features' statistics, the category buckets)."""
    arguments = {k: cfg[f"model.{k}"] for k in ("cross_layers", "cross_kind", "cross_rank",
                                                "deep_units", "dropout", "structure", "seed",
                                                "features", "category_dim")}
    arguments["l2"] = cfg["train.l2"]
    if features is not None:
        stats = features.dense_stats
        wanted = set(arguments["features"])
        for key, column, feature in (("user_dense", "user_dense", "user_stats"),
                                     ("news_dense", "news_dense", "news_stats"),
                                     ("pair_dense", "pair_dense", "topic")):
            if feature in wanted:
                if column not in stats:
                    raise UserInputError(f"model.features has {feature} but the features at "
                                         f"{features.path} have no {column} statistics: "
                                         "rebuild them with this version of build_features")
                arguments[f"{key}_mean"] = stats[column]["mean"]
                arguments[f"{key}_std"] = stats[column]["std"]
        side = features.lineage.get("side_features") or {}
        arguments["category_buckets"] = side.get("category_buckets", cfg["features.category_buckets"])
    return arguments


def warmup_steps(cfg: Config, total_steps: int) -> int:
    """`train.warmup_steps`, but never more than a tenth of the run: a short run would
    otherwise spend most of its steps below the learning rate it was given."""
    return max(0, min(cfg["train.warmup_steps"], total_steps // 10))


def logit_correction(features: shards.Features) -> float:
    """log of the rate at which the train split's negatives were kept (features.npratio).

    Sampling negatives at rate r multiplies the odds the model learns by 1/r, so adding log r
    to the logit turns its output back into a click probability on real traffic (the
    exported model carries it in the logit layer's bias)."""
    rate = float(features.sampling.get("negative_keep_rate") or 1.0)
    return math.log(rate) if 0.0 < rate < 1.0 else 0.0


def check_checkpoint_width(header: dict, features: shards.Features, where: str) -> None:
    """A checkpoint of another input width cannot be resumed on this data: say so."""
    from dcn.model import build_dcn, check_input_width

    try:
        check_input_width(build_dcn(**header["spec"]), features.train.user_dim,
                          features.train.news_dim)
    except ValueError as err:
        raise UserInputError(f"checkpoint {where}: {err}") from None


def make_plan(cfg: Config, size: int, force: bool,
              as_of: dt.datetime | None = None) -> tuple[Plan, Checkpoint | None]:
    """Rank 0: resolve the data, the run key, and whether to resume or stop.

    `as_of`: train on the rows built as of that moment (None: the newest); the run key hashes
    the features run, so another moment is another run.
    Builds no Keras object: one built on rank 0 only would shift Keras' automatic variable
    names there, and Horovod's broadcast, which matches tensors by those names, would hang.
    """
    features = shards.current_features(cfg, as_of)
    shards.check_shardable(features.train, size)
    if features.valid is not None:
        shards.check_shardable(features.valid, size)
    run_key, identity = run_identity(cfg, features.run_id, size)
    store = CheckpointStore(outputs.checkpoints_dir(cfg, run_key), cfg["train.keep_checkpoints"])
    # Every rank runs exactly this many steps per epoch on an endless dataset: shards of
    # different sizes can never leave one rank waiting in an allreduce the others never join.
    spe = cfg["train.steps_per_epoch"] or shards.steps_per_epoch(
        features.train.rows, cfg["train.batch_size"], size)
    plan = Plan(features=features, run_key=run_key, identity=identity, checkpoints=store.uri,
                steps_per_epoch=spe)
    if force:
        store.clear()
    finished = store.read_marker(FINISHED_NAME)
    if finished and _export_exists(cfg, finished.get("version", "")):
        plan.finished = finished
        return plan, None
    if finished:
        log.warning("run %s finished earlier, but its model version %s is gone: training again",
                    run_key, finished.get("version"))
        store.clear()
    store.remove_temporaries()
    store.write_marker(RUN_NAME, {"run_key": run_key, "identity": identity})
    checkpoint = store.latest()
    if checkpoint is not None:
        plan.resume = checkpoint.header
    return plan, checkpoint


def _export_exists(cfg: Config, version: str) -> bool:
    try:
        return bool(version) and bool(model_folder(cfg, version))
    except storage.RunNotFound:
        return False
