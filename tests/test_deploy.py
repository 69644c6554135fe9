"""The shipped scheduler files name the right date and jobs that exist."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bash_commands(path: Path) -> dict[str, str]:
    """task_id -> bash_command of every BashOperator in a DAG file, read without Airflow
    (f-strings evaluated with the module's constants)."""
    tree = ast.parse(path.read_text())
    constants = {"HOME": "/opt/newsrec", "CONFIG": "/opt/newsrec/conf/production.yaml"}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.targets[0], ast.Name)):
            constants[node.targets[0].id] = node.value.value
    commands = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "BashOperator":
            args = {k.arg: k.value for k in node.keywords}
            code = compile(ast.Expression(args["bash_command"]), str(path), "eval")
            commands[args["task_id"].value] = eval(code, {}, dict(constants))  # noqa: S307
    return commands


def test_the_daily_dag_scores_the_end_of_its_data_interval():
    commands = bash_commands(ROOT / "deploy" / "airflow_newsrec.py")
    assert set(commands) == {"daily", "build_features", "train", "evaluate"}
    assert "./spark-submit.sh daily --date {{ data_interval_end | ds }}" in commands["daily"]
    assert "{{ ds }}" not in " ".join(commands.values())
    for task, command in commands.items():
        for job in re.findall(r"spark-submit\.sh (\w+)", command):
            assert (ROOT / "jobs" / f"{job}.py").exists(), (task, job)
    assert "-m dcn.train" in commands["train"]


def test_the_crontab_scores_today_in_utc():
    lines = [l for l in (ROOT / "deploy" / "crontab").read_text().splitlines()
             if l and not l.startswith("#")]
    assert "CRON_TZ=UTC" in lines
    entry = next(l for l in lines if "spark-submit.sh daily" in l)
    assert entry.split()[:5] == ["0", "1", "*", "*", "*"]
    assert '--date "$(date -u +\\%F)"' in entry     # today's date, % escaped for cron
