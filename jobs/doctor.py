"""doctor: what the executors of a cluster run, compared with the driver.

    ./spark-submit.sh doctor [--config FILE] [--set key=value ...] [-- --master URL]

Runs a few tiny tasks and reports, for the driver and for each executor host: the Python
interpreter, where the project's packages were imported from, and the versions of the
packages the jobs need. It fails (exit 1, one line) when an executor cannot import the
project or runs other package versions than the driver, which is what happens when the
environment is not shipped (spark.ship_environment) and the nodes lack this venv, and when a
path of the config exists on the driver but not on the executors (the check every job makes
when its session starts, common/spark.py). The report is printed in every case.
"""
from __future__ import annotations

import json
import sys

from common.cli import run_main
from common.errors import UserInputError
from common.config import Config
from common.spark import check_paths_visible, get_spark

PACKAGES = ("numpy", "pyarrow", "pandas", "tensorflow", "horovod", "petastorm", "pyspark")
PROBE_TASKS = 16


def describe_python() -> dict:
    """This process's interpreter, project location and package versions."""
    import importlib
    import importlib.metadata
    import os
    import socket

    report = {"host": socket.gethostname(), "python": sys.executable,
              "prefix": sys.prefix, "version": sys.version.split()[0], "cwd": os.getcwd()}
    try:
        report["project"] = os.path.dirname(os.path.dirname(
            importlib.import_module("dcn.model").__file__))
    except ImportError as err:
        report["project"] = f"not importable: {err}"
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(
                "tensorflow-cpu" if name == "tensorflow" else name)
        except importlib.metadata.PackageNotFoundError:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = None
    report["packages"] = versions
    return report


def run(cfg: Config, spark=None) -> dict:
    spark = spark or get_spark(cfg, "doctor", check_paths=False)
    driver = describe_python()
    seen = spark.sparkContext.parallelize(range(PROBE_TASKS), PROBE_TASKS) \
        .mapPartitions(lambda _: [describe_python()]).collect()
    executors = {}
    for report in seen:   # one entry per distinct interpreter and host
        executors[(report["host"], report["python"])] = report
    summary = {"master": spark.sparkContext.master, "driver": driver,
               "executors": sorted(executors.values(), key=lambda r: (r["host"], r["python"]))}
    print(json.dumps(summary, indent=2, sort_keys=True))
    for report in summary["executors"]:
        if report["project"].startswith("not importable"):
            raise UserInputError(f"executor on {report['host']} ({report['python']}) cannot "
                                 f"import the project: {report['project']}")
        differ = {name: (driver["packages"][name], version)
                  for name, version in report["packages"].items()
                  if version != driver["packages"][name]}
        if differ:
            listed = ", ".join(f"{name} {d} on the driver, {e} on the executor"
                               for name, (d, e) in sorted(differ.items()))
            raise UserInputError(f"executor on {report['host']} ({report['python']}) runs other "
                                 f"packages than the driver: {listed}. Ship the driver's "
                                 "environment: --set spark.ship_environment=pack")
    if not spark.sparkContext.master.startswith("local"):
        check_paths_visible(spark, cfg)
    return None


def main(argv: list[str] | None = None) -> int:
    return run_main("Report what the executors run, compared with the driver.",
                    lambda cfg, args: run(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())
