"""The scoring job's stage against the scoring kernel alone, side by side in one run.

    .venv/bin/python -m bench.score_stage_bench [--scale small]

Builds (once, under bench/data/) the sample, its news vectors (hashing encoder projected to
128, as the default) and its features as of 2019-11-16, and exports an untrained model of the
default shape and inputs (every side feature). Then, in one run:
  (a) the job: `./spark-submit.sh score --run-date 2019-11-16` on local[2]; its rate is the
      summary's pairs_scored / seconds.score_and_write (the stage that scores and writes);
  (b) the kernel alone on 2 cores: two processes, each running the job's own per-task
      function (jobs/score.py score_partitions: exclusion mask, scorer, exact top k, output
      rows) on half of the same users against the same pool, with no Spark around it.
Both run `--repeats` times, alternating; prints the median round's rates in pairs/s and
their ratio, and every round's ratio. Results go to bench/results/score_stage.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.record import record

ROOT = Path(__file__).resolve().parent.parent
RUN_DATE = "2019-11-16"
ENV = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1",
           OPENBLAS_NUM_THREADS="1")


def settings(data: Path, work: Path) -> list[str]:
    items = [f"paths.train={data}/MINDsmall_train", f"paths.dev={data}/MINDsmall_dev",
             f"paths.work={work}", "embed.encoder=hashing", "spark.master=local[2]",
             "spark.driver_memory=3g", f"score.table_location={work}/table"]
    return [arg for item in items for arg in ("--set", item)]


def prepare(scale: str) -> tuple[list[str], Path]:
    from common import storage
    from common.config import load_config
    from features.news_vectors import has_vectors
    data = ROOT / "bench" / "data" / scale
    work = ROOT / "bench" / "data" / f"work-score-stage-{scale}"
    if not (data / "MINDsmall_dev" / "behaviors.tsv").exists():
        subprocess.run([sys.executable, "-m", "synthetic", "--scale", scale, "--out",
                        str(data)], cwd=ROOT, env=ENV, check=True, stdout=subprocess.DEVNULL)
    args = settings(data, work)
    if work.exists() and not current_layout(work):
        shutil.rmtree(work)      # built by an older version: other columns
    submit = str(ROOT / "spark-submit.sh")
    if not has_vectors(load_config(overrides=[a for a in args if a != "--set"])):
        subprocess.run([submit, "embed_news", *args], cwd=ROOT, env=ENV, check=True,
                       capture_output=True)
    if not storage.has_committed_run(str(work / "features" / f"as_of={RUN_DATE}T00:00:00" / "state")):
        subprocess.run([submit, "build_features", "--as-of", RUN_DATE, *args], cwd=ROOT,
                       env=ENV, check=True, capture_output=True)
    if not storage.has_committed_run(str(work / "models")):
        export_default_model(args)
    return args, work


def current_layout(work: Path) -> bool:
    """Whether the prepared pool has this version's columns."""
    import pyarrow.parquet as pq
    from common import schemas
    pools = sorted(work.glob("features/as_of=*/pool/runs/*/candidate_pool"))
    return bool(pools) and set(pq.read_schema(next(pools[-1].glob("*.parquet"))).names) == \
        set(schemas.CANDIDATE_POOL.fieldNames())


def export_default_model(args: list[str]) -> None:
    """An untrained model of the default shape and inputs (`model.*`, every side feature),
    standardized with the features' own statistics, as train would export it."""
    from common.config import load_config
    from dcn import shards
    from dcn.export import export_model
    from dcn.model import build_dcn, model_spec
    from dcn.plan import model_arguments
    cfg = load_config(overrides=[a for a in args if a != "--set"])
    features = shards.current_features(cfg)
    dim = features.train.user_dim
    model = build_dcn(dim, features.train.news_dim, **model_arguments(cfg, features))
    export_model(cfg, model, {"user_dim": dim, "news_dim": features.train.news_dim,
                              "model_spec": model_spec(model), "features": features.lineage,
                              "news_vectors": features.lineage.get("news_vectors")})


def kernel_child(work: str, part: int, parts: int) -> dict:
    """One kernel process: the job's per-task function on its share of the users."""
    import datetime as dt
    import types

    import numpy as np
    import pyarrow.parquet as pq

    from common import outputs
    from common.config import load_config
    from dcn import export
    from serving import tasks
    from features.arrays import load_pool
    from features import side_features as side

    cfg = load_config(overrides=[f"paths.work={work}"])
    as_of = outputs.day_start(dt.date.fromisoformat(RUN_DATE))
    state = outputs.current_as_of(cfg, as_of, outputs.STATE, "")
    pool_run = outputs.current_as_of(cfg, as_of, outputs.POOL, "")
    pool = load_pool(f"{pool_run['path']}/candidate_pool")
    users = pq.read_table(f"{state['path']}/state".replace("file://", "")).to_pandas()
    users = users.iloc[part::parts].reset_index(drop=True)
    # the job computes this column in Spark (side_features.user_dense); its values do not
    # change the kernel's work
    users["user_dense"] = [np.zeros(len(side.USER_DENSE_NAMES), np.float32)] * len(users)
    folder = export.model_folder(cfg, "")
    version = export.load_metadata(folder)["version"]
    run = tasks.score_partitions(types.SimpleNamespace(value=pool), folder, version,
                                 tasks.task_settings(cfg), dt.datetime(2019, 11, 16))
    for _ in run(iter([users.iloc[:2]])):      # load the model before the clock starts
        pass
    start = time.perf_counter()
    rows = sum(len(out) for out in run(iter([users])))
    seconds = time.perf_counter() - start
    warm = int((users["history_len"] > 0).sum())
    return {"pairs": warm * len(pool["ids"]), "seconds": seconds, "rows": rows}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--kernel":
        print(json.dumps(kernel_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--repeats", type=int, default=3,
                        help="job and kernel runs, alternating; the figure is the median ratio")
    args = parser.parse_args()
    job_args, work = prepare(args.scale)
    from common.cli import printed_summary

    rounds = []
    for _ in range(args.repeats):
        done = subprocess.run([str(ROOT / "spark-submit.sh"), "score", "--run-date", RUN_DATE,
                               *job_args], cwd=ROOT, env=ENV, check=True, capture_output=True,
                              text=True)
        summary = printed_summary(done.stdout)
        stage_rate = summary["pairs_scored"] / summary["seconds"]["score_and_write"]
        children = [subprocess.Popen([sys.executable, "-m", "bench.score_stage_bench", "--kernel",
                                      str(work), str(i), "2"],
                                     cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
                    for i in range(2)]
        parts = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
        kernel_rate = sum(p["pairs"] for p in parts) / max(p["seconds"] for p in parts)
        rounds.append({"stage_seconds": summary["seconds"], "stage_pairs_per_s": stage_rate,
                       "kernel_2_processes_pairs_per_s": kernel_rate, "kernel_parts": parts,
                       "ratio_stage_over_kernel": stage_rate / kernel_rate,
                       "job_pairs_per_s_whole": summary["pairs_scored"] / sum(summary["seconds"].values())})
    median = sorted(rounds, key=lambda r: r["ratio_stage_over_kernel"])[len(rounds) // 2]
    report = {"scale": args.scale, "pairs": summary["pairs_scored"],
              "candidates": summary["candidates"], "users": summary["users"],
              **median,
              "ratios": [round(r["ratio_stage_over_kernel"], 3) for r in rounds], "rounds": rounds}
    print(f"scale {args.scale}: {summary['users']} users x {summary['candidates']} candidates")
    print(f"score job, stage score_and_write on local[2]: {median['stage_pairs_per_s']:,.0f} pairs/s")
    print(f"kernel alone, 2 processes:                   {median['kernel_2_processes_pairs_per_s']:,.0f} pairs/s")
    print(f"stage / kernel: {median['ratio_stage_over_kernel']:.2f} (median of "
          f"{', '.join(f'{r:.2f}' for r in report['ratios'])})")
    out = ROOT / "bench" / "results" / "score_stage.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    record("score_stage_bench", {
        "score stage / kernel alone, pairs/s (median round)": median["ratio_stage_over_kernel"],
        "every round's ratio": ", ".join(f"{r:.2f}" for r in report["ratios"]),
        "score stage (score_and_write, local[2]), pairs/s": median["stage_pairs_per_s"],
        "kernel alone, 2 processes, pairs/s": median["kernel_2_processes_pairs_per_s"],
        "pairs scored": report["pairs"], "users": report["users"],
        "candidates": report["candidates"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
