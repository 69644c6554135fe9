"""Peak memory of the scoring task against its budget (score.memory_budget_mb), side by side.

    .venv/bin/python -m bench.score_memory_bench [--news 10000] [--users 2000]
                                                 [--budgets 128,256,512]

Each measurement runs in a fresh Python process: the job's own mapInPandas function
(jobs/score.py `score_partitions`) scores `--users` users against a pool of `--news` news
with the default model's shape (128-d vectors, 3 vector cross layers, deep [256, 128]),
random weights. The process's resident memory is read just before scoring and its peak
(getrusage) just after; the difference is the task's working memory. Printed per budget:
the users per batch the scorer chose, the peak, and peak / budget. The last row is the old
behaviour, a fixed batch of 64 users whatever the pool. Results go to bench/results/score_memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from bench.record import record

ROOT = Path(__file__).resolve().parent.parent


def child(budget_mb: int, n_news: int, n_users: int, cap: int) -> dict:
    """Runs in the measured process."""
    import datetime as dt
    import gc
    import types

    import numpy as np
    import pandas as pd
    import psutil

    from common import columns as C
    from dcn.model import build_dcn
    from dcn.batching import users_per_batch
    from dcn.scoring import make_scorer
    from serving import tasks

    dim = 128
    model = build_dcn(dim, dim, cross_layers=3, deep_units=(256, 128), seed=0)
    scorer = make_scorer(model, "auto")
    tasks._SCORERS[("bench-model", "auto")] = scorer
    rng = np.random.default_rng(0)
    pool = {"ids": np.asarray([f"N{i}" for i in range(n_news)], dtype=object),
            "vectors": rng.standard_normal((n_news, dim)).astype(np.float32),
            "clicks": rng.integers(0, 50, n_news).astype(np.float64)}
    pool["ctr"] = pool["clicks"] / 100.0
    # a vectors-only model reads no side features; the pool and profiles carry them anyway
    pool.update(dense=np.zeros((n_news, 4), np.float32), category=np.zeros(n_news, np.int32),
                subcategory=np.zeros(n_news, np.int32), topic=np.zeros((n_news, dim), np.float32))
    users = pd.DataFrame({
        C.USER_ID: [f"U{i}" for i in range(n_users)],
        C.CLICKED_NEWS: [[f"N{j}" for j in rng.integers(0, n_news, 5)] for _ in range(n_users)],
        C.HISTORY_LEN: np.full(n_users, 5), C.USER_VEC: list(rng.standard_normal((n_users, dim))
                                                            .astype(np.float32)),
        C.USER_DENSE: list(np.zeros((n_users, 2), np.float32))})
    settings = {"k": 10, "user_batch_size": cap, "mode": "auto", "cold_users": "popularity",
                "threads_per_task": 1, "memory_budget_mb": budget_mb}
    run = tasks.score_partitions(types.SimpleNamespace(value=pool), "bench-model", "v1",
                                 settings, dt.datetime(2019, 11, 16))
    batch = users_per_batch(scorer.memory(n_news), n_news, budget_mb * 2 ** 20, cap)
    # warm the code paths on a few users, then measure from the resident size just before
    for _ in run(iter([users.iloc[:2]])):
        pass
    gc.collect()
    reset = _reset_peak()
    before = psutil.Process().memory_info().rss
    rows = sum(len(out) for out in run(iter([users])))
    peak = _peak() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"budget_mb": budget_mb, "cap": cap, "users_per_batch": batch, "rows": rows,
            "peak_extra_mb": round((peak - before) / 2 ** 20, 1)}


def _reset_peak() -> bool:
    """Reset this process's peak resident size (Linux: VmHWM), so the peak read after scoring
    is scoring's own, not one from loading the model or from before; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(budget_mb: int, n_news: int, n_users: int, cap: int = 64) -> dict:
    """One measurement in a fresh process."""
    command = [sys.executable, "-m", "bench.score_memory_bench", "--child", str(budget_mb),
               str(n_news), str(n_users), str(cap)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                                   TF_ENABLE_ONEDNN_OPTS="0", OMP_NUM_THREADS="1"))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        budget, n_news, n_users, cap = map(int, sys.argv[2:6])
        print(json.dumps(child(budget, n_news, n_users, cap)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--news", type=int, default=10000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--budgets", default="128,256,512")
    args = parser.parse_args()
    results = [measure(int(b), args.news, args.users, cap=100000)
               for b in args.budgets.split(",")]
    # the old behaviour: 64 users per batch whatever the pool (a budget too large to bind)
    results.append(dict(measure(1 << 20, args.news, args.users, cap=64), budget_mb=None))
    print(f"pool of {args.news} news, {args.users} users, default model shape")
    print("| budget MB | users per batch | peak MB | peak / budget |")
    print("| ---: | ---: | ---: | ---: |")
    for r in results:
        ratio = f"{r['peak_extra_mb'] / r['budget_mb']:.2f}" if r["budget_mb"] else "-"
        budget = r["budget_mb"] if r["budget_mb"] else "none (fixed batch 64)"
        print(f"| {budget} | {r['users_per_batch']} | {r['peak_extra_mb']} | {ratio} |")
    out = ROOT / "bench" / "results" / "score_memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"news": args.news, "users": args.users, "results": results},
                              indent=2))
    figures = []
    for r in results:
        budget = f"budget {r['budget_mb']} MB" if r["budget_mb"] else "fixed batch of 64 users"
        if r["budget_mb"]:
            figures.append((f"{budget}: peak / budget", r["peak_extra_mb"] / r["budget_mb"]))
        figures += [(f"{budget}: peak MB", r["peak_extra_mb"]),
                    (f"{budget}: users per batch", r["users_per_batch"])]
    record("score_memory_bench", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
