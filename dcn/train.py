"""Distributed training of the Deep & Cross Network with Horovod, fed by Petastorm.

    python -m dcn.train [--config FILE] [--set key=value ...] [--force] [--as-of T]
    horovodrun -np 4 -H host1:2,host2:2 --gloo python -m dcn.train [...]
    ./spark-submit.sh train [...]                   (jobs/train.py: horovod.spark.run)

Every rank runs :func:`train` on its own shard of the `train/` rows of the current
build_features run as of T (`--as-of`; default: the newest as-of): rank 0 makes the plan (dcn/plan.py), then every rank builds its Trainer
(dcn/trainer.py) and runs the epochs (dcn/epochs.py), checkpointing into the run's folder
(dcn/checkpoints.py). README.md, "Training", is the specification.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import sys
import time

from common.cli import run_main
from common.config import Config
from common.dates import optional_moment
from dcn import registry
from dcn.epochs import Progress, export, final_metrics, run_epochs, validate
from dcn.horovod_setup import RootDecision, configure_threads, init_horovod
from dcn.export import load_metadata, model_folder
from dcn.plan import Plan, check_checkpoint_width, make_plan
from dcn.trainer import Trainer

log = logging.getLogger("dcn.train")

# Test hook: when set, every rank writes a checksum of its final weights into this folder.
WEIGHTS_DUMP_ENV = "NEWSREC_TRAIN_WEIGHTS_DUMP"


def _dump_weights(trainer: Trainer, hvd, global_step: int) -> None:
    folder = os.environ.get(WEIGHTS_DUMP_ENV)
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank-{hvd.rank()}.json"), "w", encoding="utf-8") as out:
        json.dump({"rank": hvd.rank(), "size": hvd.size(), "global_step": global_step,
                   "sha256": trainer.weights_checksum()}, out)


def train(cfg: Config, force: bool = False, as_of: dt.datetime | None = None) -> dict:
    """Train (or resume, or find the finished run) on every rank; returns the run summary.

    Call it in every Horovod process: horovodrun, horovod.spark.run, or plain Python (one rank).
    """
    _setup_logging()
    configure_threads(cfg["train.threads_per_rank"])
    hvd = init_horovod()
    decide = RootDecision(hvd)
    started = time.perf_counter()
    plan, checkpoint = _prepare(cfg, hvd, decide, force, as_of)
    if plan.finished:
        registered = decide("register", lambda: _register(cfg, plan.finished["version"], None))
        return dict(_finished_summary(plan, hvd), registered=registered)

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
    registered = decide("register", lambda: _register(cfg, version, history))
    summary = {
        "status": "trained", "version": version, "run_key": plan.run_key,
        "features_run_id": plan.features.run_id, "train_uri": plan.features.train.uri,
        "train_rows": plan.features.train.rows, "ranks": hvd.size(),
        "steps_per_epoch": plan.steps_per_epoch, "epochs": cfg["train.epochs"],
        "global_step": global_step, "resumed_from_step": resumed_from, "metrics": metrics,
        "history": history, "train_seconds": round(train_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3), "checkpoints": plan.checkpoints,
        "as_of": plan.features.lineage.get("as_of"), "registered": registered,
    }
    if hvd.rank() == 0:
        log.info("exported model version %s (val AUC %.4f)", version,
                 metrics["val_auc"] if metrics["val_auc"] is not None else math.nan)
    return summary


def train_from_dict(cfg_dict: dict, force: bool = False, as_of: str | None = None) -> dict:
    """:func:`train` on a plain config dict and as-of text: what horovod.spark.run ships to
    each task."""
    return train(Config(cfg_dict), force=force, as_of=optional_moment(as_of, "--as-of"))


def _prepare(cfg: Config, hvd, decide: RootDecision, force: bool, as_of: dt.datetime | None):
    """Rank 0 makes the plan (and loads the checkpoint); every rank gets the plan."""
    held: dict = {}

    def plan_on_root():
        registry.tracking_uri(cfg)  # a registry it cannot reach fails now, not after training
        plan, held["checkpoint"] = make_plan(cfg, hvd.size(), force, as_of)
        return plan

    plan = decide("plan", plan_on_root)
    return plan, held.get("checkpoint")


def _register(cfg: Config, version: str, history: list | None) -> dict:
    """Rank 0: the export as a candidate version of the registry (not served: promote)."""
    folder = model_folder(cfg, version)
    return registry.Registry(cfg).record_training(version, folder, load_metadata(folder),
                                                  history).describe()


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
    parser.add_argument("--as-of", help="train on the rows built as of this moment, YYYY-MM-DD "
                                        "or YYYY-MM-DDTHH:MM:SS (default: the newest)")


def main(argv: list[str] | None = None) -> int:
    """Every rank trains; only rank 0 prints the summary."""

    def job(cfg: Config, args: argparse.Namespace):
        summary = train(cfg, force=args.force, as_of=optional_moment(args.as_of, "--as-of"))
        import horovod.tensorflow as hvd

        return summary if hvd.rank() == 0 else None

    return run_main("Train the DCN click model with Horovod on the current features.",
                    job, argv, extra_arguments=add_train_arguments)


if __name__ == "__main__":
    sys.exit(main())
