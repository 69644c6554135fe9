"""Distributed training of the Deep & Cross Network with Horovod, fed by Petastorm.

    python -m dcn.train [--config FILE] [--set key=value ...] [--force]
    horovodrun -np 4 -H host1:2,host2:2 --gloo python -m dcn.train [...]
    ./spark-submit.sh train [...]                   (jobs/train.py: horovod.spark.run)

Every rank runs :func:`train` on its own shard of the current build_features run's `train/`
rows. Design points, each for a reason:

* The low-level `horovod.tensorflow` API, not `horovod.tensorflow.keras`: with Keras 3 the
  latter silently stops averaging gradients (README.md, "Dependencies"). Keras 3 variables are
  not `tf.Variable`s, so Horovod gets their backing variables (`v.value`).
* The dataset is endless and every rank runs exactly `steps_per_epoch` steps per epoch
  (`ceil(train rows / batch / ranks)` unless `train.steps_per_epoch` is set): shards of
  different sizes can never leave one rank waiting in an allreduce the others never join.
* Learning rate: `train.learning_rate * ranks` (the global batch grows with the ranks),
  reached by a linear warm-up over `train.warmup_steps`. Optimizer: Adam.
* Gradients are averaged by one grouped allreduce per step: a Horovod collective costs about
  5 ms on this kind of machine (Gloo over TCP, whatever its size; bench/train_bench.py), so
  one per gradient tensor made two ranks barely faster than one.
* Petastorm streams each rank's shard; when the shard's decoded rows fit in
  `train.cache_in_memory_mb`, it streams only the first epoch and later epochs permute the
  kept rows in memory (decoding Parquet costs about a quarter of the step's CPU).
* Only rank 0 touches shared state (checkpoints, TensorBoard, the export); every decision
  it takes (resume, already finished, an error) is broadcast, so all ranks act alike and a
  failure on rank 0 ends every rank instead of leaving them waiting.

Runs, resume and the finished marker: the *run key* hashes what defines the result -- the
features run id, the `model:` section, the `train:` keys that change the model, and the
number of ranks (see :func:`run_identity`). Checkpoints live in
`paths.work/checkpoints/<run key>/` (`ckpt-<global step>.npz`: model and optimizer
variables plus a JSON header; written to a hidden temporary name and renamed, so a kill
mid-write never leaves a partial checkpoint under a real name). Rerunning the same command
resumes from the newest checkpoint; after the export, `FINISHED.json` names the exported
version and a rerun returns it without training (`--force` trains again from scratch).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import time
from typing import Any, Callable

import numpy as np
import pyarrow.fs as pafs

from common import outputs, storage
from common.cli import UserInputError, run_main
from common.config import Config
from dcn import data as D

log = logging.getLogger("dcn.train")

FINISHED_NAME = "FINISHED.json"
RUN_NAME = "RUN.json"
CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{10})\.npz$")
AUC_BINS = 10_000
# train: keys that change how fast or how safely a run goes, not the model it produces; they
# are left out of the run key so that rerunning with other values resumes the same run.
OPERATIONAL_TRAIN_KEYS = ("reader_threads", "threads_per_rank", "checkpoint_every_steps",
                          "keep_checkpoints", "spark_num_proc", "spark_start_timeout_s",
                          "keep_versions", "cache_in_memory_mb")
# Test hook: when set, every rank writes a checksum of its final weights into this folder.
WEIGHTS_DUMP_ENV = "NEWSREC_TRAIN_WEIGHTS_DUMP"


# --------------------------------------------------------------------------- Horovod set-up

def configure_threads(threads: int) -> None:
    """TensorFlow intra/inter-op threads of this rank (0: TensorFlow's default).

    Must run before TensorFlow executes anything; if it already has (a caller that used
    TensorFlow in this process), the setting is left as it is, with a warning.
    """
    import tensorflow as tf

    if threads <= 0:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as err:
        log.warning("cannot set TensorFlow threads to %d (%s)", threads, err)


def init_horovod():
    import horovod.tensorflow as hvd

    hvd.init()
    return hvd


def backing(variables) -> list:
    """The tf.Variables behind Keras 3 variables, which Horovod needs (no `.ref()` otherwise)."""
    import tensorflow as tf

    return [v if isinstance(v, tf.Variable) else v.value for v in variables]


class RootDecision:
    """Run something on rank 0 only and broadcast its result, or its error, to every rank.

    Every rank then returns the same value or raises the same error, so a failure on rank 0
    ends all ranks instead of leaving them waiting in the next collective. Errors about the
    input (UserInputError, ValueError, FileNotFoundError) become UserInputError: one clear
    message, no traceback.
    """

    USER_ERRORS = (UserInputError, ValueError, FileNotFoundError)

    def __init__(self, hvd):
        self.hvd = hvd

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        outcome: tuple = ("ok", None)
        if self.hvd.rank() == 0:
            try:
                outcome = ("ok", fn())
            except Exception as err:  # every rank must learn about it, then raise
                user_error = isinstance(err, self.USER_ERRORS)
                if self.hvd.size() == 1 and not user_error:
                    raise
                if not user_error:
                    log.exception("rank 0 failed during %s", name)
                outcome = ("error", type(err).__name__, str(err), user_error)
        if self.hvd.size() > 1:
            outcome = self.hvd.broadcast_object(outcome, root_rank=0, name=f"decision.{name}")
        if outcome[0] == "error":
            _, kind, message, user_error = outcome
            if user_error:
                raise UserInputError(message)
            raise RuntimeError(f"rank 0 failed during {name}: {kind}: {message}")
        return outcome[1]


# --------------------------------------------------------------------------- run identity

def run_identity(cfg: Config, features_run_id: str, size: int) -> tuple[str, dict]:
    """(run key, what it hashes): equal for reruns of the same command."""
    train = {k: v for k, v in cfg["train"].items() if k not in OPERATIONAL_TRAIN_KEYS}
    identity = {"features_run_id": features_run_id, "model": cfg["model"], "train": train,
                "ranks": size}
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], identity


checkpoints_dir = outputs.checkpoints_dir
tensorboard_dir = outputs.tensorboard_dir


# --------------------------------------------------------------------------- checkpoints

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


# --------------------------------------------------------------------------- the plan

@dataclasses.dataclass
class Plan:
    """What rank 0 decided before training; broadcast to every rank."""

    features: D.Features
    run_key: str
    identity: dict
    checkpoints: str
    steps_per_epoch: int
    finished: dict | None = None          # FINISHED.json of a completed run
    resume: dict | None = None            # header of the checkpoint to resume from


def model_arguments(cfg: Config, features: D.Features | None = None) -> dict:
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


def logit_correction(features: D.Features) -> float:
    """log of the rate at which the train split's negatives were kept (features.npratio).

    Sampling negatives at rate r multiplies the odds the model learns by 1/r, so adding log r
    to the logit turns its output back into a click probability on real traffic (the
    exported model carries it in the logit layer's bias)."""
    rate = float(features.sampling.get("negative_keep_rate") or 1.0)
    return math.log(rate) if 0.0 < rate < 1.0 else 0.0


def check_checkpoint_width(header: dict, features: D.Features, where: str) -> None:
    """A checkpoint of another input width cannot be resumed on this data: say so."""
    from dcn.model import build_dcn, check_input_width

    try:
        check_input_width(build_dcn(**header["spec"]), features.train.user_dim,
                          features.train.news_dim)
    except ValueError as err:
        raise UserInputError(f"checkpoint {where}: {err}") from None


def make_plan(cfg: Config, size: int, force: bool) -> tuple[Plan, Checkpoint | None]:
    """Rank 0: resolve the data, the run key, and whether to resume or stop.

    Builds no Keras object: one built on rank 0 only would shift Keras' automatic variable
    names there, and Horovod's broadcast, which matches tensors by those names, would hang.
    """
    features = D.current_features(cfg)
    D.check_shardable(features.train, size)
    if features.valid is not None:
        D.check_shardable(features.valid, size)
    run_key, identity = run_identity(cfg, features.run_id, size)
    store = CheckpointStore(checkpoints_dir(cfg, run_key), cfg["train.keep_checkpoints"])
    spe = cfg["train.steps_per_epoch"] or D.steps_per_epoch(
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
    from dcn.export import model_folder

    try:
        return bool(version) and bool(model_folder(cfg, version))
    except storage.RunNotFound:
        return False


# --------------------------------------------------------------------------- model, steps

class WarmupSchedule:
    """Linear warm-up to `peak` over `warmup_steps` optimizer steps, then constant."""

    def __new__(cls, peak: float, warmup_steps: int):
        import keras

        class _Schedule(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                if warmup_steps <= 0:
                    return keras.ops.cast(peak, "float32")
                ramp = (keras.ops.cast(step, "float32") + 1.0) / float(warmup_steps)
                return peak * keras.ops.minimum(1.0, ramp)

            def get_config(self):
                return {"peak": peak, "warmup_steps": warmup_steps}

        return _Schedule()


class Trainer:
    """The model, its optimizer, and the compiled train and evaluation steps."""

    def __init__(self, cfg: Config, features: D.Features, hvd):
        import keras
        import tensorflow as tf
        from dcn.model import build_dcn

        from dcn.model import input_columns, model_spec

        self.hvd = hvd
        self.model = build_dcn(features.train.user_dim, features.train.news_dim,
                               **model_arguments(cfg, features))
        self.extra_inputs = input_columns(model_spec(self.model))
        total_steps = cfg["train.epochs"] * (cfg["train.steps_per_epoch"] or D.steps_per_epoch(
            features.train.rows, cfg["train.batch_size"], hvd.size()))
        self.warmup_steps = warmup_steps(cfg, total_steps)
        self.correction = np.float32(logit_correction(features))
        self.optimizer = keras.optimizers.Adam(learning_rate=WarmupSchedule(
            cfg["train.learning_rate"] * hvd.size(), self.warmup_steps))
        self.optimizer.build(self.model.trainable_variables)
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.examples = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        # the best epoch so far on the validation rows: (epoch, val_auc, model weights)
        self.best: tuple[int, float, list] | None = None
        spec = {"user_vec": tf.TensorSpec([None, features.train.user_dim], tf.float32),
                "news_vec": tf.TensorSpec([None, features.train.news_dim], tf.float32)}
        for name, width in self.extra_inputs.items():
            spec[name] = (tf.TensorSpec([None, width], tf.float32) if width
                          else tf.TensorSpec([None], tf.int32))
        label = tf.TensorSpec([None], tf.float32)
        self.train_step = tf.function(self._train_step, input_signature=[spec, label])
        self.eval_step = tf.function(self._eval_step, input_signature=[spec, label])

    def variables(self) -> list:
        """Every variable that defines the training state, in a fixed order."""
        return list(self.model.variables) + list(self.optimizer.variables)

    def variable_names(self) -> list[str]:
        return [getattr(v, "path", v.name) for v in self.variables()]

    def _train_step(self, features, labels):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logits = tf.squeeze(self.model(features, training=True), -1)
            loss = tf.reduce_mean(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
            # the L2 penalty (train.l2), added inside the tape so it is differentiated
            total = loss + tf.add_n(self.model.losses) if self.model.losses else loss
        # One grouped allreduce per step: every Horovod collective costs about 5 ms here
        # (Gloo over TCP), so one is much cheaper than one per gradient. The embeddings'
        # gradients (IndexedSlices) are made dense to join that group.
        tape = self.hvd.DistributedGradientTape(tape, num_groups=1, sparse_as_dense=True)
        trainable = self.model.trainable_variables
        gradients = tape.gradient(total, backing(trainable))
        self.optimizer.apply_gradients(zip(gradients, trainable))
        count = tf.cast(tf.shape(labels)[0], tf.float64)
        self.loss_sum.assign_add(tf.cast(loss, tf.float64) * count)
        self.examples.assign_add(count)
        return loss

    def _eval_step(self, features, labels):
        import tensorflow as tf

        # corrected for the negative sampling, like the exported model: a calibrated loss
        logits = tf.squeeze(self.model(features, training=False), -1) + self.correction
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.sigmoid(logits), tf.reduce_sum(tf.cast(losses, tf.float64))

    def take_train_loss(self) -> tuple[float, float]:
        """(sum of example losses, examples) since the last call, on this rank."""
        result = float(self.loss_sum.numpy()), float(self.examples.numpy())
        self.loss_sum.assign(0.0)
        self.examples.assign(0.0)
        return result

    def keep_if_best(self, epoch: int, val_auc) -> bool:
        """Remember the model's weights if this epoch's validation AUC is the best so far."""
        if val_auc is None or not math.isfinite(val_auc):
            return False
        if self.best is not None and val_auc <= self.best[1]:
            return False
        self.best = (epoch, float(val_auc), [np.array(v.numpy()) for v in self.model.variables])
        return True

    def use_best(self) -> None:
        """Put the best epoch's weights back into the model (before the export)."""
        if self.best is not None:
            for variable, value in zip(self.model.variables, self.best[2]):
                variable.assign(value)

    def finalize(self) -> None:
        """The model to export: the best epoch's weights, with the logit corrected for the
        negative sampling (see logit_correction) so its output is a click probability on
        real traffic."""
        self.use_best()
        if self.correction:
            bias = self.model.get_layer("logit").bias
            bias.assign(bias.numpy() + self.correction)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Assign a checkpoint's values; shapes and dtypes must match variable by variable
        (names are not compared: Keras numbers auto-named objects per process). The best
        epoch's weights, when the checkpoint holds them, come after the training state."""
        variables = self.variables()
        best = checkpoint.header.get("best")
        arrays = checkpoint.arrays
        if best:
            kept = len(arrays) - len(self.model.variables)
            self.best = (int(best["epoch"]), float(best["val_auc"]), list(arrays[kept:]))
            checkpoint = Checkpoint(checkpoint.header, arrays[:kept])
        if len(checkpoint.arrays) != len(variables):
            raise UserInputError(f"checkpoint holds {len(checkpoint.arrays)} variables, this "
                                 f"model and optimizer {len(variables)}")
        for variable, value in zip(variables, checkpoint.arrays):
            if tuple(variable.shape) != value.shape:
                raise UserInputError(f"checkpoint variable {getattr(variable, 'path', '?')} has "
                                     f"shape {value.shape}, the model {tuple(variable.shape)}")
        for variable, value in zip(variables, checkpoint.arrays):
            variable.assign(value.astype(variable.dtype))

    def decorrelate_dropout(self, rank: int) -> None:
        """Give each rank its own dropout masks: the broadcast made the seed states equal."""
        for variable in self.model.variables:
            if "seed_generator" in getattr(variable, "path", ""):
                state = variable.numpy()  # [seed, counter]
                state[0] += rank * 1_000_003
                variable.assign(state)

    def broadcast_from_root(self) -> None:
        self.hvd.broadcast_variables(backing(self.variables()), root_rank=0)

    def snapshot(self, header: dict) -> Checkpoint:
        arrays = [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in self.variables()]
        if self.best is not None:
            header = dict(header, best={"epoch": self.best[0], "val_auc": self.best[1]})
            arrays = arrays + list(self.best[2])
        return Checkpoint(dict(header, variables=self.variable_names()), arrays)

    def weights_checksum(self) -> str:
        """sha256 of the trainable weights (equal on every rank after each step)."""
        digest = hashlib.sha256()
        for variable in self.model.trainable_variables:
            digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
        return digest.hexdigest()


# --------------------------------------------------------------------------- cross-rank sums

def allreduce_sum(hvd, values: np.ndarray, name: str) -> np.ndarray:
    import tensorflow as tf

    reduced = hvd.allreduce(tf.constant(np.asarray(values, dtype=np.float64)), op=hvd.Sum,
                            name=name)
    return reduced.numpy()


def validate(trainer: Trainer, plan: Plan, cfg: Config, hvd) -> dict:
    """Loss and AUC over the dev rows: each rank its shard, the sums merged by allreduce.

    No collective runs inside the loop, so shards of different sizes cannot hang it. With a
    `train.validation_rows` limit the reader uses one thread, so every epoch sees the same
    rows (the first row groups of each shard).
    """
    from dcn.metrics import HistogramAUC

    table = plan.features.valid
    if table is None:   # no rows held out (features.validation_hours: 0): nothing to judge
        return {"val_loss": None, "val_auc": None, "val_auc_error_bound": None, "val_rows": 0}
    limit = cfg["train.validation_rows"]
    per_rank = math.ceil(limit / hvd.size()) if limit > 0 else None
    histogram = HistogramAUC(bins=AUC_BINS, clip=True)
    loss_sum, seen = 0.0, 0
    with D.petastorm_batches(table.uri, table.user_dim, table.news_dim, rank=hvd.rank(),
                             size=hvd.size(), batch_size=cfg["evaluate.batch_size"],
                             reader_threads=1 if per_rank else cfg["train.reader_threads"],
                             endless=False, shuffle=False,
                             extra_inputs=trainer.extra_inputs) as batches:
        for features, labels in batches:
            if per_rank is not None and seen >= per_rank:
                break
            if per_rank is not None and seen + len(labels) > per_rank:
                keep = per_rank - seen
                features = {k: v[:keep] for k, v in features.items()}
                labels = labels[:keep]
            probabilities, batch_loss = trainer.eval_step(features, labels)
            histogram.add(labels, probabilities.numpy())
            loss_sum += float(batch_loss)
            seen += int(len(labels))
    totals = allreduce_sum(hvd, np.concatenate([[loss_sum, seen], histogram.pos, histogram.neg]),
                           "validation.sums")
    histogram.pos = totals[2:2 + AUC_BINS].round().astype(np.int64)
    histogram.neg = totals[2 + AUC_BINS:].round().astype(np.int64)
    rows = int(round(totals[1]))
    return {"val_loss": totals[0] / rows if rows else math.nan, "val_auc": histogram.result(),
            "val_auc_error_bound": histogram.error_bound(), "val_rows": rows}


# --------------------------------------------------------------------------- logging

class Progress:
    """Rank 0's per-epoch log lines and TensorBoard scalars."""

    def __init__(self, cfg: Config, plan: Plan, active: bool):
        self.active = active
        self.writer = None
        if active:
            self.writer = _summary_writer(tensorboard_dir(cfg, plan.run_key))

    def epoch(self, record: dict, total_epochs: int) -> None:
        if not self.active:
            return
        record = {k: (math.nan if v is None else v) for k, v in record.items()}
        log.info("epoch %d/%d: step %d, %d steps in %.1fs, %.1f steps/s, %.0f examples/s, "
                 "loss %.4f, val loss %.4f, val AUC %.4f", record["epoch"], total_epochs,
                 record["global_step"], record["steps"], record["seconds"],
                 record["steps_per_second"], record["examples_per_second"], record["train_loss"],
                 record["val_loss"], record["val_auc"])
        self.scalars(record["global_step"], {
            "train/loss": record["train_loss"], "val/loss": record["val_loss"],
            "val/auc": record["val_auc"],
            "speed/examples_per_second": record["examples_per_second"],
            "speed/steps_per_second": record["steps_per_second"]})

    def scalars(self, step: int, values: dict) -> None:
        if self.writer is None:
            return
        import tensorflow as tf

        with self.writer.as_default(step=step):
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    tf.summary.scalar(name, value)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _summary_writer(uri: str):
    """A TensorBoard writer at `uri` (file:// becomes a local path for TensorFlow)."""
    import tensorflow as tf

    target = uri[len("file://"):] if uri.startswith("file://") else uri
    try:
        return tf.summary.create_file_writer(target)
    except Exception as err:  # noqa: BLE001  e.g. a scheme this TensorFlow cannot write
        log.warning("no TensorBoard summaries (cannot write %s: %s)", uri, err)
        return None


# --------------------------------------------------------------------------- the loop

def _header(plan: Plan, trainer: Trainer, global_step: int, epoch: int, history: list,
            seconds: float) -> dict:
    from dcn.model import model_spec

    return {"run_key": plan.run_key, "global_step": global_step, "epoch": epoch,
            "steps_per_epoch": plan.steps_per_epoch, "history": history,
            "spec": model_spec(trainer.model), "seconds": seconds,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def epoch_record(hvd, trainer: Trainer, epoch: int, global_step: int, steps: int, batch: int,
                 seconds: float) -> dict:
    """Speed and the train loss of an epoch, the loss averaged over all ranks' examples."""
    loss_sum, examples = allreduce_sum(hvd, trainer.take_train_loss(), "train.loss")
    return {"epoch": epoch, "global_step": global_step, "steps": steps,
            "seconds": round(seconds, 3),
            "steps_per_second": steps / seconds if seconds else math.nan,
            "examples_per_second": steps * batch * hvd.size() / seconds if seconds else math.nan,
            "train_loss": loss_sum / examples if examples else math.nan}


def run_epochs(cfg: Config, plan: Plan, trainer: Trainer, hvd, decide: RootDecision,
               progress: Progress) -> tuple[int, list, float]:
    """Train from the plan's resume point to the last epoch; returns (global step, history,
    training seconds including earlier attempts)."""
    spe, epochs = plan.steps_per_epoch, cfg["train.epochs"]
    resume = plan.resume or {}
    global_step = int(resume.get("global_step", 0))
    history = list(resume.get("history", []))
    seconds_before = float(resume.get("seconds", 0.0))
    started = time.perf_counter()
    store = CheckpointStore(plan.checkpoints, cfg["train.keep_checkpoints"])
    every = cfg["train.checkpoint_every_steps"]
    batch, size = cfg["train.batch_size"], hvd.size()

    def save(epoch_done: int):
        header = _header(plan, trainer, global_step, epoch_done, history,
                         seconds_before + time.perf_counter() - started)
        decide("checkpoint", lambda: store.save(trainer.snapshot(header)))

    table = plan.features.train
    shard_bytes = D.shard_bytes(table, size)
    cache = 0 < shard_bytes <= cfg["train.cache_in_memory_mb"] * 2**20
    if hvd.rank() == 0:
        log.info("train rows: %s after the first epoch (shard about %.0f MB decoded, "
                 "train.cache_in_memory_mb %d)", "kept in memory" if cache else "streamed",
                 shard_bytes / 2**20, cfg["train.cache_in_memory_mb"])
    patience = cfg["train.patience"]
    with D.petastorm_batches(table.uri, table.user_dim, table.news_dim, rank=hvd.rank(),
                             size=size, batch_size=batch,
                             reader_threads=cfg["train.reader_threads"],
                             shuffle_buffer=cfg["train.shuffle_buffer"],
                             cache=cache, extra_inputs=trainer.extra_inputs) as batches:
        for epoch in range(global_step // spe, epochs):
            first = global_step - epoch * spe
            trainer.take_train_loss()
            epoch_start = time.perf_counter()
            for _ in range(first, spe):
                features, labels = next(batches)
                trainer.train_step(features, labels)
                global_step += 1
                if every > 0 and global_step % every == 0 and global_step % spe != 0:
                    save(epoch)
            record = epoch_record(hvd, trainer, epoch + 1, global_step, spe - first, batch,
                                  time.perf_counter() - epoch_start)
            record.update(validate(trainer, plan, cfg, hvd))
            record["best"] = trainer.keep_if_best(epoch + 1, record["val_auc"])
            history.append(record)
            progress.epoch(record, epochs)
            save(epoch + 1)
            # every rank sees the same allreduced AUC, so all stop at the same epoch
            if (patience and epoch + 1 < epochs and trainer.best is not None
                    and epoch + 1 - trainer.best[0] >= patience):
                if hvd.rank() == 0:
                    log.info("early stop after epoch %d: validation AUC has not improved for "
                             "%d epochs (best %.4f at epoch %d)", epoch + 1, patience,
                             trainer.best[1], trainer.best[0])
                break
    return global_step, history, seconds_before + time.perf_counter() - started


# --------------------------------------------------------------------------- entry points

def final_metrics(history: list) -> dict:
    """The exported epoch's metrics: the best on the validation rows, else the last."""
    chosen = [r for r in history if r.get("best")] or history[-1:]
    last = chosen[-1] if chosen else {}
    metrics = {k: last.get(k) for k in ("train_loss", "val_loss", "val_auc", "val_auc_error_bound")}
    metrics["epoch"] = last.get("epoch")
    metrics["epochs_run"] = history[-1].get("epoch") if history else None
    return metrics


def export(cfg: Config, plan: Plan, trainer: Trainer, metrics: dict, size: int,
           seconds: float, global_step: int) -> str:
    from dcn.export import export_model
    from dcn.model import model_spec

    features = plan.features
    metadata = {
        "logit_correction": float(trainer.correction), "sampling": features.sampling,
        "warmup_steps": trainer.warmup_steps,
        "user_dim": features.train.user_dim, "news_dim": features.train.news_dim,
        "model_spec": model_spec(trainer.model), "config": cfg.to_dict(),
        "features": {"run_id": features.run_id, "path": features.path,
                     "train_uri": features.train.uri, "train_rows": features.train.rows,
                     "dev_uri": features.dev.uri, "dev_rows": features.dev.rows,
                     "valid_rows": features.valid.rows if features.valid else 0,
                     **features.lineage},
        "news_vectors": features.lineage.get("news_vectors"),
        "metrics": metrics, "horovod_size": size, "seconds": round(seconds, 3),
        "run_key": plan.run_key, "global_step": global_step, "epochs": cfg["train.epochs"],
    }
    version = export_model(cfg, trainer.model, metadata)
    CheckpointStore(plan.checkpoints, cfg["train.keep_checkpoints"]).write_marker(
        FINISHED_NAME, {"version": version, "run_key": plan.run_key, "metrics": metrics,
                        "global_step": global_step, "seconds": round(seconds, 3),
                        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return version


def _dump_weights(trainer: Trainer, hvd, global_step: int) -> None:
    folder = os.environ.get(WEIGHTS_DUMP_ENV)
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank-{hvd.rank()}.json"), "w", encoding="utf-8") as out:
        json.dump({"rank": hvd.rank(), "size": hvd.size(), "global_step": global_step,
                   "sha256": trainer.weights_checksum()}, out)


def train(cfg: Config, force: bool = False) -> dict:
    """Train (or resume, or find the finished run) on every rank; returns the run summary.

    Call it in every Horovod process: horovodrun, horovod.spark.run, or plain Python (one rank).
    """
    _setup_logging()
    configure_threads(cfg["train.threads_per_rank"])
    hvd = init_horovod()
    decide = RootDecision(hvd)
    started = time.perf_counter()
    plan, checkpoint = _prepare(cfg, hvd, decide, force)
    if plan.finished:
        return _finished_summary(plan, hvd)

    if plan.resume:
        # On every rank, not only on rank 0: Horovod matches collectives by tensor name, and
        # Keras names variables by counting the objects built so far in the process.
        check_checkpoint_width(plan.resume, plan.features, plan.checkpoints)
    trainer = Trainer(cfg, plan.features, hvd)
    if plan.resume:  # only rank 0 holds the checkpoint; the broadcast below shares it
        decide("restore", lambda: trainer.restore(checkpoint))
    trainer.broadcast_from_root()
    trainer.decorrelate_dropout(hvd.rank())
    resumed_from = int((plan.resume or {}).get("global_step", 0))
    if hvd.rank() == 0:
        log.info("run %s: %d rank(s), %d steps/epoch x %d epochs, %s",
                 plan.run_key, hvd.size(), plan.steps_per_epoch, cfg["train.epochs"],
                 f"resuming at global step {resumed_from}" if plan.resume else "from scratch")
    progress = Progress(cfg, plan, active=hvd.rank() == 0)
    try:
        global_step, history, train_seconds = run_epochs(cfg, plan, trainer, hvd, decide,
                                                         progress)
    finally:
        progress.close()
    if not history:  # resumed a run whose last epoch ended just before the export
        history = [validate(trainer, plan, cfg, hvd)]
    metrics = final_metrics(history)
    trainer.finalize()     # on every rank: they all hold the model that is exported
    _dump_weights(trainer, hvd, global_step)
    version = decide("export", lambda: export(cfg, plan, trainer, metrics, hvd.size(),
                                              train_seconds, global_step))
    summary = {
        "status": "trained", "version": version, "run_key": plan.run_key,
        "features_run_id": plan.features.run_id, "train_uri": plan.features.train.uri,
        "train_rows": plan.features.train.rows, "ranks": hvd.size(),
        "steps_per_epoch": plan.steps_per_epoch, "epochs": cfg["train.epochs"],
        "global_step": global_step, "resumed_from_step": resumed_from, "metrics": metrics,
        "history": history, "train_seconds": round(train_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3), "checkpoints": plan.checkpoints,
    }
    if hvd.rank() == 0:
        log.info("exported model version %s (val AUC %.4f)", version,
                 metrics["val_auc"] if metrics["val_auc"] is not None else math.nan)
    return summary


def train_from_dict(cfg_dict: dict, force: bool = False) -> dict:
    """:func:`train` on a plain config dict: what horovod.spark.run ships to each task."""
    return train(Config(cfg_dict), force=force)


def _prepare(cfg: Config, hvd, decide: RootDecision, force: bool):
    """Rank 0 makes the plan (and loads the checkpoint); every rank gets the plan."""
    held: dict = {}

    def plan_on_root():
        plan, held["checkpoint"] = make_plan(cfg, hvd.size(), force)
        return plan

    plan = decide("plan", plan_on_root)
    return plan, held.get("checkpoint")


def _finished_summary(plan: Plan, hvd) -> dict:
    finished = plan.finished
    if hvd.rank() == 0:
        log.info("run %s already finished: model version %s (rerun with --force to train "
                 "again)", plan.run_key, finished["version"])
    return {"status": "already_trained", "version": finished["version"],
            "run_key": plan.run_key, "features_run_id": plan.features.run_id,
            "metrics": finished.get("metrics"), "global_step": finished.get("global_step"),
            "finished_at": finished.get("finished_at"), "checkpoints": plan.checkpoints}


def _setup_logging() -> None:
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="train again even if this run (same data and settings) finished")


def main(argv: list[str] | None = None) -> int:
    """Every rank trains; only rank 0 prints the summary."""

    def job(cfg: Config, args: argparse.Namespace):
        summary = train(cfg, force=args.force)
        import horovod.tensorflow as hvd

        return summary if hvd.rank() == 0 else None

    return run_main("Train the DCN click model with Horovod on the current features.",
                    job, argv, extra_arguments=add_train_arguments)


if __name__ == "__main__":
    sys.exit(main())
