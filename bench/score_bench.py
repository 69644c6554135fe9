"""Benchmark of the scoring kernel, side by side in one run (pairs/s = user x news pairs scored).

    .venv/bin/python -m bench.score_bench [--users 2000] [--news 2000] [--threads 1]

Compares, for the default model (conf/default.yaml `model:`, 128-d user and news vectors):
  (a) a naive Spark pandas UDF that calls the model once per row (pair) (on a small sample),
  (b) the plain batched model call (dcn.scoring.PlainScorer) vs the factorized form
      (dcn.scoring.FactorizedScorer), each scoring `--users` users against `--news` news,
  (c) the roofline: this machine's float32 matrix-multiply rate, measured here with the same
      thread count, divided by the model's FLOPs per pair (dcn.model.count_flops_per_example).
The factorized form does fewer FLOPs than the model (its first dense layer is split), so its
share of the roofline can pass 100%: the roofline is the plain model's bound.
Results go to bench/results/score.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd  # module level: the pandas UDF's type hints are resolved here

from bench.record import record

ROOT = Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--news", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--naive-pairs", type=int, default=400)
    return parser.parse_args()


def best_rate(fn, pairs: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return pairs / best


def matmul_flops_per_s(np, size: int = 1024, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def naive_udf_rate(model_dir: str, user_vecs, news_vecs, pairs: int) -> float:
    """Pairs/s of a Spark pandas UDF calling the model once per row."""
    import numpy as np
    from pyspark.sql import functions as F
    from common.config import load_config
    from common.spark import get_spark
    from dcn import export

    spark = get_spark(load_config(overrides=["spark.master=local[2]"]), "score-bench")
    rng = np.random.default_rng(2)
    rows = [(user_vecs[rng.integers(len(user_vecs))].tolist(), news_vecs[rng.integers(len(news_vecs))].tolist())
            for _ in range(pairs)]
    df = spark.createDataFrame(rows, "user_vec array<float>, news_vec array<float>").repartition(2).cache()
    df.count()
    cache = {}

    @F.pandas_udf("float")
    def per_row(users: pd.Series, news: pd.Series) -> pd.Series:
        if "model" not in cache:
            cache["model"] = export.load_model(model_dir)[0]
        model = cache["model"]
        out = [float(model({"user_vec": np.asarray([u], np.float32), "news_vec": np.asarray([n], np.float32)},
                           training=False)[0, 0]) for u, n in zip(users, news)]
        return pd.Series(out)

    df.select(per_row("user_vec", "news_vec")).write.format("noop").mode("overwrite").save()  # warm
    start = time.perf_counter()
    df.select(per_row("user_vec", "news_vec")).write.format("noop").mode("overwrite").save()
    return pairs / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from common.config import load_config
    from dcn import export
    from dcn.model import build_dcn
    from dcn.spec import count_flops_per_example, dcn_spec
    from dcn.scoring import FactorizedScorer, PlainScorer

    cfg = load_config(overrides=[f"paths.work={ROOT / 'bench' / 'data' / 'score-bench'}"])
    spec = dcn_spec(128, 128, **{k: cfg[f"model.{k}"] for k in
                                 ("cross_layers", "cross_kind", "cross_rank", "deep_units",
                                  "dropout", "structure", "seed")})
    model = build_dcn(**spec)
    rng = np.random.default_rng(0)
    users = rng.standard_normal((args.users, 128)).astype(np.float32)
    news = rng.standard_normal((args.news, 128)).astype(np.float32)
    pairs = args.users * args.news

    plain, fact = PlainScorer(model), FactorizedScorer(model)
    batch = 64  # users per call, as score.user_batch_size

    def run(scorer):
        for start in range(0, args.users, batch):
            scorer.logits(users[start:start + batch], news)

    check = np.abs(plain.logits(users[:8], news) - fact.logits(users[:8], news)).max()
    plain_rate = best_rate(lambda: run(plain), pairs)
    fact_rate = best_rate(lambda: run(fact), pairs)
    matmul = matmul_flops_per_s(np)
    flops = count_flops_per_example(spec)
    roofline = matmul / flops
    version = export.export_model(cfg, model, {"user_dim": 128, "news_dim": 128})
    naive_rate = naive_udf_rate(export.model_folder(cfg, version), users, news, args.naive_pairs)

    report = {
        "threads": args.threads, "users": args.users, "news": args.news, "spec": spec,
        "max_abs_logit_difference": float(check), "flops_per_pair": flops,
        "matmul_gflops": matmul / 1e9, "roofline_pairs_per_s": roofline,
        "naive_udf_pairs_per_s": naive_rate, "plain_pairs_per_s": plain_rate,
        "factorized_pairs_per_s": fact_rate,
        "factorized_over_naive": fact_rate / naive_rate, "factorized_over_plain": fact_rate / plain_rate,
        "plain_share_of_roofline": plain_rate / roofline,
        "factorized_share_of_roofline": fact_rate / roofline,
    }
    print(f"model {spec['cross_layers']}x{spec['cross_kind']} cross, deep {spec['deep_units']}, "
          f"{spec['structure']}; {flops:,} FLOPs/pair; {args.threads} thread(s)")
    print(f"matmul {matmul / 1e9:.1f} GFLOP/s -> roofline {roofline:,.0f} pairs/s")
    for name, rate in (("naive per-row UDF", naive_rate), ("plain batched", plain_rate),
                       ("factorized", fact_rate)):
        print(f"  {name:<18} {rate:>14,.0f} pairs/s   {rate / roofline:7.1%} of roofline")
    print(f"factorized / naive UDF: {fact_rate / naive_rate:,.0f}x   factorized / plain: "
          f"{fact_rate / plain_rate:.2f}x   (max |logit difference| {check:.2e})")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "score.json").write_text(json.dumps(report, indent=2))
    record("score_bench", {
        "factorized / naive per-row UDF, pairs/s": report["factorized_over_naive"],
        "factorized / plain batched, pairs/s": report["factorized_over_plain"],
        "plain batched, share of the roofline": report["plain_share_of_roofline"],
        "factorized, share of the roofline": report["factorized_share_of_roofline"],
        "naive per-row UDF, pairs/s": naive_rate, "plain batched, pairs/s": plain_rate,
        "factorized, pairs/s": fact_rate, "roofline, pairs/s": roofline,
        "float32 matmul, GFLOP/s": matmul / 1e9, "model FLOPs per pair": flops,
        "max abs logit difference, plain vs factorized": float(check)})


if __name__ == "__main__":
    main()
