"""train: the DCN trained by Horovod processes running as Spark tasks.

    ./spark-submit.sh train [--config FILE] [--set key=value ...] [--force]

Runs `dcn.train.train` in `train.spark_num_proc` Horovod processes with `horovod.spark.run`
(Gloo), one per Spark task, and prints rank 0's summary: the same training, checkpoints,
resume and finished-run detection as `python -m dcn.train` / `horovodrun` (dcn/train.py).

The executors import the project from the bundle spark-submit.sh ships with `--py-files`:
horovod.spark starts each training process with the Spark worker's environment, whose
PYTHONPATH holds that bundle. The function handed to Horovod lives in dcn.train (an importable
module) so it is pickled by reference, not by value. Each Spark task hosts one rank, so the
cluster needs `train.spark_num_proc` free task slots at once.
"""
from __future__ import annotations

import os
import sys

from common.cli import UserInputError, run_main
from common.config import Config
from common.spark import get_spark
from dcn.train import WEIGHTS_DUMP_ENV, add_train_arguments, train_from_dict

# Environment the training processes get on top of the Spark worker's.
FORWARDED_ENV = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", WEIGHTS_DUMP_ENV)


def run(cfg: Config, spark=None, force: bool = False) -> dict:
    import horovod.spark

    spark = spark or get_spark(cfg, "train")
    num_proc = cfg["train.spark_num_proc"]
    slots = spark.sparkContext.defaultParallelism
    if num_proc < 1:
        raise UserInputError(f"train.spark_num_proc must be at least 1, got {num_proc}")
    if num_proc > slots:
        raise UserInputError(f"train.spark_num_proc is {num_proc} but Spark has {slots} task "
                             "slots; every rank needs its own task at the same time")
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    results = horovod.spark.run(train_from_dict, args=(cfg.to_dict(), force),
                                num_proc=num_proc, env=env, verbose=1)
    summary = dict(results[0])
    summary["spark_num_proc"] = num_proc
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_main("Train the DCN with Horovod processes running as Spark tasks.",
                    lambda cfg, args: run(cfg, force=args.force), argv,
                    extra_arguments=add_train_arguments)


if __name__ == "__main__":
    sys.exit(main())
