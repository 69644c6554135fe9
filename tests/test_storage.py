"""Publishing runs: only finished runs count toward keep_runs; unfinished ones are kept while
they may still be in progress."""
from __future__ import annotations

import datetime as dt
import json

from common import storage


def run_id_at(hours_ago: float, tag: str) -> str:
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)
    return moment.strftime("%Y%m%dT%H%M%SZ") + f"-{tag}"


def make_run(root, run_id, finished: bool):
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "part.txt").write_text("data")
    if finished:
        storage.publish_run(str(root), run_id, {"n": run_id}, keep_runs=100)


def test_unfinished_runs_never_push_out_finished_ones(tmp_path):
    root = tmp_path / "out"
    old_finished = [run_id_at(50 - i, f"f{i}") for i in range(3)]
    for run_id in old_finished:
        make_run(root, run_id, finished=True)
    killed_long_ago = run_id_at(30, "killed")
    in_progress = [run_id_at(0.5, "a"), run_id_at(0.2, "b")]
    make_run(root, killed_long_ago, finished=False)
    for run_id in in_progress:
        make_run(root, run_id, finished=False)
    newest = run_id_at(0, "new")
    make_run(root, newest, finished=False)
    storage.publish_run(str(root), newest, {"n": newest}, keep_runs=2)
    left = sorted(p.name for p in (root / "runs").iterdir())
    # the newest finished run before this one stays (keep_runs=2); the killed run of 30 hours
    # ago goes; the two runs that may still be writing stay
    assert left == sorted([old_finished[-1], newest, *in_progress])
    pointer = json.loads((root / "CURRENT.json").read_text())
    assert pointer["run_id"] == newest
    assert (root / "runs" / newest / storage.COMMITTED_NAME).exists()
