"""The function each horovod.spark rank runs first: it puts the project on the rank's path,
then trains.

horovod.spark starts every rank as a new process (`python -m horovod.spark.task.gloo_exec_fn`)
beside a Spark task. Spark's own Python workers find the `--py-files` bundle because Spark adds
it to their `sys.path`; the rank process does not, so it cannot import the project's packages.
This module imports nothing from the project, and jobs/train.py registers it with cloudpickle
to travel by value: the rank unpickles it without the project, puts the bundle (fetched into
the executor's working directory, HOROVOD_SPARK_WORK_DIR) on `sys.path`, and only then imports
the training code. README.md, "Running on a cluster", is the specification.
"""
from __future__ import annotations


def train_in_rank(bundle_names: list[str], cfg_dict: dict, force: bool,
                  as_of: str | None = None) -> dict:
    import os
    import sys

    work_dir = os.environ.get("HOROVOD_SPARK_WORK_DIR", os.getcwd())
    for name in reversed(bundle_names):
        path = os.path.join(work_dir, name)
        if os.path.exists(path) and path not in sys.path:
            sys.path.insert(0, path)
    from dcn.train import train_from_dict

    return train_from_dict(cfg_dict, force, as_of)
