"""Helper of spark-submit.sh: turns a job's `--config`/`--set` arguments into the
spark-submit options that must be known before the JVM starts (master, driver memory, the
environment shipped to the executors: common/environment.py).

    python -m common.launch [--config FILE] [--set k=v ...] [other job arguments]

prints one option per line. Job arguments it does not know are ignored (the job parses them).
"""
from __future__ import annotations

import argparse
import sys

from common.config import add_config_arguments, config_from_args
from common.errors import ConfigError
from common.environment import PackError, submit_options


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    add_config_arguments(parser)
    args, _unknown = parser.parse_known_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        print(f"error: configuration: {err}", file=sys.stderr)
        return 2
    options = ["--master", cfg["spark.master"], "--driver-memory", cfg["spark.driver_memory"]]
    try:
        options += submit_options(cfg["spark.ship_environment"], sys.prefix)
    except PackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for option in options:
        print(option)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
