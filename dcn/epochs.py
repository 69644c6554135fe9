"""The epochs of a training run on every rank: the steps, checkpoints, validation and early
stop of each epoch, rank 0's progress log and TensorBoard scalars, and the export.

README.md, "Training", is the specification.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np

from common import outputs
from common.config import Config
from dcn import data as D
from dcn import registry, shards
from dcn.checkpoints import FINISHED_NAME, CheckpointStore
from dcn.landmarks import retrieval_for_export
from dcn.export import export_model
from dcn.horovod_setup import RootDecision, allreduce_sum
from dcn.metrics import HistogramAUC
from dcn.plan import Plan
from dcn.trainer import Trainer

log = logging.getLogger("dcn.train")  # the training's one logger (dcn.train sets it up)

AUC_BINS = 10_000


def validate(trainer: Trainer, plan: Plan, cfg: Config, hvd) -> dict:
    """Loss and AUC over the dev rows: each rank its shard, the sums merged by allreduce.

    No collective runs inside the loop, so shards of different sizes cannot hang it. With a
    `train.validation_rows` limit the reader uses one thread, so every epoch sees the same
    rows (the first row groups of each shard).
    """
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


class Progress:
    """Rank 0's per-epoch log lines and TensorBoard scalars."""

    def __init__(self, cfg: Config, plan: Plan, active: bool):
        self.active = active
        self.writer = None
        if active:
            self.writer = _summary_writer(outputs.tensorboard_dir(cfg, plan.run_key))

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

    def steps(self, global_step: int, trainer: Trainer, examples_per_step: int,
              mark: tuple[float, int]) -> tuple[float, int]:
        """Log examples/s since `mark` (time, step) and the epoch's running loss so far on
        this rank; returns the new mark."""
        now = time.perf_counter()
        if self.active:
            since, step_then = mark
            loss_sum, seen = float(trainer.loss_sum.numpy()), float(trainer.examples.numpy())
            log.info("step %d: %.0f examples/s, running loss %.4f", global_step,
                     (global_step - step_then) * examples_per_step / max(now - since, 1e-9),
                     loss_sum / seen if seen else math.nan)
        return now, global_step

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
    # Petastorm streams the shard every epoch or, when its decoded rows fit in
    # train.cache_in_memory_mb, only the first: later epochs then permute the kept rows in
    # memory and skip decoding Parquet, a large part of a step's CPU.
    shard_bytes = shards.shard_bytes(table, size)
    cache = 0 < shard_bytes <= cfg["train.cache_in_memory_mb"] * 2**20
    if hvd.rank() == 0:
        log.info("train rows: %s after the first epoch (shard about %.0f MB decoded, "
                 "train.cache_in_memory_mb %d)", "kept in memory" if cache else "streamed",
                 shard_bytes / 2**20, cfg["train.cache_in_memory_mb"])
    patience = cfg["train.patience"]
    log_every, mark = cfg["train.log_every_steps"], (time.perf_counter(), global_step)
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
                if log_every and global_step % log_every == 0:
                    mark = progress.steps(global_step, trainer, batch * size, mark)
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
        "news_vectors": features.lineage.get("news_vectors"), "as_of": features.lineage.get("as_of"),
        "metrics": metrics, "horovod_size": size, "seconds": round(seconds, 3),
        "run_key": plan.run_key, "global_step": global_step, "epochs": cfg["train.epochs"],
    }
    retrieval = retrieval_for_export(cfg, trainer.model, features.lineage.get("as_of"))
    if retrieval is not None:
        metadata["retrieval"] = {"teacher": retrieval.teacher,
                                 "landmark_users": len(retrieval.landmark_users),
                                 "landmark_news": retrieval.landmark_news}
    version = export_model(cfg, trainer.model, metadata,
                           protected=registry.Registry(cfg).protected_versions(),
                           retrieval=retrieval)
    CheckpointStore(plan.checkpoints, cfg["train.keep_checkpoints"]).write_marker(
        FINISHED_NAME, {"version": version, "run_key": plan.run_key, "metrics": metrics,
                        "global_step": global_step, "seconds": round(seconds, 3),
                        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return version
