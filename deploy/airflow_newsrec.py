"""Airflow DAGs for the news recommender: a daily scoring run and a weekly retraining.

The same file runs on Airflow 2.10+ and 3.1+ (3.x needs apache-airflow-providers-standard).
Copy it into the DAG folder and set NEWSREC_HOME (the checkout, with its .venv) and
NEWSREC_CONFIG (a YAML file of settings: paths.log, paths.work, ...) in the environment of
the scheduler and workers, and the Airflow Variables:

    newsrec_log_root   the daily log's root (paths.log), a local or mounted path
    newsrec_hosts      Horovod's hosts and slots, `host1:4,host2:4` (default localhost:4);
                       training runs one rank per slot

Which date is meant. Both DAGs use CronDataIntervalTimetable on both versions (a bare cron
string would give Airflow 3's zero-length CronTriggerTimetable intervals instead). The run
that starts at 01:00 UTC on day D covers the interval [D-1 01:00, D 01:00): its `ds` and
logical date are D-1 and its `data_interval_end` is D. The recommendations of that run are for
day D, from the log before D 00:00, so every task gets `{{ data_interval_end | ds }}`, never
`{{ ds }}` (that would write D's lists under D-1's partition, one day of log short).
`data_interval_end | ds` would still be D under a CronTriggerTimetable, where the run of day
D has both interval ends at D 01:00. The weekly retrain of Sunday D (03:00 UTC) passes D as
`--as-of` to each of its four stages, so a cleared or backfilled retrain repeats its own week.

Backfills take the logical dates FROM and TO (each at 00:00 UTC) and make every run whose
logical date lies between them: the runs that score the days after FROM up to TO. To score
2019-11-11 ... 2019-11-16:

    Airflow 2:  airflow dags backfill -s 2019-11-10 -e 2019-11-16 newsrec_daily
    Airflow 3:  airflow backfill create --dag-id newsrec_daily --from-date 2019-11-10 --to-date 2019-11-16

The runs may go in any order or in parallel (max_active_runs): each computes any missing
earlier user state itself, and a rerun of a date replaces that date's partition only. A day of
log that arrives late is picked up by clearing the runs from its day on, with the same dates
(`airflow tasks clear -s FROM -e TO newsrec_daily` on both versions).

Readiness of the log: the daily run first waits (sensor `wait_for_log`, rescheduled every 10
minutes, for at most 12 hours) until ROOT/date=D-1/_SUCCESS exists, the marker Hadoop and
Spark writers leave once a partition is completely written. A log on HDFS or S3 needs a mount
or the matching provider's sensor in place of `log_day_ready`.

A task that fails after its retries calls `alert`: edit it to page someone.
`python deploy/check_dag.py --airflow VERSION` imports this file and renders every task in a
throwaway Airflow of that version.
"""
from __future__ import annotations

import logging
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from airflow.timetables.interval import CronDataIntervalTimetable

try:  # Airflow 3: the DAG class in the task SDK, operators in the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.sensors.python import PythonSensor
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator
    from airflow.sensors.python import PythonSensor

log = logging.getLogger(__name__)

HOME = os.environ.get("NEWSREC_HOME", "/opt/newsrec")
CONFIG = os.environ.get("NEWSREC_CONFIG", f"{HOME}/conf/production.yaml")
# The day the recommendations are for (see the docstring): the end of the data interval.
D = "{{ data_interval_end | ds }}"
# Jinja expression: Horovod's hosts, read when the task runs.
HOSTS = "var.value.get('newsrec_hosts', 'localhost:4')"


def total_slots(hosts: str) -> int:
    """Horovod's -np for `-H hosts`: the sum of the slots (`host1:4,host2:4` -> 8; a host
    without `:slots` counts one, as horovodrun counts it)."""
    return sum(int(host.partition(":")[2] or 1) for host in hosts.split(","))


def log_day_ready(log_root: str, day: str) -> bool:
    """Whether the log the run for `day` reads is complete: the partition of the day before
    it holds a _SUCCESS marker."""
    if not log_root:
        raise ValueError("set the Airflow Variable newsrec_log_root to the log's root (paths.log)")
    marker = Path(log_root) / f"date={date.fromisoformat(day) - timedelta(days=1)}" / "_SUCCESS"
    log.info("waiting for %s", marker)
    return marker.exists()


def alert(context) -> None:
    """Called when a task has failed for good (after its retries). Edit this to alert
    someone: post to a Slack webhook, send an e-mail, open a pager incident. Default: one
    error line in the task's log."""
    ti = context["ti"]
    log.error("newsrec: %s.%s failed for the interval ending %s: %s", ti.dag_id, ti.task_id,
              context["data_interval_end"], context.get("exception"))


def spark_job(job: str, date_option: str) -> str:
    """The command of a stage run through spark-submit.sh for the run's day D."""
    return f"cd {HOME} && ./spark-submit.sh {job} {date_option} {D} --config {CONFIG}"


COMMON = {"start_date": datetime(2019, 11, 10, tzinfo=timezone.utc), "catchup": False,
          "user_defined_macros": {"total_slots": total_slots},
          "default_args": {"retries": 2, "retry_delay": timedelta(minutes=10),
                           "execution_timeout": timedelta(hours=4),
                           "on_failure_callback": alert},
          "tags": ["newsrec"]}

with DAG(
    dag_id="newsrec_daily",
    description="Wait for the previous day's log; user state, candidate pool and top-k for the day",
    schedule=CronDataIntervalTimetable("0 1 * * *", timezone="UTC"),
    max_active_runs=2,
    **COMMON,
) as daily:
    wait_for_log = PythonSensor(
        task_id="wait_for_log",
        python_callable=log_day_ready,
        op_kwargs={"log_root": "{{ var.value.get('newsrec_log_root', '') }}", "day": D},
        mode="reschedule", poke_interval=timedelta(minutes=10), timeout=timedelta(hours=12),
    )
    score = BashOperator(task_id="daily", bash_command=spark_job("daily", "--date"),
                         execution_timeout=timedelta(hours=3))
    wait_for_log >> score

with DAG(
    dag_id="newsrec_retrain",
    description="Training rows as of the week's end, Horovod training, evaluation, promotion gate",
    schedule=CronDataIntervalTimetable("0 3 * * 0", timezone="UTC"),   # Sundays 03:00 UTC
    max_active_runs=1,
    **COMMON,
) as retrain:
    features = BashOperator(task_id="build_features",
                            bash_command=spark_job("build_features", "--as-of"))
    train = BashOperator(
        task_id="train",
        bash_command=(f"cd {HOME} && .venv/bin/horovodrun -np {{{{ total_slots({HOSTS}) }}}} "
                      f"-H {{{{ {HOSTS} }}}} --gloo .venv/bin/python -m dcn.train --as-of {D} "
                      f"--config {CONFIG}"),
        execution_timeout=timedelta(hours=12),
    )
    evaluate = BashOperator(task_id="evaluate", bash_command=spark_job("evaluate", "--as-of"))
    # Promotes the candidate only if it passes; a refusal is a success, an error fails.
    promote = BashOperator(task_id="promote", bash_command=spark_job("promote", "--as-of"),
                           execution_timeout=timedelta(hours=1))
    features >> train >> evaluate >> promote
