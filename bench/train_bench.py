"""Benchmark: the Horovod training loop (dcn/trainer.py, dcn/epochs.py), three ratios measured
side by side.

    .venv/bin/python -m bench.train_bench [--scale mind-small|small|tiny] [--features WORK]
                                          [--steps N] [--repeats R] [--epochs E]

1. Input pipeline: training examples/s when the loop is fed by Petastorm (dcn.data.
   petastorm_batches, as in training) vs by in-memory tensors of the same rows
   (dcn.data.memory_batches), 1 rank, TensorFlow's default threads. Two comparisons:
   streaming every step (Petastorm decodes every row every epoch), and `--epochs` whole
   passes over the shard as training runs them (train.cache_in_memory_mb: Petastorm streams
   the first pass, later passes permute the kept rows) against the same passes from memory.
   Target: >= 0.9.
2. Scaling: examples/s of two ranks (horovodrun -np 2 --gloo, 1 TensorFlow thread and 1
   reader thread per rank) vs one rank. (a) unpinned: the single rank's reader thread can use
   the second core, which the two-rank run has to share; (b) each process pinned to its own
   core, so N ranks get N times the single rank's resources, as one slot per rank on a
   cluster does. Also measured: the same in memory, at 4x the batch, two independent
   processes without Horovod (what this machine's cores allow), and the latency of one
   grouped allreduce of the gradients between two pinned ranks. Target: >= 1.7x.
3. Arithmetic rate: the training step's FLOP/s, counted as 3 x dcn.model.
   count_flops_per_example (forward, plus about twice that for the backward pass) x
   examples/s, as a share of this machine's float32 matrix-multiply rate (tf.matmul of
   1024 x 1024 matrices) measured in the same run with the same thread count.

Every measurement runs the real training step (dcn.trainer.Trainer: DistributedGradientTape,
Adam, the model of conf/default.yaml) in a fresh process (bench/train_worker.py), for
`--steps` timed steps after warm-up steps (tracing, reader start); the two sides of each
ratio alternate `--repeats` times and the medians are compared. Data: the synthetic sample
of `--scale` through embed_news (hashing encoder, 128-d) and build_features, generated once
under bench/data/train-<scale>/, or an existing work folder (`--features`, holding
features/as_of=*/rows/runs/*/_COMMITTED). Results: a table on stdout, JSON in
bench/results/train.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.record import record
from common import storage
from common.config import load_config
from features.news_vectors import has_vectors

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOROVODRUN = str(Path(PYTHON).parent / "horovodrun")
ENV = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2",
           PYTHONPATH=str(ROOT), SPARK_LOCAL_IP="127.0.0.1")
RESULTS = ROOT / "bench" / "results" / "train.json"


# --------------------------------------------------------------------------- data

def prepare_data(scale: str) -> Path:
    """bench/data/train-<scale>/work with a current features run (made once)."""
    base = ROOT / "bench" / "data" / f"train-{scale}"
    mind, work = base / "mind", base / "work"
    settings = ["--set", f"paths.train={mind}/MINDsmall_train", "--set",
                f"paths.dev={mind}/MINDsmall_dev", "--set", f"paths.work={work}",
                "--set", "embed.encoder=hashing", "--set", "spark.master=local[2]",
                "--set", "spark.driver_memory=6g"]
    if not (mind / "MINDsmall_dev" / "behaviors.tsv").exists():
        print(f"generating the {scale} sample into {mind}", file=sys.stderr)
        subprocess.run([PYTHON, "-m", "synthetic", "--scale", scale, "--out", str(mind)],
                       cwd=ROOT, env=ENV, check=True, stdout=subprocess.DEVNULL)
    have = {"embed_news": has_vectors(load_config(overrides=[a for a in settings if a != "--set"])),
            "build_features": any(storage.has_committed_run(str(rows))
                                  for rows in (work / "features").glob("as_of=*/rows"))}
    for job in ("embed_news", "build_features"):
        if not have[job]:
            print(f"running {job} on it", file=sys.stderr)
            subprocess.run([str(ROOT / "spark-submit.sh"), job, *settings], cwd=ROOT, env=ENV,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return work


# --------------------------------------------------------------------------- driver

def measure(spec: dict, ranks: int = 1) -> dict:
    """One measurement: `ranks` > 1 under horovodrun; `ranks` < 0: that many independent
    single-rank processes at once (no Horovod between them), their rates summed."""
    command = [PYTHON, "-m", "bench.train_worker", json.dumps(spec)]
    if ranks > 1:
        command = [HOROVODRUN, "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo", *command]
    procs = [subprocess.Popen(command, cwd=ROOT, env=dict(ENV, BENCH_CORE_INDEX=str(index))
                              if ranks < 0 else ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for index in range(max(1, -ranks))]
    results = [_result(proc, spec) for proc in procs]
    if len(results) == 1:
        return results[0]
    return dict(results[0], examples_per_second=sum(r["examples_per_second"] for r in results),
                processes=len(results))


def _result(proc: subprocess.Popen, spec: dict) -> dict:
    out, err = proc.communicate(timeout=1800)
    for line in out.splitlines():
        if "RESULT " in line:
            return json.loads(line.split("RESULT ", 1)[1])
    raise SystemExit(f"measurement failed: {spec}\n{err[-4000:]}")


def alternate(specs: dict, repeats: int) -> dict:
    """Run each named (spec, ranks) in turn, `repeats` rounds; all results per name."""
    results = {name: [] for name in specs}
    for round_ in range(repeats):
        for name, (spec, ranks) in specs.items():
            result = measure(spec, ranks)
            results[name].append(result)
            print(f"  round {round_ + 1}: {name}: {_short(result)}", file=sys.stderr)
    return results


def _short(result: dict) -> str:
    return ", ".join(f"{k} {v:,.0f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in result.items())


def median(results: list, key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="mind-small", choices=["tiny", "small", "mind-small"])
    parser.add_argument("--features", help="work folder with built features (skips "
                                           "generating data)")
    parser.add_argument("--steps", type=int, default=400, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=5,
                        help="passes over the shard in the whole-run comparison")
    parser.add_argument("--side-features", action="store_true",
                        help="only compare the side-feature model with the vectors-only one")
    args = parser.parse_args()

    work = Path(args.features).resolve() if args.features else prepare_data(args.scale)
    load_before = os.getloadavg()
    from common.config import load_config
    from dcn import shards

    features = shards.current_features(load_config(overrides=[f"paths.work={work}"]))
    base = {"work": str(work), "batch_size": args.batch_size, "warmup": args.warmup,
            "steps": args.steps, "reader_threads": 2, "kind": "train"}

    def spec(**changes):
        return dict(base, **changes)

    if args.side_features:
        return side_feature_cost(args, spec)

    print(f"data: {features.train.uri}: {features.train.rows:,} rows, "
          f"{features.train.row_groups} row groups, vectors {features.train.user_dim}+"
          f"{features.train.news_dim}; batch {args.batch_size}, {args.steps} timed steps, "
          f"{args.repeats} rounds", file=sys.stderr)
    print("1. input pipeline (1 rank, TensorFlow's default threads, 2 reader threads)",
          file=sys.stderr)
    run = dict(passes=args.epochs, warmup=10)
    feed = alternate({
        "petastorm": (spec(source="petastorm", threads=0), 1),
        "memory": (spec(source="memory", threads=0), 1),
        "petastorm_read_only": (spec(source="petastorm", threads=0, kind="read",
                                     steps=4 * args.steps), 1),
        "petastorm_cached_run": (spec(source="petastorm", threads=0, cache=True, **run), 1),
        "memory_run": (spec(source="memory", threads=0, **run), 1),
    }, args.repeats)
    print("2. scaling: 1 TensorFlow thread and 1 reader thread per rank; (a) unpinned, "
          "(b) each process pinned to its own core", file=sys.stderr)
    scaling = alternate({
        "one_rank": (spec(source="petastorm", threads=1, reader_threads=1), 1),
        "two_ranks": (spec(source="petastorm", threads=1, reader_threads=1), 2),
        "one_rank_memory": (spec(source="memory", threads=1, reader_threads=1), 1),
        "two_processes_no_horovod": (spec(source="petastorm", threads=1, reader_threads=1,
                                          kind="train_local"), -2),
    }, args.repeats)
    pinned = dict(threads=1, reader_threads=1, pin=True)
    big = dict(batch_size=4 * args.batch_size, steps=max(1, args.steps // 4),
               warmup=max(1, args.warmup // 4))
    scaling_pinned = alternate({
        "one_rank": (spec(source="petastorm", **pinned), 1),
        "two_ranks": (spec(source="petastorm", **pinned), 2),
        "one_rank_memory": (spec(source="memory", **pinned), 1),
        "two_ranks_memory": (spec(source="memory", **pinned), 2),
        "one_rank_memory_4x_batch": (spec(source="memory", **pinned, **big), 1),
        "two_ranks_memory_4x_batch": (spec(source="memory", **pinned, **big), 2),
        "two_processes_no_horovod": (spec(source="petastorm", kind="train_local", **pinned), -2),
        "allreduce": (spec(kind="allreduce", steps=300, **pinned), 2),
        "one_rank_run_4x_batch": (spec(source="petastorm", cache=True, passes=args.epochs,
                                       **pinned, **dict(big, warmup=2)), 1),
        "two_ranks_run_4x_batch": (spec(source="petastorm", cache=True, passes=args.epochs,
                                        **pinned, **dict(big, warmup=2)), 2),
    }, args.repeats)
    print("3. matrix-multiply rate", file=sys.stderr)
    matmul = alternate({
        "matmul_1_thread": (spec(kind="matmul", threads=1, seconds=5), 1),
        "matmul_default_threads": (spec(kind="matmul", threads=0, seconds=5), 1),
    }, args.repeats)
    report(args, features, feed, scaling, scaling_pinned, matmul,
           (load_before, os.getloadavg()))


ALL_SIDE_FEATURES = ["user_stats", "news_stats", "category", "dot", "topic"]


def side_feature_cost(args, spec) -> None:
    """Examples/s of the model with every side feature against today's vectors-only model,
    one rank, Petastorm-fed, in alternating fresh processes (issue target: >= 0.8). Two
    ways: streaming every step, and whole passes with the shard cached (as training runs)."""
    print("side features: training examples/s, all side features vs vectors only",
          file=sys.stderr)
    run = dict(passes=args.epochs, warmup=10, cache=True)
    results = alternate({
        "vectors_only": (spec(source="petastorm", threads=0), 1),
        "side_features": (spec(source="petastorm", threads=0, features=ALL_SIDE_FEATURES), 1),
        "vectors_only_cached_run": (spec(source="petastorm", threads=0, **run), 1),
        "side_features_cached_run": (spec(source="petastorm", threads=0,
                                          features=ALL_SIDE_FEATURES, **run), 1),
    }, args.repeats)
    rate = {name: median(values, "examples_per_second") for name, values in results.items()}
    streamed = rate["side_features"] / rate["vectors_only"]
    cached = rate["side_features_cached_run"] / rate["vectors_only_cached_run"]
    print(f"side features / vectors only, examples per second: streamed {streamed:.3f}, "
          f"cached whole passes {cached:.3f} (target >= 0.8)")
    out = RESULTS.with_name("train_side_features.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ratio_streamed": streamed, "ratio_cached_run": cached,
                               "examples_per_second": rate, "runs": results}, indent=2))
    record("train_bench --side-features", {
        "side features / vectors only, streamed": streamed,
        "side features / vectors only, cached whole passes": cached,
        **{f"{name}, examples/s": value for name, value in rate.items()}})


def report(args, features, feed, scaling, scaling_pinned, matmul, load) -> None:
    eps = "examples_per_second"
    f = {name: median(results, eps) for name, results in feed.items() if name != "petastorm_read_only"}
    u = {name: median(results, eps) for name, results in scaling.items()}
    p = {name: median(results, eps) for name, results in scaling_pinned.items()
         if name != "allreduce"}
    allreduce = median(scaling_pinned["allreduce"], "seconds_per_allreduce")
    floats = scaling_pinned["allreduce"][0]["floats"]
    flops_example = scaling["one_rank"][0]["flops_per_example_forward"]
    mm1 = median(matmul["matmul_1_thread"], "flops_per_second")
    mm_default = median(matmul["matmul_default_threads"], "flops_per_second")
    step_rate_1 = 3 * flops_example * u["one_rank"]
    step_rate_default = 3 * flops_example * f["petastorm"]
    batch = args.batch_size
    ratios = {
        "petastorm_over_memory": f["petastorm"] / f["memory"],
        "petastorm_cached_run_over_memory_run": f["petastorm_cached_run"] / f["memory_run"],
        "petastorm_over_memory_1_thread": u["one_rank"] / u["one_rank_memory"],
        "two_ranks_over_one": u["two_ranks"] / u["one_rank"],
        "two_processes_without_horovod_over_one": u["two_processes_no_horovod"] / u["one_rank"],
        "two_ranks_over_one_one_core_each": p["two_ranks"] / p["one_rank"],
        "two_ranks_over_one_one_core_each_memory": p["two_ranks_memory"] / p["one_rank_memory"],
        "two_ranks_over_one_one_core_each_memory_4x_batch":
            p["two_ranks_memory_4x_batch"] / p["one_rank_memory_4x_batch"],
        "two_ranks_over_one_one_core_each_run_4x_batch":
            p["two_ranks_run_4x_batch"] / p["one_rank_run_4x_batch"],
        "two_processes_without_horovod_over_one_one_core_each":
            p["two_processes_no_horovod"] / p["one_rank"],
        "step_flops_share_of_matmul_1_thread": step_rate_1 / mm1,
        "step_flops_share_of_matmul_default_threads": step_rate_default / mm_default,
    }
    step_seconds = batch / p["one_rank_memory"]
    rows = [
        ("1. Petastorm-fed training, 1 rank, default threads, streaming", f"{f['petastorm']:,.0f} ex/s"),
        ("   in-memory-fed training, same rows", f"{f['memory']:,.0f} ex/s"),
        ("   Petastorm pipeline alone (no training)",
         f"{median(feed['petastorm_read_only'], 'rows_per_second'):,.0f} rows/s"),
        ("   ratio Petastorm / memory, streaming every step", f"{ratios['petastorm_over_memory']:.3f}"),
        (f"   {args.epochs} epochs as training runs them: Petastorm, then the kept shard",
         f"{f['petastorm_cached_run']:,.0f} ex/s"),
        (f"   {args.epochs} epochs fed from memory", f"{f['memory_run']:,.0f} ex/s"),
        ("   ratio Petastorm / memory, whole run (target >= 0.9)",
         f"{ratios['petastorm_cached_run_over_memory_run']:.3f}"),
        ("2a. 1 rank x 1 thread, Petastorm (unpinned)", f"{u['one_rank']:,.0f} ex/s"),
        ("   2 ranks x 1 thread (horovodrun -np 2)", f"{u['two_ranks']:,.0f} ex/s"),
        ("   ratio 2 ranks / 1 rank (target >= 1.7)", f"{ratios['two_ranks_over_one']:.3f}"),
        ("   1 rank x 1 thread, in memory", f"{u['one_rank_memory']:,.0f} ex/s"),
        ("   ratio Petastorm / memory, 1 thread", f"{ratios['petastorm_over_memory_1_thread']:.3f}"),
        ("   2 independent processes, no Horovod", f"{u['two_processes_no_horovod']:,.0f} ex/s"),
        ("   ratio 2 independent processes / 1 rank",
         f"{ratios['two_processes_without_horovod_over_one']:.3f}"),
        ("2b. one core per rank: 1 rank, Petastorm", f"{p['one_rank']:,.0f} ex/s"),
        ("   2 ranks, Petastorm", f"{p['two_ranks']:,.0f} ex/s"),
        ("   ratio 2 ranks / 1 rank, one core each (target >= 1.7)",
         f"{ratios['two_ranks_over_one_one_core_each']:.3f}"),
        ("   1 rank, in memory", f"{p['one_rank_memory']:,.0f} ex/s"),
        ("   2 ranks, in memory", f"{p['two_ranks_memory']:,.0f} ex/s"),
        ("   ratio 2 ranks / 1 rank, in memory",
         f"{ratios['two_ranks_over_one_one_core_each_memory']:.3f}"),
        (f"   same at batch {4 * batch}: 1 rank", f"{p['one_rank_memory_4x_batch']:,.0f} ex/s"),
        (f"   2 ranks at batch {4 * batch} each", f"{p['two_ranks_memory_4x_batch']:,.0f} ex/s"),
        (f"   ratio 2 ranks / 1 rank, in memory, batch {4 * batch}",
         f"{ratios['two_ranks_over_one_one_core_each_memory_4x_batch']:.3f}"),
        (f"   {args.epochs} epochs at batch {4 * batch} as training runs them: 1 rank",
         f"{p['one_rank_run_4x_batch']:,.0f} ex/s"),
        ("   the same, 2 ranks", f"{p['two_ranks_run_4x_batch']:,.0f} ex/s"),
        (f"   ratio 2 ranks / 1 rank, whole run, batch {4 * batch}",
         f"{ratios['two_ranks_over_one_one_core_each_run_4x_batch']:.3f}"),
        ("   2 independent processes, no Horovod (ceiling)",
         f"{p['two_processes_no_horovod']:,.0f} ex/s"),
        ("   ratio 2 independent processes / 1 rank",
         f"{ratios['two_processes_without_horovod_over_one_one_core_each']:.3f}"),
        (f"   one grouped allreduce of the gradients ({floats:,} floats), 2 ranks",
         f"{allreduce * 1e3:.2f} ms"),
        (f"   one training step at batch {batch}, 1 rank, in memory", f"{step_seconds * 1e3:.2f} ms"),
        ("3. forward FLOPs per example (count_flops_per_example)", f"{flops_example:,}"),
        ("   training step, 1 thread: 3 x FLOPs x ex/s", f"{step_rate_1 / 1e9:.2f} GFLOP/s"),
        ("   tf.matmul 1024x1024 float32, 1 thread", f"{mm1 / 1e9:.2f} GFLOP/s"),
        ("   share of matmul rate, 1 thread", f"{ratios['step_flops_share_of_matmul_1_thread']:.3f}"),
        ("   training step, default threads (Petastorm-fed)",
         f"{step_rate_default / 1e9:.2f} GFLOP/s"),
        ("   tf.matmul, default threads", f"{mm_default / 1e9:.2f} GFLOP/s"),
        ("   share of matmul rate, default threads",
         f"{ratios['step_flops_share_of_matmul_default_threads']:.3f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nTraining benchmark ({features.train.rows:,} rows of {features.train.user_dim}+"
          f"{features.train.news_dim} floats, batch {args.batch_size}, median of "
          f"{args.repeats}; {os.cpu_count()} cores; load average {load[0][0]:.1f} before, "
          f"{load[1][0]:.1f} after)")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>18}")
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": load[0], "load_average_after": load[1]},
        "data": {"train_uri": features.train.uri, "rows": features.train.rows,
                 "row_groups": features.train.row_groups, "user_dim": features.train.user_dim,
                 "news_dim": features.train.news_dim,
                 "scale": None if args.features else args.scale},
        "settings": {"batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
                     "repeats": args.repeats},
        "ratios": ratios,
        "allreduce_seconds": allreduce,
        "runs": {"feed": feed, "scaling": scaling, "scaling_one_core_per_rank": scaling_pinned,
                 "matmul": matmul},
        "flops": {"forward_per_example": flops_example, "training_factor": 3},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"\nsaved {RESULTS.relative_to(ROOT)}")
    record("train_bench", rows)


if __name__ == "__main__":
    main()
