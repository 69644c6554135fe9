"""The shipped scheduler files name the right date and jobs that exist.

The DAG file is imported against a stand-in of the few Airflow names it uses (recording each
task's arguments), so these checks run without Airflow; deploy/check_dag.py renders it in a
real Airflow 2 and 3."""
from __future__ import annotations

import importlib.util
import re
import sys
import types
from datetime import timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
D = "{{ data_interval_end | ds }}"


class Task:
    def __init__(self, task_id, **kwargs):
        self.task_id, self.kwargs, self.downstream = task_id, kwargs, []
        DAG.current.tasks[task_id] = self

    def __rshift__(self, other):
        self.downstream.append(other.task_id)
        return other


class DAG:
    current = None

    def __init__(self, dag_id, **kwargs):
        self.dag_id, self.kwargs, self.tasks = dag_id, kwargs, {}

    def __enter__(self):
        DAG.current = self
        return self

    def __exit__(self, *exc):
        DAG.current = None


class CronDataIntervalTimetable:
    def __init__(self, cron, timezone):
        self.cron, self.timezone = cron, timezone


@pytest.fixture(scope="module")
def dag_module():
    """deploy/airflow_newsrec.py imported with Airflow 2's module names standing in."""
    names = {"airflow": {"DAG": DAG},
             "airflow.operators.bash": {"BashOperator": Task},
             "airflow.sensors.python": {"PythonSensor": Task},
             "airflow.timetables.interval": {"CronDataIntervalTimetable": CronDataIntervalTimetable}}
    saved = {name: sys.modules.get(name) for name in names}
    for name, attrs in names.items():
        sys.modules[name] = types.ModuleType(name)
        vars(sys.modules[name]).update(attrs)
    try:
        spec = importlib.util.spec_from_file_location("airflow_newsrec",
                                                      ROOT / "deploy" / "airflow_newsrec.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        for name, module_before in saved.items():
            if module_before is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module_before


def test_the_daily_dag_waits_for_the_log_then_scores_the_end_of_its_data_interval(dag_module):
    daily = dag_module.daily
    assert daily.kwargs["schedule"].cron == "0 1 * * *"
    assert daily.kwargs["schedule"].timezone == "UTC"
    assert set(daily.tasks) == {"wait_for_log", "daily"}
    assert daily.tasks["wait_for_log"].downstream == ["daily"]
    sensor = daily.tasks["wait_for_log"].kwargs
    assert sensor["mode"] == "reschedule"
    assert sensor["poke_interval"] < sensor["timeout"] <= timedelta(hours=24)
    assert sensor["op_kwargs"]["day"] == D
    assert "newsrec_log_root" in sensor["op_kwargs"]["log_root"]
    command = daily.tasks["daily"].kwargs["bash_command"]
    assert f"./spark-submit.sh daily --date {D} --config " in command


def test_the_retrain_dag_passes_its_own_date_through_every_stage(dag_module):
    retrain = dag_module.retrain
    tasks = retrain.tasks
    assert list(tasks) == ["build_features", "train", "evaluate", "promote"]
    assert [tasks[t].downstream for t in tasks] == [["train"], ["evaluate"], ["promote"], []]
    for task_id in ("build_features", "evaluate", "promote"):
        assert f"./spark-submit.sh {task_id} --as-of {D} --config " in tasks[task_id].kwargs["bash_command"]
    train = tasks["train"].kwargs["bash_command"]
    assert f"-m dcn.train --as-of {D} --config " in train
    hosts = "var.value.get('newsrec_hosts', 'localhost:4')"
    assert f"horovodrun -np {{{{ total_slots({hosts}) }}}} -H {{{{ {hosts} }}}} --gloo" in train


def test_every_task_has_a_timeout_retries_and_the_failure_hook(dag_module):
    for dag in (dag_module.daily, dag_module.retrain):
        defaults = dag.kwargs["default_args"]
        assert defaults["retries"] >= 1 and defaults["on_failure_callback"] is dag_module.alert
        assert dag.kwargs["user_defined_macros"]["total_slots"] is dag_module.total_slots
        for task in dag.tasks.values():
            timeout = task.kwargs.get("execution_timeout", defaults["execution_timeout"])
            assert timedelta(0) < timeout <= timedelta(hours=24), task.task_id
        commands = " ".join(t.kwargs.get("bash_command", "") for t in dag.tasks.values())
        assert "{{ ds }}" not in commands
        jobs = set(re.findall(r"spark-submit\.sh (\w+)", commands))
        missing = {job for job in jobs if not (ROOT / "jobs" / f"{job}.py").exists()}
        assert missing == set(), missing


def test_the_failure_hook_names_the_task_and_its_day(dag_module, caplog):
    ti = types.SimpleNamespace(dag_id="newsrec_daily", task_id="daily")
    dag_module.alert({"ti": ti, "data_interval_end": "2019-11-16T01:00:00+00:00",
                      "exception": RuntimeError("spark-submit exited with 1")})
    [record] = caplog.records
    assert record.levelname == "ERROR"
    assert "newsrec_daily.daily" in record.message and "2019-11-16" in record.message
    assert "spark-submit exited with 1" in record.message


def test_horovod_runs_a_rank_per_slot_of_the_hosts(dag_module):
    assert dag_module.total_slots("localhost:4") == 4
    assert dag_module.total_slots("host1:4,host2:4") == 8
    assert dag_module.total_slots("host1,host2:2") == 3


def test_a_log_day_is_ready_once_its_partition_has_a_success_marker(dag_module, tmp_path):
    partition = tmp_path / "date=2019-11-15"
    partition.mkdir()
    (partition / "behaviors.tsv").write_text("")
    assert not dag_module.log_day_ready(str(tmp_path), "2019-11-16")
    (partition / "_SUCCESS").write_text("")
    assert dag_module.log_day_ready(str(tmp_path), "2019-11-16")
    assert not dag_module.log_day_ready(str(tmp_path), "2019-11-15")
    with pytest.raises(ValueError, match="newsrec_log_root"):
        dag_module.log_day_ready("", "2019-11-16")


def crontab_entries() -> list[str]:
    return [l for l in (ROOT / "deploy" / "crontab").read_text().splitlines()
            if l and not l.startswith("#")]


def test_the_crontab_scores_today_in_utc():
    lines = crontab_entries()
    assert "CRON_TZ=UTC" in lines
    entry = next(l for l in lines if "spark-submit.sh daily" in l)
    assert entry.split()[:5] == ["0", "1", "*", "*", "*"]
    assert '--date "$(date -u +\\%F)"' in entry     # today's date, % escaped for cron


def test_the_crontab_retrains_weekly_with_the_dags_sequence():
    entry = next(l for l in crontab_entries() if "build_features" in l)
    assert entry.split()[:5] == ["0", "3", "*", "*", "0"]
    steps = [s.strip() for s in entry.split(" && ")]
    assert 'D="$(date -u +\\%F)"' in steps[1]
    assert [re.search(r"spark-submit\.sh (\w+)|-m (dcn\.train)", s).group(1, 2) for s in steps[2:]] == [
        ("build_features", None), (None, "dcn.train"), ("evaluate", None), ("promote", None)]
    assert all('--as-of "$D"' in s for s in steps[2:])
