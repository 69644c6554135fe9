"""score.mode cascade: the landmark retrieval's regression, its short lists, the exact stage on
them, and the scoring job's table against the exact modes' (dcn/retrieval.py, dcn/landmarks.py,
serving/tasks.py, evaluation/cascade_recall.py)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from common import outputs
from common.errors import UserInputError
from dcn import export
from dcn.export import export_model
from dcn.landmarks import retrieval_for_export
from dcn.retrieval import LandmarkRetrieval, scorer_digest, short_lists
from dcn.scoring import FactorizedScorer
from evaluation.cascade_recall import cascade_recall
from jobs import score
from serving import tasks
from tests.builders import model_metadata, random_model, tiny_work

ALL_FEATURES = ["user_stats", "news_stats", "category", "dot", "topic"]


def side_model(dim, stats=None, seed=0):
    stats = stats or {key: {"mean": [0.5] * width, "std": [0.7] * width}
                      for key, width in (("user_dense", 2), ("news_dense", 4), ("pair_dense", 1))}
    return random_model(dim, seed=seed, features=ALL_FEATURES, category_buckets=1024,
                        **{f"{key}_{part}": stats[key][part] for key in stats
                           for part in ("mean", "std")})


def random_sides(scorer, users, news, seed=0):
    rng = np.random.default_rng(seed)
    dv = scorer.vec_dims[0]
    u = scorer.user_side(rng.normal(0, 0.3, (users, dv)), rng.normal(1, 1, (users, 2)))
    n = scorer.news_side(rng.normal(0, 0.3, (news, dv)), rng.normal(1, 1, (news, 4)),
                         rng.integers(0, 1024, news), rng.integers(0, 1024, news),
                         rng.normal(0, 0.3, (news, dv)))
    return u, n


# --------------------------------------------------------------------------- kernels

def test_short_list_logits_are_the_exact_logits_of_the_listed_pairs():
    scorer = FactorizedScorer(side_model(8))
    users, news = random_sides(scorer, 5, 40)
    full = scorer.logits(users, news)
    lists = np.random.default_rng(1).integers(0, 40, (5, 7))
    prepared = scorer.prepare_news(news)
    listed = scorer.short_list_logits(users, prepared, lists)
    np.testing.assert_allclose(listed, np.take_along_axis(full, lists, axis=1), rtol=1e-5, atol=1e-5)
    # the prepared pool keeps its projections: a second batch gets the same numbers
    np.testing.assert_allclose(scorer.short_list_logits(users, prepared, lists), listed)


def retrieval_for(scorer, landmark_users=40, landmark_news=8, ridge=1e-3, seed=0):
    """A retrieval for `scorer` whose landmark users are random user sides."""
    rng = np.random.default_rng(seed)
    dv = scorer.vec_dims[0]
    users = scorer.user_side(rng.normal(0, 0.3, (landmark_users, dv)),
                             rng.normal(1, 1, (landmark_users, 2)))
    return LandmarkRetrieval(users, landmark_news, ridge, seed, scorer_digest(scorer))


def test_retrieval_is_the_ridge_regression_on_the_landmark_logits():
    scorer = FactorizedScorer(side_model(8, seed=4))
    users, news = random_sides(scorer, 6, 30, seed=5)
    found = retrieval_for(scorer, landmark_users=40, landmark_news=8, ridge=0.05)
    index = found.index_pool(scorer, scorer.prepare_news(news), batch_users=7)
    # by hand: R, the design A = [R[:, landmarks], 1], beta = (A'A + lambda I)^-1 A'R
    R = scorer.logits(found.landmark_users, news).astype(np.float64)
    A = np.c_[R[:, index.landmark_news], np.ones(40)]
    penalty = 0.05 * np.mean(np.diag(A.T @ A))
    beta = np.linalg.solve(A.T @ A + penalty * np.eye(9), A.T @ R)
    np.testing.assert_allclose(index.beta, beta, rtol=1e-4, atol=1e-4)
    assert len(set(index.landmark_news)) == 8 and found.width(30) == 9
    embeddings = found.user_embeddings(scorer, users, news, index)
    exact = scorer.logits(users, news)
    np.testing.assert_allclose(embeddings[:, :8], exact[:, index.landmark_news], rtol=1e-5, atol=1e-5)
    assert (embeddings[:, 8] == 1).all()
    again = LandmarkRetrieval.from_bytes(found.to_bytes())
    np.testing.assert_array_equal(again.landmark_users, found.landmark_users)
    assert (again.landmark_news, again.ridge, again.seed, again.teacher) == \
        (8, 0.05, 0, found.teacher)


def test_with_every_news_a_landmark_the_retrieval_is_the_exact_logits():
    """Each news item's column regressed on every column (itself included) is itself: the
    retrieval then scores users it never saw exactly."""
    scorer = FactorizedScorer(side_model(8, seed=6))
    users, news = random_sides(scorer, 5, 12, seed=7)
    found = retrieval_for(scorer, landmark_users=60, landmark_news=50, ridge=1e-9)
    index = found.index_pool(scorer, news, batch_users=64)
    scores = found.user_embeddings(scorer, users, news, index) @ index.beta
    np.testing.assert_allclose(scores, scorer.logits(users, news), rtol=1e-3, atol=1e-3)


def test_short_lists_hold_the_best_eligible_news_in_pool_order():
    users = np.array([[1.0, 0.0], [0.0, 1.0]])
    beta = np.array([[5.0, 0.0], [4.0, 1.0], [3.0, 2.0], [0.0, 9.0]]).T   # scores = users @ beta
    excluded = np.array([[True, False, False, False], [False, False, False, False]])
    lists, valid = short_lists(users, beta, 2, excluded)
    np.testing.assert_array_equal(lists, [[1, 2], [2, 3]])     # user 0 clicked news 0
    assert valid.all()
    lists, valid = short_lists(users, beta, 10, excluded)      # covers the pool
    np.testing.assert_array_equal(lists, [[0, 1, 2, 3]] * 2)
    np.testing.assert_array_equal(valid, ~excluded)


def test_cascade_ranker_covering_the_pool_ranks_as_the_exact_ranker():
    scorer = FactorizedScorer(side_model(8, seed=2))
    users, news = random_sides(scorer, 6, 30, seed=3)
    excluded = np.zeros((6, 30), bool)
    excluded[:, :3] = True
    exact = tasks.ExactRanker(scorer, news).rank(users, excluded, 5)
    found = retrieval_for(scorer)
    index = found.index_pool(scorer, scorer.prepare_news(news), 16)
    cascade = tasks.CascadeRanker(scorer, news, found, 30, index).rank(users, excluded, 5)
    np.testing.assert_array_equal(cascade[0], exact[0])
    np.testing.assert_array_equal(cascade[1], exact[1])
    np.testing.assert_allclose(cascade[2], exact[2], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- with Spark

SCORE_DAY = "2019-11-15"


@pytest.fixture(scope="module")
def cascade_work(spark, tmp_path_factory):
    """The tiny sample's features as of the end of its data, a random side-feature model with
    its landmark retrieval, exported."""
    root = tmp_path_factory.mktemp("cascade")
    cfg, _ = tiny_work(spark, root, as_of=dt.datetime(2019, 11, 15))
    rows = outputs.current_rows(cfg)
    model = side_model(32, rows["summary"]["dense_stats"], seed=5)
    found = retrieval_for_export(cfg, model, rows["summary"]["as_of"])
    version = export_model(cfg, model, model_metadata(cfg, 32, model=model), retrieval=found)
    cfg = cfg.with_overrides([f"score.model_version={version}", "score.k=5"])
    return cfg, model, version, rows["summary"]["as_of"]


def table_cfg(cfg, name, *extra):
    location = f"{cfg['paths.work']}/tables/{name}"
    return cfg.with_overrides([f"score.table={name}", f"score.table_location={location}", *extra])


def table_rows(spark, cfg, day):
    frame = spark.sql(f"SELECT * FROM {cfg['score.database']}.{cfg['score.table']} "
                      f"WHERE run_date = '{day}'").toPandas()
    return frame.sort_values(["user_id", "rank"]).reset_index(drop=True)


@pytest.mark.spark
def test_landmark_retrieval_keeps_the_exact_top_k_in_a_fifth_of_the_pool(cascade_work):
    cfg, model, version, as_of = cascade_work
    folder = export.model_folder(cfg, version)
    whole = cascade_recall(cfg, folder, as_of, users=300, retrieve=10 ** 6)
    assert whole["recall_at_k"] == 1.0 and whole["short_list_recall_at_100"] == 1.0
    fifth = cascade_recall(cfg, folder, as_of, users=300, retrieve=whole["pool"] // 5)
    # a short list of random news would keep a fifth of the exact top k
    assert fifth["recall_at_k"] >= 0.9, fifth
    assert fifth["users"] > 50


@pytest.mark.spark
def test_cascade_table_covering_the_pool_equals_the_exact_table(spark, cascade_work):
    cfg, model, version, as_of = cascade_work
    exact_cfg = table_cfg(cfg, "recs_exact")
    exact = score.run(exact_cfg, SCORE_DAY, spark)
    cascade_cfg = table_cfg(cfg, "recs_cascade", "score.mode=cascade", "score.retrieve=100000")
    summary = score.run(cascade_cfg, SCORE_DAY, spark)
    assert summary["rows_written"] == exact["rows_written"] > 0
    a = table_rows(spark, exact_cfg, SCORE_DAY)
    b = table_rows(spark, cascade_cfg, SCORE_DAY)
    pd.testing.assert_frame_equal(a[["user_id", "rank", "news_id"]], b[["user_id", "rank", "news_id"]])
    np.testing.assert_allclose(a["score"], b["score"], rtol=1e-5, atol=1e-6)
    # a short list of 5 still writes k = 5 news per user, the same users
    short = score.run(cascade_cfg.with_overrides(["score.retrieve=5"]), SCORE_DAY, spark)
    assert short["users_written"] == exact["users_written"]


@pytest.mark.spark
def test_cascade_refuses_a_model_without_retrieval_or_with_another_models(spark, cascade_work):
    cfg, model, version, as_of = cascade_work
    bare = export_model(cfg, model, model_metadata(cfg, 32, model=model))
    cascade_cfg = table_cfg(cfg, "recs_refused", "score.mode=cascade",
                            f"score.model_version={bare}")
    with pytest.raises(UserInputError, match="has no retrieval"):
        score.run(cascade_cfg, SCORE_DAY, spark)
    other = side_model(32, seed=9)
    foreign = retrieval_for(FactorizedScorer(other))
    mixed = export_model(cfg, model, model_metadata(cfg, 32, model=model), retrieval=foreign)
    with pytest.raises(UserInputError, match="made for another model"):
        score.run(cascade_cfg.with_overrides([f"score.model_version={mixed}"]), SCORE_DAY, spark)


@pytest.mark.spark
def test_user_dense_values_match_the_spark_column(spark):
    from pyspark.sql import functions as F
    from features import side_features as side
    frame = spark.createDataFrame([(0, None), (3, 7), (120, 4000)], "h int, i long")
    spark_values = np.array([r[0] for r in frame.select(
        side.user_dense(F.col("h"), F.col("i"))).collect()], np.float32)
    numpy_values = side.user_dense_values(np.array([0, 3, 120.0]), np.array([0, 7, 4000.0]))
    np.testing.assert_array_equal(spark_values, numpy_values)


def test_the_report_shows_the_cascade_recall_or_why_there_is_none():
    from evaluation.report import cascade_lines
    doc = {"cascade": {"available": True, "k": 10, "recall_at_k": 0.9712, "min_recall_at_k": 0.7,
                       "retrieve": 200, "pool": 20000, "short_list_recall_at_100": 0.9,
                       "users": 1000, "as_of": "2019-11-16T00:00:00"}}
    line, = cascade_lines(doc)
    assert "recall@10: 0.9712" in line and "200 of 20000" in line and "1000 users" in line
    line, = cascade_lines({"cascade": {"available": False, "reason": "the model has no retrieval"}})
    assert line.endswith("not measured: the model has no retrieval")
