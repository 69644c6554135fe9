"""Unattended operation: mistakes an operator makes (a typo in a job name, a work folder that
is a file, a directory where a file belongs) end in one `error:` line, and a failed job leaves
no lease behind that would hold off the next run."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from common import storage
from common.cli import run_main
from common.errors import UserInputError

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")


def submit(job: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "spark-submit.sh"), job, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0
    assert len(errors) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return errors[0]


def test_an_unknown_job_names_the_jobs_there_are():
    line = one_error_line(submit("nosuchjob"))
    assert "no job 'nosuchjob'" in line and "score" in line and "daily" in line


def test_a_work_folder_that_is_a_file_or_unwritable_is_one_line(tmp_path):
    a_file = tmp_path / "work"
    a_file.write_text("not a folder")
    line = one_error_line(submit("show_runs", "--set", f"paths.work={a_file}"))
    assert f"paths.work = {a_file}" in line and "is a file, not a folder" in line
    line = one_error_line(submit("show_runs", "--set", "paths.work=/proc/newsrec-work"))
    assert "paths.work = /proc/newsrec-work: cannot write into /proc" in line


def test_a_failed_job_leaves_no_lease_and_no_run(tmp_path, capsys):
    root = str(tmp_path / "work" / "thing")
    begun = []

    def failing(cfg, args):
        begun.append(storage.start_run(root))
        storage.write_text(storage.join(storage.run_dir(root, begun[0]), "part"), "half")
        raise UserInputError("something the user must fix")

    assert run_main("fails", failing, ["--set", f"paths.work={tmp_path / 'work'}"]) == 1
    assert "error: something the user must fix" in capsys.readouterr().err
    assert storage.lease_state(storage.runs_dir(root), begun[0]) == "none"
    assert storage.list_dir(storage.runs_dir(root)) == []
    # the next run starts and publishes at once, with nothing of the failed one around
    run_id = storage.start_run(root)
    storage.publish_run(root, run_id, {}, keep_runs=1)
    assert [name for name, is_dir in storage.list_dir(storage.runs_dir(root)) if is_dir] == [run_id]
    assert storage.current_run(root, "thing")["run_id"] == run_id


@pytest.mark.spark
def test_a_directory_where_behaviors_tsv_belongs_is_named_as_one(spark, tmp_path):
    from features import behavior_log
    from tests.builders import make_cfg, write_sample

    write_sample(tmp_path)
    behaviors = tmp_path / "train" / "behaviors.tsv"
    behaviors.unlink()
    behaviors.mkdir()
    with pytest.raises(UserInputError, match="behaviors.tsv is a directory"):
        behavior_log.read_impressions(spark, make_cfg(tmp_path))


HOLD_METASTORE = """
import sys, time
from common.config import load_config
from common.spark import get_spark
cfg = load_config(overrides=["spark.master=local[1]", "spark.driver_memory=1g",
                             "paths.work=" + sys.argv[1]])
get_spark(cfg, "holder", hive=True).sql("SHOW DATABASES").collect()
print("holding", flush=True)
time.sleep(600)
"""


@pytest.mark.spark
@pytest.mark.slow
def test_a_second_job_on_the_embedded_metastore_is_one_line_without_spark_chatter(tmp_path):
    work = tmp_path / "work"
    holder = subprocess.Popen([os.sys.executable, "-c", HOLD_METASTORE, str(work)], cwd=ROOT,
                              env=dict(ENV, SPARK_LOCAL_IP="127.0.0.1"), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = submit("show_recommendations", "--set", f"paths.work={work}",
                        "--set", "spark.master=local[1]", "--run-date", "2019-11-16")
    finally:
        holder.kill()
        holder.wait()
    line = one_error_line(result)
    assert f"another process holds the embedded metastore at file://{work}/metastore_db" in line
    # the JVM says warnings and errors only: no start-up INFO, no Derby or Hive stack traces
    assert not [text for text in result.stderr.splitlines() if " INFO " in text]
    assert "\tat org." not in result.stderr and "XSDB6" not in result.stderr
    assert len(result.stderr.splitlines()) < 20, result.stderr


@pytest.mark.spark
@pytest.mark.slow
def test_a_job_says_each_stage_on_stderr_and_no_spark_info(tmp_path):
    from tests.builders import write_sample

    write_sample(tmp_path)
    result = submit("embed_news", "--set", f"paths.train={tmp_path / 'train'}",
                    "--set", f"paths.dev={tmp_path / 'dev'}", "--set", f"paths.work={tmp_path / 'work'}",
                    "--set", "embed.encoder=hashing", "--set", "embed.postprocess=project", "--set", "embed.hashing_dim=16",
                    "--set", "embed.projection_dim=0", "--set", "spark.master=local[1]")
    assert result.returncode == 0, result.stderr[-3000:]
    stages = [line for line in result.stderr.splitlines() if line.startswith("[embed_news] ")]
    assert [line.split(":")[0] for line in stages] == [
        "[embed_news] read_news", "[embed_news] encode", "[embed_news] categories",
        "[embed_news] rejected"]
    assert stages[1].endswith(" s, 10 rows")
    assert "[embed_news]" not in result.stdout
    assert not [line for line in result.stderr.splitlines() if " INFO " in line], result.stderr
