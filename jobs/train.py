"""train: the DCN trained by Horovod processes running as Spark tasks.

    ./spark-submit.sh train [--config FILE] [--set key=value ...] [--force] [--as-of T]

Runs `dcn.train.train` in `train.spark_num_proc` Horovod processes with `horovod.spark.run`
(Gloo), one per Spark task, and prints rank 0's summary: the same training, checkpoints,
resume and finished-run detection as `python -m dcn.train` / `horovodrun` (dcn/train.py).

How the code reaches the ranks on a cluster:
- the interpreter is the executors' (`spark.pyspark.python`, `./environment/bin/python` when
  the launcher ships a packed environment), not the driver's path;
- the entry function (dcn/rank_entry.py) travels by value and puts the `--py-files` bundle on
  the rank's `sys.path` before it imports the training code.

Each Spark task hosts one rank, so the cluster needs `train.spark_num_proc` free task slots at
once. That is not judged from `defaultParallelism` (meaningless under dynamic allocation):
Horovod waits up to `train.spark_start_timeout_s` for the tasks to start, then this job fails
with a message that says so.
"""
from __future__ import annotations

import os
import sys

from common.cli import run_main
from common.errors import UserInputError
from common.config import Config
from common.dates import optional_moment
from common.spark import get_spark
from dcn import rank_entry
from dcn.train import WEIGHTS_DUMP_ENV, add_train_arguments

# Environment the training processes get on top of the Spark worker's.
FORWARDED_ENV = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", WEIGHTS_DUMP_ENV)


def rank_python(spark) -> str:
    """The interpreter of the executors, which the ranks must use as well."""
    return (spark.conf.get("spark.pyspark.python", None) or os.environ.get("PYSPARK_PYTHON")
            or sys.executable)


def bundle_names(spark) -> list[str]:
    """File names of the --py-files, as each executor's working directory holds them."""
    shipped = spark.conf.get("spark.submit.pyFiles", "") or ""
    return [os.path.basename(path) for path in shipped.split(",") if path]


def run(cfg: Config, spark=None, force: bool = False, as_of: str | None = None) -> dict:
    """`as_of`: the moment whose rows to train on, as the command line gives it (each rank
    parses it; None: the newest rows)."""
    import cloudpickle
    import horovod.spark
    from horovod.runner.common.util.timeout import TimeoutException

    num_proc, timeout = cfg["train.spark_num_proc"], cfg["train.spark_start_timeout_s"]
    spark = spark or get_spark(cfg, "train")
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    cloudpickle.register_pickle_by_value(rank_entry)
    try:
        results = horovod.spark.run(rank_entry.train_in_rank,
                                    args=(bundle_names(spark), cfg.to_dict(), force, as_of),
                                    num_proc=num_proc, env=env, verbose=1,
                                    start_timeout=timeout, executable=rank_python(spark))
    except TimeoutException as err:
        raise UserInputError(
            f"train.spark_num_proc is {num_proc}: Horovod needs that many Spark tasks running "
            f"at once and they did not all start within train.spark_start_timeout_s "
            f"({timeout} s). Give the job more executor cores or lower spark_num_proc. "
            f"({err})") from None
    finally:
        cloudpickle.unregister_pickle_by_value(rank_entry)
    summary = dict(results[0])
    summary["spark_num_proc"] = num_proc
    return summary


def _checked(as_of: str | None) -> str | None:
    """The --as-of text, checked here so that a typo fails before Spark starts."""
    optional_moment(as_of, "--as-of")
    return as_of


def main(argv: list[str] | None = None) -> int:
    return run_main("Train the DCN with Horovod processes running as Spark tasks.",
                    lambda cfg, args: run(cfg, force=args.force,
                                          as_of=_checked(args.as_of)), argv,
                    extra_arguments=add_train_arguments)


if __name__ == "__main__":
    sys.exit(main())
