"""score.mode cascade against the exact factorized mode, side by side in one run.

    .venv/bin/python -m bench.cascade_bench [--scale small] [--pool 20000] [--users 20000]
                                            [--exact-users 1000] [--recall-users 1000]
                                            [--skip-job]

Builds once, under bench/data/: the synthetic sample, its news vectors (the default encoder),
its features as of 2019-11-16 and a model trained on them by one rank (`python -m dcn.train`,
which saves the cascade's landmark users). From that trained model's user state and candidate pool
it makes a larger day (bench-made, as of the same moment): `--pool` news, each a mix of two
real pool news' vectors with the first one's category and topic vector and a third one's
popularity features, and `--users` users, each a mix of two real users' vectors with the
first one's counts and as many clicked news of the new pool (up to 20). Then, in one run:

  1. the job's own per-task function (serving/tasks.py score_partitions) on one core, in this
     process: exact on `--exact-users` users, cascade on all `--users`; core-seconds per user;
  2. recall of the exact lists, by evaluate's own code (evaluation/cascade_recall.py):
     recall@10 of the cascade's top 10 and recall@100 of its short list, `--recall-users`
     users;
  3. the whole score job (`./spark-submit.sh score`, local[2], score.partitions=2) in each
     mode on every user, wall seconds of its scoring stages (the cascade's include the pool
     index made on the driver), and the cascade job once more on a day of
     `--job-users-large` users with the same pool: (its seconds - the first's) / (the extra
     users) is the cascade's marginal seconds per user, the job's fixed costs (Spark stage,
     index) left out; `--skip-job` leaves it out;
  4. the dev impressions of the real sample replayed through each mode, restricted to each
     impression's candidates (the short list: the `retrieve` best candidates by the retrieval,
     ranked by the DCN, the rest after them by the retrieval's score; bench/cascade_replay.py): AUC, MRR, nDCG@5, nDCG@10.

Results go to BENCHMARKS.md (section cascade_bench).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from bench.record import record

ROOT = Path(__file__).resolve().parent.parent
RUN_DATE = "2019-11-16"
AS_OF = f"{RUN_DATE}T00:00:00"
ENV = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="2")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--pool", type=int, default=20000)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--exact-users", type=int, default=1000)
    parser.add_argument("--recall-users", type=int, default=1000)
    parser.add_argument("--skip-job", action="store_true")
    parser.add_argument("--job-users-large", type=int, default=100000,
                        help="users of a second bench-made day (same pool) the cascade job also "
                             "scores: its marginal seconds per user")
    return parser.parse_args()


def settings(data: Path, work: Path, *extra: str) -> list[str]:
    # one scoring task per core (score.partitions), in both modes
    items = [f"paths.train={data}/MINDsmall_train", f"paths.dev={data}/MINDsmall_dev",
             f"paths.work={work}", "spark.master=local[2]", "spark.driver_memory=3g",
             "score.partitions=2",
             f"score.table_location={work}/table", *extra]
    return [arg for item in items for arg in ("--set", item)]


def config(args: list[str]):
    from common.config import load_config
    return load_config(overrides=[a for a in args if a != "--set"])


def prepare(scale: str) -> tuple[Path, Path]:
    """The sample and a work folder with its features and a trained model (built once)."""
    from common import storage
    from dcn import export
    data = ROOT / "bench" / "data" / scale
    work = ROOT / "bench" / "data" / f"work-cascade-{scale}"
    if not (data / "MINDsmall_dev" / "behaviors.tsv").exists():
        subprocess.run([sys.executable, "-m", "synthetic", "--scale", scale, "--out", str(data)],
                       cwd=ROOT, env=ENV, check=True, stdout=subprocess.DEVNULL)
    args = settings(data, work)
    submit = str(ROOT / "spark-submit.sh")
    state_root = work / "features" / f"as_of={AS_OF}" / "state"
    if not storage.has_committed_run(str(state_root)):
        for job in (["embed_news"], ["build_features", "--as-of", RUN_DATE]):
            print(f"cascade_bench: {job[0]}", file=sys.stderr)
            subprocess.run([submit, *job, *args], cwd=ROOT, env=ENV, check=True, capture_output=True)
    folder = (work / "models")
    cfg = config(args)
    try:
        found = storage.has_committed_run(str(folder)) and \
            export.load_retrieval(export.model_folder(cfg))
        current = bool(found) and (len(found.landmark_users), found.landmark_news) == \
            (cfg["retrieval.landmark_users"], cfg["retrieval.landmark_news"])
    except ValueError:      # a retrieval of an older format
        current = False
    if not current:
        print("cascade_bench: train (one rank)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "dcn.train", *args, "--force"], cwd=ROOT, env=ENV,
                       check=True, capture_output=True)
    return data, work


def mix(rng, rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` new rows a*x_i + (1-a)*x_j (a in [0.6, 1]) and the indices i, j."""
    i = rng.integers(0, len(rows), count)
    j = rng.integers(0, len(rows), count)
    a = rng.uniform(0.6, 1.0, (count, 1)).astype(np.float32)
    return (a * rows[i] + (1 - a) * rows[j]).astype(np.float32), i, j


def enlarge(work: Path, big: Path, n_news: int, n_users: int) -> None:
    """The bench-made day of the module docstring, as committed state and pool runs of `big`
    (the trained models copied beside them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from common import columns as C
    from common import schemas, storage
    from features.arrays import load_pool, sample_profiles
    marker = big / "made.json"
    wanted = {"pool": n_news, "users": n_users, "model": sorted(os.listdir(work / "models" / "runs"))}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    shutil.rmtree(big, ignore_errors=True)
    shutil.copytree(work / "models", big / "models")
    rng = np.random.default_rng(0)
    real = storage.current_run(str(work / "features" / f"as_of={AS_OF}" / "pool"), "pool")
    pool = load_pool(f"{real['path']}/candidate_pool")
    fs, path = storage.filesystem(f"{real['path']}/candidate_pool")
    raw = pq.read_table(path, filesystem=fs).sort_by(C.NEWS_ID)   # load_pool's order
    vectors, i, _ = mix(rng, pool["vectors"], n_news)
    k = rng.integers(0, len(pool["ids"]), n_news)        # popularity from a third news
    ids = np.array([f"B{n}" for n in range(n_news)], dtype=object)
    table = raw.take(i)
    for name, values in ((C.NEWS_ID, pa.array(ids, pa.string())),
                         (C.NEWS_VEC, pa.array(list(vectors), pa.list_(pa.float32()))),
                         *((name, raw.column(name).take(k)) for name in
                           (C.IMPRESSIONS, C.CLICKS, C.AGE_HOURS, C.NEWS_DENSE))):
        table = table.set_column(table.schema.get_field_index(name), name, values)
    write_run(big, "pool", "candidate_pool", table, schemas.CANDIDATE_POOL, real["summary"])
    state = storage.current_run(str(work / "features" / f"as_of={AS_OF}" / "state"), "state")
    users = sample_profiles(f"{state['path']}/state", 10 ** 9)
    user_vecs, i, _ = mix(rng, users["vectors"], n_users)
    history = users["history_len"][i]
    clicked = [sorted(ids[rng.choice(n_news, min(int(h), 20), replace=False)].tolist()) for h in history]
    impressions = np.expm1(users["dense"][i, 1]).round().astype(np.int64)
    table = pa.table({C.USER_ID: [f"BU{k}" for k in range(n_users)], C.CLICKED_NEWS: clicked,
                      C.VECTOR_SUM: [v.astype(np.float64) * max(int(h), 1) for v, h in zip(user_vecs, history)],
                      C.HISTORY_LEN: history.astype(np.int32), C.USER_VEC: list(user_vecs),
                      C.IMPRESSIONS: impressions})
    write_run(big, "state", "state", table, schemas.USER_STATE, state["summary"], files=8)
    marker.write_text(json.dumps(wanted))


def write_run(big: Path, kind: str, folder: str, table, spark_schema, summary: dict,
              files: int = 1) -> None:
    """`table` as the committed run of `kind` as of the bench day, with the real run's summary."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from common import storage
    schema = pa.schema([pa.field(f.name, table.schema.field(f.name).type, nullable=f.nullable)
                        for f in spark_schema.fields])
    table = table.select(schema.names).cast(schema)
    root = str(big / "features" / f"as_of={AS_OF}" / kind)
    run_id = storage.start_run(root)
    fs, out = storage.filesystem(f"{storage.run_dir(root, run_id)}/{folder}")
    fs.create_dir(out, recursive=True)
    for part, rows in enumerate(np.array_split(np.arange(table.num_rows), files)):
        pq.write_table(table.take(rows), f"{out}/part-{part:05d}.parquet", filesystem=fs)
    storage.publish_run(root, run_id, summary, keep_runs=1)


def index_seconds(cfg, pool) -> float:
    """Process CPU seconds of the cascade's pool index (made once per run, on the driver), on
    one thread; the index goes into `pool` as the score job ships it."""
    from threadpoolctl import threadpool_limits
    from dcn import export
    from serving import tasks
    folder = export.model_folder(cfg, cfg["score.model_version"])
    settings = dict(tasks.task_settings(cfg), mode="cascade", threads_per_task=1)
    with threadpool_limits(1):
        tasks.cached_retrieval(folder, tasks.cached_scorer(folder, "factorized", 1))   # loads
        start = time.process_time()
        pool["retrieval_index"] = tasks.pool_index(folder, settings, pool)
        return time.process_time() - start


def kernel_seconds(cfg, mode: str, frame, pool) -> float:
    """Process CPU seconds of the job's per-task function over `frame`, on one thread."""
    from threadpoolctl import threadpool_limits
    from dcn import export
    from serving import tasks
    folder = export.model_folder(cfg, cfg["score.model_version"])
    settings = dict(tasks.task_settings(cfg), mode=mode, threads_per_task=1)
    run = tasks.score_partitions(types.SimpleNamespace(value=pool), folder, "bench", settings,
                                 dt.datetime(2019, 11, 16))
    with threadpool_limits(1):
        for _ in run(iter([frame.iloc[:8]])):     # loads the scorer (and retrieval) once
            pass
        start = time.process_time()
        rows = sum(len(part) for part in run(iter([frame])))
        seconds = time.process_time() - start
    assert rows > 0
    return seconds


def profiles_frame(cfg):
    import pandas as pd
    from common import columns as C
    from features.arrays import sample_profiles, state_and_pool
    state_uri, pool_uri = state_and_pool(cfg, dt.datetime.fromisoformat(AS_OF))
    users = sample_profiles(state_uri, 10 ** 9)
    frame = pd.DataFrame({C.USER_ID: users["ids"], C.CLICKED_NEWS: users["clicked"],
                          C.HISTORY_LEN: users["history_len"], C.USER_VEC: list(users["vectors"]),
                          C.USER_DENSE: list(users["dense"])})
    return frame.sort_values(C.USER_ID).reset_index(drop=True), pool_uri


def job_seconds(args: list[str], mode: str) -> dict:
    out = subprocess.run([str(ROOT / "spark-submit.sh"), "score", "--run-date", RUN_DATE, *args,
                          "--set", f"score.mode={mode}", "--set", f"score.table=bench_{mode}"],
                         cwd=ROOT, env=ENV, check=True, capture_output=True, text=True).stdout
    summary = json.loads(out[out.index("{"):])
    seconds = summary["seconds"]["score_and_write"] + summary["seconds"].get("retrieval_index", 0.0)
    return {"seconds": seconds, "rows": summary["rows_written"]}


def main() -> None:
    options = parse_args()
    data, work = prepare(options.scale)
    big = ROOT / "bench" / "data" / f"work-cascade-{options.scale}-{options.pool}x{options.users}"
    enlarge(work, big, options.pool, options.users)
    from dcn import export
    from evaluation.cascade_recall import cascade_recall
    from features.arrays import load_pool
    from bench.cascade_replay import replay
    version = os.path.basename(export.model_folder(config(settings(data, work))))
    args = settings(data, big, f"score.model_version={version}")
    cfg = config(args)
    retrieve = cfg["score.retrieve"]
    frame, pool_uri = profiles_frame(cfg)
    pool = load_pool(pool_uri)
    print(f"cascade_bench: {len(frame)} users, {len(pool['ids'])} news", file=sys.stderr)
    exact_s = kernel_seconds(cfg, "factorized", frame.iloc[:options.exact_users], pool)
    index_s = index_seconds(cfg, pool)
    cascade_s = kernel_seconds(cfg, "cascade", frame, pool)
    exact_per_user = exact_s / min(options.exact_users, len(frame))
    cascade_per_user = cascade_s / len(frame)
    recall = cascade_recall(cfg, export.model_folder(cfg, version), AS_OF, users=options.recall_users)
    figures = [
        ("pool news x users (bench-made day)", f"{len(pool['ids'])} x {len(frame)}"),
        ("score.retrieve", retrieve),
        ("retrieval: landmark users, landmark news (multiply-adds per pair: landmark news + 1)",
         ", ".join(str(export.load_metadata(export.model_folder(cfg, version))["retrieval"][key])
                   for key in ("landmark_users", "landmark_news"))),
        ("per-task function, cascade / exact core-seconds per user", cascade_per_user / exact_per_user),
        ("per-task function, exact core-seconds per user", exact_per_user),
        ("per-task function, cascade core-seconds per user", cascade_per_user),
        ("cascade's pool index (once per run, on the driver), core-seconds", index_s),
        ("cascade per user with the index spread over these users / exact per user",
         (cascade_s + index_s) / len(frame) / exact_per_user),
        (f"recall@{recall['k']} of the exact top {recall['k']}, mean over users", recall["recall_at_k"]),
        (f"recall@{recall['k']}, lowest user", recall["min_recall_at_k"]),
        ("recall@100 of the exact top 100 in the short list", recall["short_list_recall_at_100"]),
        ("users in the recall sample", recall["users"]),
    ]
    for name, users in (("MIND-large", 1.0e6), ("10M users", 1.0e7)):
        # SCALING.md's C_score: users x the per-task function's core-seconds per user
        figures += [(f"scoring core-hours a day, {name} ({users:.1e} users x {len(pool['ids'])} news), "
                     f"{mode}", users * per_user / 3600)
                    for mode, per_user in (("exact", exact_per_user), ("cascade", cascade_per_user))]
    if not options.skip_job:
        exact_job = job_seconds(args, "factorized")
        cascade_job = job_seconds(args, "cascade")
        assert exact_job["rows"] == cascade_job["rows"]
        large = big.with_name(f"{big.name}-{options.job_users_large}")
        enlarge(work, large, options.pool, options.job_users_large)
        large_job = job_seconds(settings(data, large, f"score.model_version={version}"), "cascade")
        marginal = (large_job["seconds"] - cascade_job["seconds"]) / (options.job_users_large - len(frame))
        figures += [("score job (local[2]), cascade / exact seconds of retrieval_index + score_and_write",
                     cascade_job["seconds"] / exact_job["seconds"]),
                    ("score job, exact seconds", exact_job["seconds"]),
                    ("score job, cascade seconds", cascade_job["seconds"]),
                    (f"score job, cascade seconds on {options.job_users_large} users",
                     large_job["seconds"]),
                    ("score job, cascade marginal seconds per user / exact seconds per user",
                     marginal / (exact_job["seconds"] / len(frame)))]
    dev = replay(config(settings(data, work)), (retrieve, 10, 5))
    for label, metrics in dev.items():
        figures.append((f"dev replay, {label}: AUC / MRR / nDCG@5 / nDCG@10",
                        " / ".join(f"{metrics[m]:.4f}" for m in ("auc", "mrr", "ndcg@5", "ndcg@10"))))
    exact_ndcg = dev["exact"]["ndcg@10"]
    for label, metrics in dev.items():
        if label != "exact":
            figures.append((f"dev replay, {label}: nDCG@10 - exact", metrics["ndcg@10"] - exact_ndcg))
    for label, value in figures:
        print(f"{label}: {value}")
    record("cascade_bench", figures)


if __name__ == "__main__":
    main()
