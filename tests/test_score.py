"""The scoring job: exact top-k into a partitioned table, safe reruns, clear errors."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest

from common.errors import UserInputError
from common.errors import ConfigError
from dcn import export
from dcn.export import export_model
from evaluation.inputs import listed_candidates, resolve_inputs
from evaluation.scorers import scored_rows
from jobs import build_features, embed_news, score
from serving import tasks
from serving.table import TableWriter
from tests.builders import features, make_cfg, model_metadata, random_model, write_sample

SCORE_DAY = dt.datetime(2019, 11, 16)

pytestmark = pytest.mark.spark
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    write_sample(root)
    cfg = make_cfg(root, "features.candidate_window_hours=200", "score.k=3",
                   f"score.table_location={root / 'table'}", "score.table=recs_test")
    embed_news.run(cfg, spark)
    rows = build_features.run(cfg, spark, as_of=SCORE_DAY)
    stats = rows["dense_stats"]
    model = random_model(16, features=["user_stats", "news_stats", "category", "dot", "topic"],
                         pair_dense_mean=stats["pair_dense"]["mean"],
                         pair_dense_std=stats["pair_dense"]["std"],
                         user_dense_mean=stats["user_dense"]["mean"],
                         user_dense_std=stats["user_dense"]["std"],
                         news_dense_mean=stats["news_dense"]["mean"],
                         news_dense_std=stats["news_dense"]["std"], category_buckets=1024)
    version = export_model(cfg, model, model_metadata(cfg, 16, model=model))
    cfg = cfg.with_overrides([f"score.model_version={version}"])   # no registry: named
    summary = score.run(cfg, "2019-11-16", spark)
    return root, cfg, model, version, summary


def brute_force(cfg, model):
    """Expected top 3 per user: the Keras model (side features included) on every (user, pool
    news) pair, clicked excluded, ordered by logit then news id; cold users too (the default
    score.cold_users: model). Returns {user: [(news, probability)]}."""
    profiles, pool = features(cfg, "state", SCORE_DAY), features(cfg, "candidate_pool", SCORE_DAY)
    pool = pool.sort_values("news_id").reset_index(drop=True)
    n = len(pool)
    news = {"news_vec": np.stack(pool["news_vec"]).astype(np.float32),
            "news_dense": np.stack(pool["news_dense"]).astype(np.float32),
            "category": pool["category"].to_numpy(np.int32),
            "subcategory": pool["subcategory"].to_numpy(np.int32)}
    topics = np.stack(pool["topic_vec"]).astype(np.float64)
    expected = {}
    for _, user in profiles.iterrows():
        clicked = set(user["clicked_news"])
        dense = np.log1p([user["history_len"], user["impressions"]]).astype(np.float32)
        user_vec = np.asarray(user["user_vec"], np.float32)
        inputs = dict(news, user_vec=np.repeat(user_vec[None], n, axis=0),
                      user_dense=np.repeat(dense[None], n, axis=0),
                      pair_dense=(topics @ user_vec.astype(np.float64))[:, None].astype(np.float32))
        logits = np.asarray(model(inputs))[:, 0]
        keys = sorted((-l, n) for l, n in zip(logits, pool["news_id"]) if n not in clicked)
        expected[user["user_id"]] = [(n, 1 / (1 + np.exp(l))) for l, n in keys[:3]]
    return expected


def table_rows(spark, run_date):
    rows = spark.sql("SELECT user_id, rank, news_id, score, model_version FROM newsrec.recs_test "
                     f"WHERE run_date = '{run_date}' ORDER BY user_id, rank").collect()
    return rows


def test_top_k_equals_brute_force(spark, scored):
    _, cfg, model, version, summary = scored
    expected = brute_force(cfg, model)
    got, scores = {}, {}
    for row in table_rows(spark, "2019-11-16"):
        got.setdefault(row["user_id"], []).append(row["news_id"])
        scores.setdefault(row["user_id"], []).append(row["score"])
    assert got == {user: [n for n, _ in top] for user, top in expected.items()}
    for user, top in expected.items():     # probabilities, cold users' on the same scale
        assert scores[user] == pytest.approx([p for _, p in top], rel=1e-4, abs=1e-6)
        assert scores[user] == sorted(scores[user], reverse=True)
    assert summary["users"] == len(expected) and summary["rows_written"] == sum(map(len, expected.values()))
    ranks = {}
    for row in table_rows(spark, "2019-11-16"):
        ranks.setdefault(row["user_id"], []).append(row["rank"])
        assert row["model_version"] == version
    assert all(r == list(range(1, len(r) + 1)) for r in ranks.values())


def table_kernel_scores(cfg, version, mode, dev):
    """{(impression, news): score} of the dev rows `dev` as the function that writes the
    recommendations table scores them (serving.tasks.score_partitions): each impression's user
    (its dev row's user_vec and user_dense) against a pool of its candidates (their dev rows'
    side features as of the impression, their topic_vec from the candidate pool)."""
    topics = features(cfg, "candidate_pool", SCORE_DAY).set_index("news_id")["topic_vec"]
    settings = {"k": 100, "user_batch_size": 8, "mode": mode, "cold_users": "model",
                "threads_per_task": 0, "memory_budget_mb": 512}
    folder = export.model_folder(cfg, version)
    scores = {}
    for impression, rows in dev.groupby("impression_id"):
        rows = rows.sort_values("news_id")
        stack = lambda name: np.stack(rows[name].to_numpy()).astype(np.float32)  # noqa: E731
        pool = {"ids": rows["news_id"].to_numpy(dtype=object), "vectors": stack("news_vec"),
                "dense": stack("news_dense"), "category": rows["category"].to_numpy(np.int32),
                "subcategory": rows["subcategory"].to_numpy(np.int32),
                "topic": np.stack([topics[n] for n in rows["news_id"]]).astype(np.float32),
                "ctr": np.zeros(len(rows))}
        first = rows.iloc[0]
        user = pd.DataFrame({"user_id": [str(impression)], "clicked_news": [[]],
                             "history_len": [first["history_len"]], "user_vec": [first["user_vec"]],
                             "user_dense": [first["user_dense"]]})
        run = tasks.score_partitions(types.SimpleNamespace(value=pool), folder, version, settings,
                                     SCORE_DAY)
        for out in run(iter([user])):
            scores.update({(int(impression), n): float(v)
                           for n, v in zip(out["news_id"], out["score"])})
    return scores


@pytest.mark.parametrize("mode", ["auto", "plain"])
def test_evaluation_scores_dev_rows_with_the_kernel_that_writes_the_table(spark, scored, mode):
    """One scoring path: the evaluation's dcn score of every dev row (its Spark plan,
    evaluation.scorers.scored_rows) equals, to float32 rounding, the score the table writer's
    kernel gives the same (user, news) pair, in either scoring mode. The model reads every
    side feature (the topic affinity too), with weights that keep the probabilities off 0
    and 1, so any difference in a feature's path shows."""
    _, cfg, _, version, _ = scored
    cfg = cfg.with_overrides([f"score.mode={mode}", f"evaluate.model_version={version}",
                              "evaluate.batch_size=3"])
    inputs = resolve_inputs(spark, cfg, SCORE_DAY)
    assert set(inputs.widths) >= {"user_dense", "news_dense", "category", "pair_dense"}
    _, positions = listed_candidates(spark, inputs.features_path)
    rows = scored_rows(spark, cfg, inputs, positions, None).join(
        positions, ["impression_id", "position"]).select("impression_id", "news_id", "dcn")
    evaluated = {(r["impression_id"], r["news_id"]): r["dcn"] for r in rows.collect()}
    dev = features(cfg, "dev", SCORE_DAY)
    table = table_kernel_scores(cfg, version, mode, dev)
    assert len(evaluated) == len(dev) == 7 and set(table) == set(evaluated)
    assert sum(0.01 < p < 0.99 for p in evaluated.values()) >= 4
    for pair, probability in evaluated.items():
        assert table[pair] == pytest.approx(probability, rel=1e-5, abs=1e-6), pair


def test_rerun_replaces_only_its_date(spark, scored):
    _, cfg, _, _, first = scored
    build_features.run(cfg, spark, as_of=dt.datetime(2019, 11, 17))
    other = score.run(cfg, "2019-11-17", spark)
    again = score.run(cfg, "2019-11-16", spark)
    assert again["replaced_location"] == first["partition_location"]
    counts = {r["run_date"]: r["n"] for r in spark.sql(
        "SELECT run_date, count(*) AS n FROM newsrec.recs_test GROUP BY run_date").collect()}
    assert counts == {"2019-11-16": first["rows_written"], "2019-11-17": other["rows_written"]}
    assert not Path(first["partition_location"].replace("file://", "")).exists()
    dates = [r[0] for r in spark.sql("SHOW PARTITIONS newsrec.recs_test").collect()]
    assert sorted(dates) == ["run_date=2019-11-16", "run_date=2019-11-17"]


def test_two_runs_of_one_date_at_once_leave_one_consistent_partition(spark, scored, monkeypatch):
    """Both runs write their rows before either publishes (a barrier where the job pauses
    between writing and publishing). Whatever order their swaps and cleanups take, the
    partition ends up pointing at one complete folder, the other run's folder is gone, and
    no row is doubled."""
    import threading

    _, cfg, _, _, first = scored
    barrier = threading.Barrier(2, timeout=300)
    monkeypatch.setattr(score, "_pause_for_tests", barrier.wait)
    results, errors = [], []

    def one_run():
        try:
            results.append(score.run(cfg, "2019-11-16", spark))
        except BaseException as err:  # noqa: BLE001  reported below
            errors.append(err)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors and len(results) == 2
    rows = spark.sql("SELECT user_id, rank FROM newsrec.recs_test WHERE run_date = '2019-11-16'")
    assert rows.count() == rows.distinct().count() == first["rows_written"]
    date_folder = Path(urlparse(results[0]["partition_location"]).path).parent
    folders = [p.name for p in date_folder.iterdir() if p.is_dir()]
    current = TableWriter(spark, cfg).partition_location("2019-11-16")
    assert folders == [current.rstrip("/").rsplit("/", 1)[-1]]
    assert {r["run_id"] for r in results} >= set(folders)


def test_width_mismatch_is_a_clear_error_before_work(spark, scored):
    root, cfg, _, _, _ = scored
    export_model(cfg, random_model(8), model_metadata(cfg, 8), version="narrow")
    bad = make_cfg(root, "score.model_version=narrow", f"score.table_location={root / 'table'}",
                   "score.table=recs_test")
    count = "SELECT count(*) FROM newsrec.recs_test WHERE run_date='2019-11-16'"
    before = spark.sql(count).first()[0]
    with pytest.raises(UserInputError, match="expects user_vec width 8 .* has width 16"):
        score.run(bad, "2019-11-16", spark)
    assert spark.sql(count).first()[0] == before


def test_empty_pool_and_bad_identifiers(spark, scored):
    root, cfg, _, _, _ = scored
    with pytest.raises(ConfigError, match="score.table is not a valid table identifier"):
        make_cfg(root, "score.table=recs; DROP TABLE x")
    with pytest.raises(UserInputError, match="not a date"):
        score.run(cfg, "16/11/2019", spark)
    empty = make_cfg(root / "empty")
    write_sample(root / "empty")
    empty = make_cfg(root / "empty", "features.candidate_window_hours=0")
    embed_news.run(empty, spark)
    build_features.run(empty, spark, as_of=SCORE_DAY)
    version = export_model(empty, random_model(16), model_metadata(empty, 16))
    empty = empty.with_overrides([f"score.model_version={version}"])
    with pytest.raises(UserInputError, match="candidate pool .* is empty"):
        score.run(empty, "2019-11-16", spark)


def _launch(args, cwd, env):
    # spark-submit passes the Python driver's stderr to its own stdout: read both as one
    return subprocess.Popen([str(ROOT / "spark-submit.sh"), "score", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _count_in_subprocess(settings, run_date, env):
    code = ("import sys; from common.config import load_config; from common.spark import get_spark;"
            f"cfg = load_config(overrides={settings!r}); s = get_spark(cfg, 'check', hive=True);"
            f"print('ROWS', s.sql(\"SELECT count(*) FROM newsrec.recommendations WHERE run_date='{run_date}'\").first()[0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(next(l for l in out.stdout.splitlines() if l.startswith("ROWS")).split()[1])


@pytest.mark.slow
def test_kill_mid_run_leaves_partition_as_it_was(spark, tmp_path):
    """A real spark-submit run killed -9 after writing its rows but before publishing them
    leaves the date's partition as it was; the rerun then replaces it, without duplicates."""
    from common.config import load_config
    write_sample(tmp_path)
    settings = [f"paths.train={tmp_path / 'train'}", f"paths.dev={tmp_path / 'dev'}",
                f"paths.work={tmp_path / 'work'}", "embed.encoder=hashing", "embed.postprocess=project", "embed.hashing_dim=16",
                "embed.projection_dim=0", "features.min_row_groups=2",
                "features.candidate_window_hours=200", "spark.master=local[2]",
                "spark.driver_memory=1g", "score.model_version=v-kill"]
    cfg = load_config(overrides=settings)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    embed_news.run(cfg, spark)        # the inputs in this process; the scoring runs are real
    build_features.run(cfg, spark, as_of=SCORE_DAY)    # spark-submit processes below
    export_model(cfg, random_model(16), model_metadata(cfg, 16), version="v-kill")
    args = ["--run-date", "2019-11-16", *sum([["--set", s] for s in settings], [])]
    first = _launch(args, ROOT, env)
    assert first.wait(timeout=300) == 0, first.stdout.read()[-2000:]
    rows_before = _count_in_subprocess(settings, "2019-11-16", env)
    assert rows_before > 0

    killed = _launch(args, ROOT, dict(env, NEWSREC_TEST_PAUSE_BEFORE_PUBLISH="60"))
    deadline = time.time() + 300
    paused = False
    for line in killed.stdout:
        paused = "publishing paused" in line
        if paused or time.time() > deadline:
            break
    assert paused, "the job never reached the pause before publishing"
    os.killpg(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=60) != 0
    assert _count_in_subprocess(settings, "2019-11-16", env) == rows_before

    rerun = _launch(args, ROOT, env)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read()[-2000:]
    assert _count_in_subprocess(settings, "2019-11-16", env) == rows_before


@pytest.mark.slow
def test_a_second_process_on_the_embedded_metastore_gets_one_line(spark):
    """This test session holds its embedded Derby metastore; another process pointed at the
    same paths.work is told so in one line, not with a Hive stack trace."""
    spark.sql("SHOW DATABASES").collect()         # the metastore is booted in this process
    warehouse = spark.conf.get("spark.sql.warehouse.dir")
    work = str(Path(warehouse.replace("file:", "")).parent)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "jobs.show_recommendations",
                           "--set", f"paths.work={work}", "--set", "spark.master=local[1]",
                           "--set", "spark.driver_memory=1g", "--run-date", "2019-11-16"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "another process holds the embedded metastore" in errors[0]
    assert "Traceback" not in done.stderr
