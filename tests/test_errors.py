"""Failures a user can cause, run through ./spark-submit.sh as a user would: each ends in one
`error:` line on stderr (none on stdout), a non-zero exit, and nothing published."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from common import storage

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")


def submit(job: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "spark-submit.sh"), job, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, expected: str) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert not [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr


def nothing_published(work: Path) -> bool:
    return not list(work.rglob(storage.COMMITTED_NAME)) if work.exists() else True


@pytest.mark.parametrize("job, setting, expected", [
    ("train", "train.batch_size=0", "train.batch_size must be positive, got 0"),
    ("score", "score.mode=bogus", "score.mode must be one of ['auto', 'factorized', 'plain', 'cascade']"),
    ("score", "score.user_batch_size=0", "score.user_batch_size must be positive, got 0"),
    ("train", "model.cross_layers=-1", "model.cross_layers must be 0 or more, got -1"),
    ("embed_news", "embed.partitions=0", "embed.partitions must be positive, got 0"),
])
def test_a_bad_setting_is_one_line_before_spark_starts(tmp_path, job, setting, expected):
    work = tmp_path / "work"
    result = submit(job, "--set", f"paths.work={work}", "--set", setting)
    assert_one_error_line(result, expected)
    assert result.returncode == 2 and not work.exists()


@pytest.mark.spark
def test_missing_inputs_and_missing_steps_are_one_line(tmp_path):
    work = tmp_path / "work"
    base = ["--set", f"paths.work={work}", "--set", "spark.master=local[1]",
            "--set", "spark.driver_memory=1g"]
    missing = tmp_path / "nowhere"
    result = submit("embed_news", *base, "--set", f"paths.train={missing}",
                    "--set", "embed.encoder=hashing", "--set", "embed.postprocess=project")
    assert_one_error_line(result, f"{missing}/news.tsv does not exist")
    result = submit("score", *base, "--run-date", "2019-11-16")
    assert_one_error_line(result, "cannot score 2019-11-16")
    assert nothing_published(work)
