"""Check deploy/airflow_newsrec.py in a real Airflow of the given version.

    python deploy/check_dag.py --airflow 2.10.5 [--venv DIR]
    python deploy/check_dag.py --airflow 3.1.8 [--venv DIR]

Creates a virtualenv in a temporary directory (or reuses DIR, never the project's own), pip
installs that Airflow there from PyPI (and apache-airflow-providers-standard on 3.x), then runs
this file again inside it, which:

- imports the DAG file with every warning an error (after Airflow's own modules, which the DAG
  processor has loaded before it reads any DAG file), and parses it through a DagBag: no import
  error, no captured warning;
- renders every templated field of every task for three consecutive scheduled runs and for the
  runs the documented backfill command makes (the timetable's runs between its dates, as both
  versions' backfill computes them), and compares the commands with the expected ones:
  `--date D` / `--as-of D` with D the end of the run's data interval, `-np 8 -H host1:4,host2:4`
  for the hosts variable `host1:4,host2:4`, the sensor's day;
- pokes the sensor's check on a log day without, then with, its _SUCCESS marker;
- finds an execution timeout, two retries and the `alert` failure hook on every task.

Prints PASS or FAIL per check and a summary; exits 1 on any failure. It needs PyPI and a few
minutes per version, so it is not part of the test suite (tests/test_deploy.py checks the same
file without Airflow).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "deploy" / "airflow_newsrec.py"
HOME = "/opt/newsrec"
CONFIG = f"{HOME}/conf/production.yaml"
HOSTS = "host1:4,host2:4"

# (dag_id, first and last logical date given to iter_dagrun_infos_between, the days D expected).
SCHEDULED = [("newsrec_daily", "2019-11-13", "2019-11-16", ["2019-11-14", "2019-11-15", "2019-11-16"]),
             ("newsrec_retrain", "2019-11-10", "2019-12-01", ["2019-11-17", "2019-11-24", "2019-12-01"])]
# The backfills of the DAG's docstring: `-s/--from-date FROM -e/--to-date TO`.
BACKFILLS = [("newsrec_daily", "2019-11-10", "2019-11-16",
              ["2019-11-11", "2019-11-12", "2019-11-13", "2019-11-14", "2019-11-15", "2019-11-16"]),
             ("newsrec_retrain", "2019-11-03", "2019-11-24", ["2019-11-10", "2019-11-17", "2019-11-24"])]


def expected_fields(task_id: str, day: str) -> dict:
    """The rendered templated fields of a task in the run for day `day`."""
    submit = f"cd {HOME} && ./spark-submit.sh"
    return {
        "wait_for_log": {"op_kwargs": {"log_root": os.environ.get("AIRFLOW_VAR_NEWSREC_LOG_ROOT"),
                                       "day": day}},
        "daily": {"bash_command": f"{submit} daily --date {day} --config {CONFIG}"},
        "build_features": {"bash_command": f"{submit} build_features --as-of {day} --config {CONFIG}"},
        "train": {"bash_command": f"cd {HOME} && .venv/bin/horovodrun -np 8 -H {HOSTS} --gloo "
                                  f".venv/bin/python -m dcn.train --as-of {day} --config {CONFIG}"},
        "evaluate": {"bash_command": f"{submit} evaluate --as-of {day} --config {CONFIG}"},
        "promote": {"bash_command": f"{submit} promote --as-of {day} --config {CONFIG}"},
    }[task_id]


# ---- inside the Airflow venv ----------------------------------------------------------------

def template_context(dag, task, info):
    """The context Airflow gives `task` in the scheduled run `info` (a DagRunInfo)."""
    import airflow
    from datetime import datetime, timezone
    run_id = f"scheduled__{info.logical_date.isoformat()}"
    if airflow.__version__.startswith("2."):   # its context looks up earlier runs: a database
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        run = DagRun(dag_id=dag.dag_id, run_id=run_id, run_type="scheduled",
                     execution_date=info.logical_date, data_interval=info.data_interval)
        run.dag = dag
        ti = TaskInstance(task, run_id=run_id)
        ti.dag_run = run
        return ti.get_template_context()
    # Airflow 3: the task SDK's runtime task instance, as the worker builds it.
    from uuid import uuid4
    from airflow.sdk.api.datamodels._generated import DagRun, TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    now = datetime.now(timezone.utc)
    run = DagRun(dag_id=dag.dag_id, run_id=run_id, logical_date=info.logical_date,
                 data_interval_start=info.data_interval.start, data_interval_end=info.data_interval.end,
                 run_after=info.run_after, start_date=now, run_type="scheduled", state="running",
                 consumed_asset_events=[])
    ti = RuntimeTaskInstance.model_construct(
        id=uuid4(), task_id=task.task_id, dag_id=dag.dag_id, run_id=run_id, try_number=1,
        dag_version_id=uuid4(), map_index=-1, task=task, start_date=now, max_tries=0,
        _ti_context_from_server=TIRunContext(dag_run=run, max_tries=0))
    return ti.get_template_context()


def run_infos(dag, first: str, last: str) -> list:
    """The runs of `dag` with logical dates in [first, last] (dates parsed as the CLI does):
    what `airflow dags backfill -s first -e last` (2.x) and `airflow backfill create
    --from-date first --to-date last` (3.x) create, through the same DAG method."""
    import airflow
    from airflow.cli.cli_config import parsedate
    if not airflow.__version__.startswith("2."):
        from airflow.serialization.serialized_objects import SerializedDAG
        dag = SerializedDAG.deserialize_dag(SerializedDAG.serialize_dag(dag))
    return list(dag.iter_dagrun_infos_between(parsedate(first), parsedate(last)))


def check_runs(dags: dict, dag_id: str, first: str, last: str, days: list[str]) -> None:
    dag = dags[dag_id]
    infos = run_infos(dag, first, last)
    got = [info.data_interval.end.date().isoformat() for info in infos]
    assert got == days, f"runs for days {got}, expected {days}"
    for info, day in zip(infos, days):
        for task in dag.tasks:
            context = template_context(dag, task, info)
            if dag_id == "newsrec_daily":   # the docstrings' `ds` = D-1
                ds = task.render_template("{{ ds }}", context)
                assert ds == str(date.fromisoformat(day) - timedelta(days=1)), f"ds = {ds} for {day}"
            rendered = {field: task.render_template(getattr(task, field), context)
                        for field in task.template_fields}
            for field, value in expected_fields(task.task_id, day).items():
                got_value = rendered[field]
                if isinstance(value, dict):
                    got_value = {k: got_value[k] for k in value}
                assert got_value == value, f"{task.task_id}.{field} = {got_value!r}, expected {value!r}"


def check_sensor(dags: dict) -> None:
    poke = dags["newsrec_daily"].get_task("wait_for_log").python_callable
    day = Path(os.environ["AIRFLOW_VAR_NEWSREC_LOG_ROOT"]) / "date=2019-11-15"
    day.mkdir(parents=True)
    (day / "behaviors.tsv").write_text("")
    assert not poke(log_root=str(day.parent), day="2019-11-16"), "ready without _SUCCESS"
    (day / "_SUCCESS").write_text("")
    assert poke(log_root=str(day.parent), day="2019-11-16"), "not ready with _SUCCESS"


def check_failure_handling(dags: dict) -> None:
    for dag in dags.values():
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert [c.__name__ for c in callbacks] == ["alert"], (task.task_id, callbacks)
            assert task.retries == 2 and task.execution_timeout, task.task_id
    assert dags["newsrec_daily"].get_task("wait_for_log").mode == "reschedule"


def inside(dag_file: Path) -> int:
    import importlib.util
    import traceback
    import warnings
    import airflow
    import airflow.models.dagbag
    import airflow.serialization.serialized_objects  # noqa: F401  (loaded before any DAG file)

    results: list[tuple[str, str | None]] = []

    def check(name, function, *args):
        try:
            function(*args)
            results.append((name, None))
        except Exception as error:  # every failure is reported, the run goes on
            results.append((name, "".join(traceback.format_exception_only(error)).strip()))

    module = {}

    def import_strictly():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            spec = importlib.util.spec_from_file_location("airflow_newsrec", dag_file)
            loaded = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded)
        module["dags"] = loaded

    def dagbag():
        bag = airflow.models.dagbag.DagBag(dag_folder=str(dag_file), include_examples=False)
        assert not bag.import_errors, bag.import_errors
        assert not bag.captured_warnings, bag.captured_warnings
        assert sorted(bag.dag_ids) == ["newsrec_daily", "newsrec_retrain"], bag.dag_ids

    if airflow.__version__.startswith("2."):
        from airflow.utils.db import initdb
        initdb(load_connections=False)   # a throwaway SQLite under AIRFLOW_HOME
    check("import with warnings as errors", import_strictly)
    check("DagBag: no import errors or warnings", dagbag)
    if "dags" in module:
        dags = {d.dag_id: d for d in (module["dags"].daily, module["dags"].retrain)}
        for dag_id, first, last, days in SCHEDULED:
            check(f"{dag_id}: 3 scheduled runs render days {days[0]}..{days[-1]}",
                  check_runs, dags, dag_id, first, last, days)
        for dag_id, first, last, days in BACKFILLS:
            check(f"{dag_id}: backfill {first}..{last} renders days {days[0]}..{days[-1]}",
                  check_runs, dags, dag_id, first, last, days)
        check("wait_for_log: ready only with the day's _SUCCESS", check_sensor, dags)
        check("every task: timeout, 2 retries, the alert hook", check_failure_handling, dags)
    for name, error in results:
        print(f"{'PASS' if error is None else 'FAIL'}  {name}" + (f"\n      {error}" if error else ""))
    failed = sum(error is not None for _, error in results)
    print(f"Airflow {airflow.__version__}: {len(results) - failed} passed, {failed} failed: "
          f"{'PASS' if not failed else 'FAIL'}")
    return 1 if failed else 0


# ---- outside: the venv ----------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--airflow", required=True, help="Airflow version to install, e.g. 3.1.8")
    parser.add_argument("--venv", type=Path, help="reuse (or create) this virtualenv")
    parser.add_argument("--python", default=sys.executable, help="interpreter of a new virtualenv")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return inside(args.inside)
    with tempfile.TemporaryDirectory(prefix="check_dag-") as tmp:
        venv = (args.venv or Path(tmp) / "venv").resolve()
        if venv in {(ROOT / ".venv").resolve(), Path(sys.prefix).resolve()}:
            parser.error(f"{venv} is the project's environment: give another --venv")
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
        packages = [f"apache-airflow=={args.airflow}"]
        if int(args.airflow.split(".")[0]) >= 3:
            packages.append("apache-airflow-providers-standard")
        print(f"installing {' '.join(packages)} into {venv} ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *packages], check=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW", "NEWSREC_", "PYTHON", "VIRTUAL_ENV"))}
        env.update(AIRFLOW_HOME=f"{tmp}/airflow", AIRFLOW__CORE__LOAD_EXAMPLES="False",
                   AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING", NEWSREC_HOME=HOME,
                   AIRFLOW_VAR_NEWSREC_HOSTS=HOSTS, AIRFLOW_VAR_NEWSREC_LOG_ROOT=f"{tmp}/log")
        return subprocess.run([str(python), __file__, "--airflow", args.airflow,
                               "--inside", str(DAG_FILE)], env=env, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
