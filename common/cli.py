"""Entry-point plumbing shared by every job: `--config`/`--set`, clear errors, stage timing."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from typing import Callable

from common import storage
from common.config import Config, add_config_arguments, config_from_args
from common.errors import ConfigError, RunNotFound, UserInputError


# spark-submit runs the Python driver with its stderr merged into its stdout, so an error line
# printed there would land among the job's output. The launcher (spark-submit.sh) names a file
# here, and prints what the job wrote into it on its own stderr once spark-submit has ended.
ERROR_FILE_ENV = "NEWSREC_ERROR_FILE"


def report_error(message: str) -> None:
    """Print one `error: ...` line where the user sees errors: stderr."""
    line = f"error: {message}"
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    else:
        print(line, file=sys.stderr, flush=True)


# Where the jobs' progress lines go under spark-submit.sh, which shows the file on its stderr
# as it grows (the driver's own stderr would land in spark-submit's stdout).
LOG_FILE_ENV = "NEWSREC_LOG_FILE"


def progress_log() -> logging.Logger:
    """The `newsrec` logger: one short line per finished stage, at INFO, on stderr (or the
    launcher's file), never through Spark's logging."""
    logger = logging.getLogger("newsrec")
    if not logger.handlers:
        path = os.environ.get(LOG_FILE_ENV)
        handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class Stage:
    """A running stage; the code inside sets `rows` when it knows how many it made."""
    rows: int | None = None


class StageTimer:
    """Wall-clock seconds per named stage, in the order the stages ran; each finished stage
    logs `[job] stage: 12.3 s, 51,282 rows` (progress_log)."""

    def __init__(self, job: str = "newsrec"):
        self.job = job
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        stage = Stage()
        try:
            yield stage
        finally:
            took = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + took, 3)
            rows = f", {stage.rows:,} rows" if stage.rows is not None else ""
            progress_log().info("[%s] %s: %.1f s%s", self.job, name, took, rows)


@contextmanager
def abandoned_on_failure():
    """However a job fails, delete the runs it had begun and not published, and their
    leases: a later run neither waits for them nor finds their half-written files."""
    try:
        yield
    except BaseException:
        storage.abandon_unfinished_runs()
        raise


def run_main(description: str, job: Callable[[Config, argparse.Namespace], dict | None],
             argv: list[str] | None = None,
             extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """Parse arguments, load the config, run `job`, print its summary as JSON.

    Returns the process exit code: 0 on success, 2 for a bad config, 1 for bad input.
    """
    parser = argparse.ArgumentParser(description=description)
    add_config_arguments(parser)
    if extra_arguments:
        extra_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        report_error(f"configuration: {err}")
        return 2
    try:
        storage.check_writable_folder(cfg["paths.work"], "paths.work")
        with abandoned_on_failure():
            summary = job(cfg, args)
    except (UserInputError, ConfigError, RunNotFound) as err:
        report_error(str(err))
        return 1
    if summary is not None:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    return 0


def printed_summary(stdout: str) -> dict:
    """The JSON summary `run_main` printed last in a job's output (some jobs print a table
    before it): for scripts and tests that run jobs through spark-submit."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))
