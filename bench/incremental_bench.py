"""Benchmark: one day's incremental run against a full rebuild of the same data, side by side.

    .venv/bin/python -m bench.incremental_bench [--scale mind-small] [--repeats 1]

On the synthetic sample written as a log partitioned by day (python -m synthetic
--daily-log; hashing vectors), for the day D after the last day of the log:

- full: `./spark-submit.sh build_features --as-of D`, the whole log recomputed (user state,
  train and dev rows, pool);
- incremental: `./spark-submit.sh daily --date D --no-score`, with the state as of D-1 already
  there (made untimed beforehand): the state as of D from the state as of D-1 plus the last
  day's impressions, and the pool as of D. Before each timed run its state as of D is removed,
  so the run computes it.

Both are timed as whole commands (JVM start included), alternating, `--repeats` times; the
figure is the ratio of the best times (target: incremental <= 0.25 of full). The run also
checks that the two states as of D are identical. Results: bench/results/incremental.json.
"""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

from bench.daily_log import (ROOT, SUBMIT, arguments, sample, save, stage_settings, timed,
                             work_folders)


def main() -> None:
    args = arguments(__doc__.splitlines()[0])

    from common import outputs
    from common.config import load_config

    data, days = sample(args.scale)
    target = dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1)
    settings = stage_settings(data, "hashing")
    works, submit = work_folders("daily", args.scale, ("full", "incremental")), SUBMIT
    for work in works.values():
        subprocess.run([submit, "embed_news", *settings, "--set", f"paths.work={work}"],
                       cwd=ROOT, check=True, capture_output=True)
    incremental_work = works["incremental"]
    timed([submit, "daily", "--date", (target - dt.timedelta(days=1)).isoformat(), "--no-score",
           *settings, "--set", f"paths.work={incremental_work}"])
    state_root = Path(outputs.as_of_root(load_config(overrides=[f"paths.work={incremental_work}"]),
                                         outputs.day_start(target), outputs.STATE)
                      .replace("file://", "")).parent

    times = {"full": [], "incremental": []}
    summaries = {}
    for _ in range(args.repeats):
        shutil.rmtree(state_root, ignore_errors=True)
        seconds, summary = timed([submit, "daily", "--date", target.isoformat(), "--no-score",
                                  *settings, "--set", f"paths.work={incremental_work}"])
        assert summary["states_computed"] == [f"{target.isoformat()}T00:00:00"], summary
        times["incremental"].append(seconds)
        summaries["incremental"] = summary
        seconds, summary = timed([submit, "build_features", "--as-of", target.isoformat(),
                                  *settings, "--set", f"paths.work={works['full']}"])
        times["full"].append(seconds)
        summaries["full"] = summary

    import numpy as np
    import pyarrow.parquet as pq

    def state(work: Path):
        cfg = load_config(overrides=[f"paths.work={work}"])
        pointer = outputs.current_as_of(cfg, outputs.day_start(target), outputs.STATE, "")
        table = pq.read_table(pointer["path"].replace("file://", "") + "/state").to_pandas()
        return table.sort_values("user_id").reset_index(drop=True)

    a, b = state(works["full"]), state(works["incremental"])
    identical = (list(a["user_id"]) == list(b["user_id"])
                 and np.array_equal(np.stack(a["vector_sum"]), np.stack(b["vector_sum"]))
                 and list(a["history_len"]) == list(b["history_len"]))
    best = {side: min(values) for side, values in times.items()}
    report = {"scale": args.scale, "date": target.isoformat(), "log_days": len(days),
              "seconds": times, "ratio_incremental_over_full": best["incremental"] / best["full"],
              "states_identical": identical, "users": summaries["incremental"]["users"],
              "full_stage_seconds": summaries["full"]["seconds"],
              "incremental_stage_seconds": summaries["incremental"]["seconds"]}
    print(f"scale {args.scale}, {len(days)} days of log, scoring day {target}: "
          f"{report['users']:,} users")
    print(f"full rebuild (build_features --as-of {target}): {best['full']:.1f} s")
    print(f"incremental (daily --date {target} --no-score, state of the day before present): "
          f"{best['incremental']:.1f} s")
    print(f"ratio incremental/full: {report['ratio_incremental_over_full']:.3f}  (target <= 0.25)")
    print(f"states as of {target} identical: {identical}")
    save("incremental", report, {
        "incremental / full rebuild, seconds (target <= 0.25)":
            report["ratio_incremental_over_full"],
        "full rebuild seconds": best["full"], "incremental seconds": best["incremental"],
        "states identical": identical, "users": report["users"], "log days": len(days)})


if __name__ == "__main__":
    main()
