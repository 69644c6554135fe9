"""Benchmark: build_features (Spark, local[2], through ./spark-submit.sh) against a
single-process pandas implementation of the same rows, side by side in one run.

    .venv/bin/python -m bench.build_features_bench [--scale mind-small] [--repeats 1]

Generates the synthetic sample (once, under bench/data/) and its news vectors with the
hashing encoder, then times each side (alternating, `--repeats` times) and prints rows/s, their
ratio and peak memory (Spark: the sum of the resident memory of the JVM and its Python
workers, sampled every 0.2 s; pandas: the process's peak RSS).

- Spark: the whole full rebuild (`build_features`, no validation hours): train and dev rows,
  user state, first-seen table and candidate pool.
- pandas (bench/pandas_train_rows.py): the same train and dev rows, every column (the
  point-in-time user vectors and the side features), from the same two files. Its rows equal
  Spark's (tests/test_user_state.py), except which negatives the train rows keep.

Timing is wall-clock for the whole command, interpreter and JVM start-up included. A third
command measures the floor of any Spark implementation: a Spark session (local[2]) that only
reads the pandas side's finished rows and writes them again with build_features' Parquet
writer (bench/spark_copy_floor.py). Results go to bench/results/build_features.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.record import record
from common.config import load_config
from features.news_vectors import current_vectors, has_vectors

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def sample_tree_rss(proc: psutil.Process, stop: threading.Event, peak: list) -> None:
    while not stop.is_set():
        try:
            procs = [proc] + proc.children(recursive=True)
            total = sum(p.memory_info().rss for p in procs if p.is_running())
            peak[0] = max(peak[0], total)
        except psutil.Error:
            pass
        time.sleep(0.2)


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(seconds, peak tree RSS in MB, stdout) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=sample_tree_rss, args=(psutil.Process(proc.pid), stop, peak))
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err[-3000:]}")
    return seconds, peak[0] / 2**20, out


def reference_settings(cfg, data: Path) -> list[str]:
    """The reference's arguments for the side features the Spark job builds with `cfg`."""
    return ["--news", f"{data}/MINDsmall_train/news.tsv", f"{data}/MINDsmall_dev/news.tsv",
            "--window-hours", str(cfg["features.popularity_window_hours"]),
            "--ctr-prior", str(cfg["features.ctr_prior"]),
            "--prior-impressions", str(cfg["features.ctr_prior_impressions"]),
            "--buckets", str(cfg["features.category_buckets"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="mind-small", choices=["tiny", "small", "mind-small"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    data = ROOT / "bench" / "data" / args.scale
    work = ROOT / "bench" / "data" / f"work-{args.scale}"
    settings = ["--set", f"paths.train={data}/MINDsmall_train", "--set", f"paths.dev={data}/MINDsmall_dev",
                "--set", f"paths.work={work}", "--set", "embed.encoder=hashing",
                "--set", "spark.master=local[2]", "--set", "spark.driver_memory=6g",
                # the same train rows as the reference: none held out as validation rows
                "--set", "features.validation_hours=0"]
    cfg = load_config(overrides=[s for s in settings if s != "--set"])
    if not (data / "MINDsmall_dev" / "behaviors.tsv").exists():
        subprocess.run([PYTHON, "-m", "synthetic", "--scale", args.scale, "--out", str(data)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    if not has_vectors(cfg):
        subprocess.run([str(ROOT / "spark-submit.sh"), "embed_news", *settings], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uris = current_vectors(cfg)["vectors_uris"]
    if len(uris) != 1:
        sys.exit(f"{work}: expected the vectors of one embed_news run, found {len(uris)} "
                 "partitions: delete that folder")
    vectors_path = uris[0].replace("file://", "")

    results = {"spark": [], "pandas": [], "spark_copy_floor": []}
    for _ in range(args.repeats):
        seconds, peak, out = timed([str(ROOT / "spark-submit.sh"), "build_features", *settings])
        summary = json.loads(out)
        results["spark"].append({"seconds": seconds, "peak_rss_mb": peak,
                                 "rows": sum(split["rows"] for split in summary["rows"].values()),
                                 "train_rows": summary["rows"]["train"]["rows"],
                                 "train_rows_stage_seconds": summary["seconds"]["train_rows"],
                                 "all_outputs": True})
        out_file = work / "pandas_train.parquet"
        seconds, peak, out = timed([PYTHON, "-m", "bench.pandas_train_rows",
                                    f"{data}/MINDsmall_train/behaviors.tsv", vectors_path,
                                    str(out_file), str(cfg["features.npratio"]),
                                    *reference_settings(cfg, data),
                                    "--dev", f"{data}/MINDsmall_dev/behaviors.tsv",
                                    "--dev-out", str(work / "pandas_dev.parquet")])
        results["pandas"].append({**json.loads(out), "seconds": seconds, "peak_rss_mb": peak})
        copy_dir = work / "spark_copy_floor"
        subprocess.run(["rm", "-rf", str(copy_dir)], check=True)
        seconds, peak, out = timed([PYTHON, "-m", "bench.spark_copy_floor",
                                    str(copy_dir), str(out_file), str(work / "pandas_dev.parquet"),
                                    *settings])
        results["spark_copy_floor"].append({**json.loads(out.strip().splitlines()[-1]),
                                            "seconds": seconds, "peak_rss_mb": peak})

    spark = min(results["spark"], key=lambda r: r["seconds"])
    pandas = min(results["pandas"], key=lambda r: r["seconds"])
    floor = min(results["spark_copy_floor"], key=lambda r: r["seconds"])
    floor_rate = floor["rows"] / floor["seconds"]
    spark_rate = spark["rows"] / spark["seconds"]
    pandas_rate = pandas["rows"] / pandas["seconds"]
    report = {
        "scale": args.scale, "cores": os.cpu_count(), "repeats": args.repeats,
        "spark_rows_per_s": spark_rate, "pandas_rows_per_s": pandas_rate,
        "ratio_spark_over_pandas": spark_rate / pandas_rate,
        "spark_copy_floor_rows_per_s": floor_rate,
        "ratio_spark_copy_floor_over_pandas": floor_rate / pandas_rate,
        "spark_peak_rss_mb": spark["peak_rss_mb"], "pandas_peak_rss_mb": pandas["peak_rss_mb"],
        "runs": results,
    }
    print(f"scale {args.scale}: train and dev rows spark {spark['rows']:,}, pandas "
          f"{pandas['rows']:,} (train rows {spark['train_rows']:,} and {pandas['train_rows']:,})")
    print(f"{'':<8}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}")
    print(f"{'spark':<8}{spark['seconds']:>10.1f}{spark_rate:>12,.0f}{spark['peak_rss_mb']:>10,.0f}"
          "   (whole job: JVM start, parsing, train+dev rows, profiles, pool)")
    print(f"{'pandas':<8}{pandas['seconds']:>10.1f}{pandas_rate:>12,.0f}{pandas['peak_rss_mb']:>10,.0f}"
          "   (train and dev rows: the same rows)")
    print(f"{'floor':<8}{floor['seconds']:>10.1f}{floor_rate:>12,.0f}{floor['peak_rss_mb']:>10,.0f}"
          f"   (Spark only reading the finished rows and writing them: write "
          f"{floor['write_seconds']:.1f} s)")
    print(f"ratio spark/pandas rows/s: {report['ratio_spark_over_pandas']:.2f}")
    print(f"ratio floor/pandas rows/s: {report['ratio_spark_copy_floor_over_pandas']:.2f}"
          "   (the best any Spark DataFrame implementation could reach)")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "build_features.json").write_text(json.dumps(report, indent=2))
    record("build_features_bench", {
        "spark / pandas, rows/s": report["ratio_spark_over_pandas"],
        "spark copy floor / pandas, rows/s": report["ratio_spark_copy_floor_over_pandas"],
        "spark rows/s (whole build_features)": spark_rate, "pandas rows/s": pandas_rate,
        "spark copy floor rows/s": floor_rate, "spark seconds": spark["seconds"],
        "pandas seconds": pandas["seconds"], "spark copy floor seconds": floor["seconds"],
        "spark rows (train and dev)": spark["rows"], "pandas rows (train and dev)": pandas["rows"],
        "spark peak MB (JVM and Python workers)": spark["peak_rss_mb"],
        "pandas peak MB": pandas["peak_rss_mb"]})


if __name__ == "__main__":
    main()
