"""score.mode cascade: the retrieval tower's equation, its short lists, the exact stage on them,
distillation, and the scoring job's table against the exact modes' (dcn/retrieval.py,
dcn/distill.py, serving/tasks.py, evaluation/cascade_recall.py)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from common import outputs
from common.errors import UserInputError
from dcn import distill, export
from dcn.export import export_model
from dcn.retrieval import RetrievalTower, scorer_digest, short_lists
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


def tiny_tower(topic=True):
    """dv=2, du'=3, dn'=3, a learned width of 1, hand-picked weights."""
    user_layers = [(np.array([[1.0], [0.0], [1.0]]), np.array([0.0])),      # hidden: u0 + u2
                   (np.array([[2.0]]), np.array([1.0]))]                    # f = 2 relu(.) + 1
    news_layers = [(np.array([[0.0], [1.0], [1.0]]), np.array([-1.0])),     # hidden: n1 + n2 - 1
                   (np.array([[3.0]]), np.array([0.0]))]                    # g = 3 relu(.)
    bias = (np.array([[0.5]]), np.array([0.25]))                            # c = relu(.)/2 + 1/4
    return RetrievalTower(user_layers, news_layers, bias, alpha=2.0, beta=-1.0 if topic else 0.0,
                          widths={"dv": 2, "du": 3, "dn": 3, "topic": 2 if topic else 0},
                          teacher="t")


def test_tower_score_is_the_stated_equation():
    tower = tiny_tower()
    u = np.array([[1.0, 2.0, -3.0]])                       # u = (1, 2), hidden relu(-2) = 0
    n = np.array([[0.5, 1.0, 2.0, 4.0, -1.0]])             # n = (0.5, 1), t = (4, -1)
    # f = 2*0 + 1 = 1; hidden_n = 1 + 2 - 1 = 2: g = 6, c = 1 + 0.25
    # u . (alpha n + beta t) = (1, 2) . (1 - 4, 2 + 1) = -3 + 6 = 3
    score = tower.user_embedding(u) @ tower.news_embedding(n).T
    assert score[0, 0] == pytest.approx(1 * 6 + 3 + 1.25)
    assert tower.width == 1 + 2 + 1
    again = RetrievalTower.from_bytes(tower.to_bytes())
    np.testing.assert_array_equal(again.user_embedding(u) @ again.news_embedding(n).T, score)
    with pytest.raises(ValueError, match="topic vectors"):
        tower.news_embedding(n[:, :3])
    # rows that carry the topic affinity u . t = 4 - 2 = 2 instead of t
    assert tower.pair_scores(u, n[:, :3], np.array([2.0]))[0] == pytest.approx(score[0, 0])


def test_short_lists_hold_the_best_eligible_news_in_pool_order():
    users = np.array([[1.0, 0.0], [0.0, 1.0]])
    news = np.array([[5.0, 0.0], [4.0, 1.0], [3.0, 2.0], [0.0, 9.0]])
    excluded = np.array([[True, False, False, False], [False, False, False, False]])
    lists, valid = short_lists(users, news, 2, excluded)
    np.testing.assert_array_equal(lists, [[1, 2], [2, 3]])     # user 0 clicked news 0
    assert valid.all()
    lists, valid = short_lists(users, news, 10, excluded)      # covers the pool
    np.testing.assert_array_equal(lists, [[0, 1, 2, 3]] * 2)
    np.testing.assert_array_equal(valid, ~excluded)


def test_cascade_ranker_covering_the_pool_ranks_as_the_exact_ranker():
    scorer = FactorizedScorer(side_model(8, seed=2))
    users, news = random_sides(scorer, 6, 30, seed=3)
    tower = tiny_tower_for(scorer)
    excluded = np.zeros((6, 30), bool)
    excluded[:, :3] = True
    exact = tasks.ExactRanker(scorer, news).rank(users, excluded, 5)
    cascade = tasks.CascadeRanker(scorer, news, tower, 30).rank(users, excluded, 5)
    np.testing.assert_array_equal(cascade[0], exact[0])
    np.testing.assert_array_equal(cascade[1], exact[1])
    np.testing.assert_allclose(cascade[2], exact[2], rtol=1e-5, atol=1e-5)


def tiny_tower_for(scorer, dim=3, seed=0):
    """A tower of random weights with the scorer's widths (what a ranker needs to run)."""
    rng = np.random.default_rng(seed)
    du, dn, dv = scorer.du, scorer.dn, scorer.vec_dims[0]
    layer = lambda a, b: (rng.normal(0, 0.3, (a, b)), np.zeros(b))  # noqa: E731
    return RetrievalTower([layer(du, 4), layer(4, dim)], [layer(dn, 4), layer(4, dim)],
                          layer(4, 1), 1.0, 1.0, {"dv": dv, "du": du, "dn": dn, "topic": dv},
                          scorer_digest(scorer))


# --------------------------------------------------------------------------- with Spark

SCORE_DAY = "2019-11-15"


@pytest.fixture(scope="module")
def cascade_work(spark, tmp_path_factory):
    """The tiny sample's features as of the end of its data, a random side-feature model with
    a tower distilled from it, exported."""
    root = tmp_path_factory.mktemp("cascade")
    cfg, _ = tiny_work(spark, root, as_of=dt.datetime(2019, 11, 15))
    rows = outputs.current_rows(cfg)
    model = side_model(32, rows["summary"]["dense_stats"], seed=5)
    tower = distill.tower_for_export(cfg, model, rows["summary"]["as_of"])
    version = export_model(cfg, model, model_metadata(cfg, 32, model=model), retrieval=tower)
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
def test_distilled_tower_keeps_the_exact_top_k_in_a_fifth_of_the_pool(cascade_work):
    cfg, model, version, as_of = cascade_work
    folder = export.model_folder(cfg, version)
    whole = cascade_recall(cfg, folder, as_of, users=300, retrieve=10 ** 6)
    assert whole["recall_at_k"] == 1.0 and whole["short_list_recall_at_100"] == 1.0
    fifth = cascade_recall(cfg, folder, as_of, users=300, retrieve=whole["pool"] // 5)
    # a short list of random news would keep a fifth of the exact top k (a random-weight
    # teacher is harder to distil than a trained one)
    assert fifth["recall_at_k"] >= 0.8, fifth
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
def test_cascade_refuses_a_model_without_or_with_a_foreign_tower(spark, cascade_work):
    cfg, model, version, as_of = cascade_work
    bare = export_model(cfg, model, model_metadata(cfg, 32, model=model))
    cascade_cfg = table_cfg(cfg, "recs_refused", "score.mode=cascade",
                            f"score.model_version={bare}")
    with pytest.raises(UserInputError, match="no retrieval tower"):
        score.run(cascade_cfg, SCORE_DAY, spark)
    other = side_model(32, seed=9)
    foreign = tiny_tower_for(FactorizedScorer(other))
    mixed = export_model(cfg, model, dict(model_metadata(cfg, 32, model=model),
                                          retrieval={"width": foreign.width}), retrieval=foreign)
    with pytest.raises(UserInputError, match="distilled from another model"):
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
