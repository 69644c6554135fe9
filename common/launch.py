"""Helper of spark-submit.sh: turns a job's `--config`/`--set` arguments into the
spark-submit options that must be known before the JVM starts (master, driver memory).

    python -m common.launch [--config FILE] [--set k=v ...] [other job arguments]

prints one option per line. Job arguments it does not know are ignored (the job parses them).
"""
from __future__ import annotations

import argparse
import sys

from common.config import ConfigError, add_config_arguments, config_from_args


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    add_config_arguments(parser)
    args, _unknown = parser.parse_known_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        print(f"configuration error: {err}", file=sys.stderr)
        return 2
    for option in ("--master", cfg["spark.master"], "--driver-memory", cfg["spark.driver_memory"]):
        print(option)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
