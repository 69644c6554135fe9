"""Airflow DAGs for the news recommender: a daily scoring run and a weekly retraining.

Copy this file into the DAG folder and set NEWSREC_HOME (the checkout, with its .venv) and
NEWSREC_CONFIG (a YAML file of settings: paths.log or the MIND folders, paths.work, ...).

Which date is meant. Airflow runs a DAG once its data interval is over: the run of the
interval [D-1 00:00, D 00:00) starts on day D, with `ds` = D-1 and `data_interval_end` = D.
The recommendations of that run are for day D, from the log before D 00:00, so the job gets
`--date {{ data_interval_end | ds }}`, never `{{ ds }}` (that would write D's lists under
D-1's partition and use one day less of data).

Backfills: `airflow dags backfill -s 2019-11-10 -e 2019-11-16 newsrec_daily` writes run_date
2019-11-11 ... 2019-11-16 (one run per data interval). The runs may go in any order or in
parallel (max_active_runs): each computes any missing earlier user state itself, and a
rerun of a date replaces that date's partition only. A day of log that arrives late is
picked up by clearing its run and the runs after it (`airflow tasks clear -s D -e END`).
"""
from __future__ import annotations

import os

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

HOME = os.environ.get("NEWSREC_HOME", "/opt/newsrec")
CONFIG = os.environ.get("NEWSREC_CONFIG", f"{HOME}/conf/production.yaml")
# The day the recommendations are for: the end of the run's data interval.
RECOMMENDATION_DAY = "{{ data_interval_end | ds }}"

COMMON = {"start_date": pendulum.datetime(2019, 11, 10, tz="UTC"), "catchup": False,
          "default_args": {"retries": 2, "retry_delay": pendulum.duration(minutes=10)},
          "tags": ["newsrec"]}

with DAG(
    dag_id="newsrec_daily",
    description="User state, candidate pool and top-k recommendations for the day",
    schedule="0 1 * * *",          # 01:00 UTC: an hour for the previous day's log to land
    max_active_runs=2,
    **COMMON,
) as daily:
    BashOperator(
        task_id="daily",
        bash_command=(f"cd {HOME} && ./spark-submit.sh daily --date {RECOMMENDATION_DAY} "
                      f"--config {CONFIG}"),
    )

with DAG(
    dag_id="newsrec_retrain",
    description="Training rows as of the week's end, a Horovod training run, the evaluation",
    schedule="0 3 * * 0",          # Sundays 03:00 UTC
    max_active_runs=1,
    **COMMON,
) as retrain:
    features = BashOperator(
        task_id="build_features",
        bash_command=(f"cd {HOME} && ./spark-submit.sh build_features --as-of "
                      f"{RECOMMENDATION_DAY} --config {CONFIG}"),
    )
    train = BashOperator(
        task_id="train",
        bash_command=(f"cd {HOME} && .venv/bin/horovodrun -np 4 "
                      f"-H {{{{ var.value.get('newsrec_hosts', 'localhost:4') }}}} --gloo "
                      f".venv/bin/python -m dcn.train --config {CONFIG}"),
    )
    evaluate = BashOperator(
        task_id="evaluate",
        bash_command=(f"cd {HOME} && ./spark-submit.sh evaluate --as-of {RECOMMENDATION_DAY} "
                      f"--config {CONFIG}"),
    )
    features >> train >> evaluate
