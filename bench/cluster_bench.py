"""The same job on local[2] and on a 2-worker standalone cluster (1 core each), side by side.

    .venv/bin/python -m bench.cluster_bench [--scale small] [--job build_features]

Starts a real standalone cluster on 127.0.0.1 (deploy/local_cluster.py), then runs the job
through ./spark-submit.sh on `local[2]` and on the cluster (client mode, the packed
environment shipped with spark.ship_environment=pack), each into its own work folder built
from the same news vectors. Prints, for each: the wall time of the whole spark-submit, the
job's own stages (its summary's `seconds`, i.e. without JVM start and environment unpacking),
and the ratios cluster / local. Results go to bench/results/cluster.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.record import record
from common.config import load_config
from features.news_vectors import has_vectors
from common.cli import printed_summary
from deploy import local_cluster

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")
JOB_ARGS = {"build_features": ["--as-of", "2019-11-16"], "embed_news": []}


def run(job: str, settings: list[str], master_args: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run([str(ROOT / "spark-submit.sh"), job, *JOB_ARGS[job], *settings, "--",
                           *master_args], cwd=ROOT, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{job} failed:\n{done.stderr[-3000:]}")
    return wall, printed_summary(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--job", default="build_features", choices=sorted(JOB_ARGS))
    args = parser.parse_args()
    data = ROOT / "bench" / "data" / args.scale
    if not (data / "MINDsmall_dev" / "behaviors.tsv").exists():
        subprocess.run([sys.executable, "-m", "synthetic", "--scale", args.scale,
                        "--out", str(data)], cwd=ROOT, env=ENV, check=True,
                       stdout=subprocess.DEVNULL)
    base = ROOT / "bench" / "data" / f"work-cluster-{args.scale}"
    common = [f"paths.train={data}/MINDsmall_train", f"paths.dev={data}/MINDsmall_dev",
              "embed.encoder=hashing", "features.files=4", "spark.shuffle_partitions=8"]
    vectors = base / "vectors"
    if not has_vectors(load_config(overrides=[*common, f"paths.work={vectors}"])):
        run("embed_news", [a for i in [*common, f"paths.work={vectors}"] for a in ("--set", i)],
            ["--master", "local[2]"])
    results = {}
    daemons = Path(tempfile.mkdtemp(prefix="newsrec-cluster-"))
    url = local_cluster.start(daemons, workers=2, cores=1, memory="3g")
    try:
        for name, master_args, extra in (
                ("local[2]", ["--master", "local[2]"], []),
                ("cluster", ["--master", url, "--conf", "spark.executor.memory=2g"],
                 ["spark.ship_environment=pack"])):
            work = base / name.replace("[", "").replace("]", "")
            shutil.rmtree(work, ignore_errors=True)
            if args.job != "embed_news":
                shutil.copytree(vectors / "news_vectors", work / "news_vectors")
            items = [*common, f"paths.work={work}", *extra]
            wall, summary = run(args.job, [a for i in items for a in ("--set", i)], master_args)
            results[name] = {"wall_seconds": wall, "job_seconds": sum(summary["seconds"].values()),
                             "stages": summary["seconds"]}
    finally:
        local_cluster.stop(daemons)
        shutil.rmtree(daemons, ignore_errors=True)
    local, cluster = results["local[2]"], results["cluster"]
    report = {"scale": args.scale, "job": args.job, "runs": results,
              "ratio_wall_cluster_over_local": cluster["wall_seconds"] / local["wall_seconds"],
              "ratio_job_cluster_over_local": cluster["job_seconds"] / local["job_seconds"]}
    print(f"{args.job} at {args.scale}: local[2] against 2 workers x 1 core")
    print("| run | whole spark-submit s | job stages s |")
    print("| --- | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['wall_seconds']:.1f} | {r['job_seconds']:.1f} |")
    print(f"cluster / local: whole {report['ratio_wall_cluster_over_local']:.2f}, "
          f"job stages {report['ratio_job_cluster_over_local']:.2f}")
    out = ROOT / "bench" / "results" / "cluster.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    record("cluster_bench", {
        "cluster / local, whole spark-submit": report["ratio_wall_cluster_over_local"],
        "cluster / local, job stages": report["ratio_job_cluster_over_local"],
        **{f"{name}, {what} seconds": r[key] for name, r in results.items() for what, key in
           (("whole spark-submit", "wall_seconds"), ("job stages", "job_seconds"))}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
