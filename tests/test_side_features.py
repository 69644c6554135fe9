"""Side features (features/side_features.py) on a hand-made sample: each as of its impression,
hand-computed from the log (tests/test_build_features.py's sample)."""
import math

import numpy as np
import pytest

from jobs import build_features, embed_news
from features import side_features as side
from tests.builders import DEV, TRAIN, features, make_cfg, write_sample

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("side")
    write_sample(root)
    cfg = make_cfg(root, "features.npratio=0", "features.popularity_window_hours=48",
                   "features.validation_hours=24")
    embed_news.run(cfg, spark)
    summary = build_features.run(cfg, spark)
    rows = {split: features(cfg, split) for split in ("train", "valid", "dev")}
    return cfg, summary, rows


def row(rows, impression, news):
    for table in rows.values():
        found = table[(table["impression_id"] == impression) & (table["news_id"] == news)]
        if len(found):
            return found.iloc[0]
    raise AssertionError(f"no row for impression {impression}, news {news}")


def test_validation_rows_are_the_end_of_the_train_split(built):
    _, summary, rows = built
    # train ends just after impression 5 (11/12 06:45:10): the 24 h before it hold 4 and 5
    assert sorted(set(rows["valid"]["impression_id"])) == [4, 5]
    assert sorted(set(rows["train"]["impression_id"])) == [1, 2, 3]
    assert sorted(set(rows["dev"]["impression_id"])) == [10, 11]
    assert summary["train_end"] == "2019-11-12T06:45:11"


def test_popularity_counts_only_earlier_impressions_in_the_window(built):
    _, _, rows = built
    # N5: shown in 1 (11/09 08:00, not clicked), 3 (11/10 13:15, not clicked), 5 (11/12
    # 06:45:10, clicked). Window 48 h.
    assert row(rows, 1, "N5")["news_dense"][1] == pytest.approx(0.0)            # nothing before
    assert row(rows, 3, "N5")["news_dense"][1] == pytest.approx(math.log1p(1))  # impression 1
    assert row(rows, 5, "N5")["news_dense"][1] == pytest.approx(math.log1p(1))  # 3 only: 1 is 70 h back
    assert row(rows, 5, "N5")["news_dense"][2] == pytest.approx(0.0)            # its own click unseen
    # N9: clicked in 4 (11/11 22:00); at dev impression 10 (11/15 08:00) that is 82 h back
    assert row(rows, 10, "N9")["news_dense"][2] == pytest.approx(0.0)
    # N6 in dev 11 (11/15 23:00): no earlier impression within 48 h
    assert row(rows, 11, "N6")["news_dense"][1] == pytest.approx(0.0)


def test_smoothed_ctr_uses_the_prior(built):
    cfg, _, rows = built
    prior, weight = cfg["features.ctr_prior"], cfg["features.ctr_prior_impressions"]
    # N5 at impression 3: 1 impression, 0 clicks before it
    assert row(rows, 3, "N5")["news_dense"][3] == pytest.approx(prior * weight / (1 + weight), rel=1e-6)
    assert row(rows, 1, "N5")["news_dense"][3] == pytest.approx(prior, rel=1e-6)


def test_age_is_hours_since_first_seen(built):
    _, _, rows = built
    # N1 is first seen in impression 1's history (11/09 08:00); shown in 4 at 11/11 22:00
    assert row(rows, 4, "N1")["age_hours"] == pytest.approx(62.0)
    assert row(rows, 4, "N1")["news_dense"][0] == pytest.approx(math.log1p(62.0), rel=1e-6)
    # N3 is first seen as impression 1's candidate: age 0 there
    assert row(rows, 1, "N3")["age_hours"] == pytest.approx(0.0)


def test_user_impressions_before_each_impression(built):
    _, _, rows = built
    # U1: impressions 1, 3 (train) and 10 (dev)
    assert row(rows, 1, "N3")["user_dense"][1] == pytest.approx(0.0)
    assert row(rows, 3, "N5")["user_dense"][1] == pytest.approx(math.log1p(1))
    assert row(rows, 10, "N3")["user_dense"][1] == pytest.approx(math.log1p(2))
    assert row(rows, 10, "N3")["user_dense"][0] == pytest.approx(
        math.log1p(row(rows, 10, "N3")["history_len"]))


def test_categories_are_hashed_consistently(built):
    _, _, rows = built
    sports = {row(rows, 2, "N1")["category"], row(rows, 2, "N2")["category"]}
    assert len(sports) == 1 and 0 not in sports
    assert row(rows, 1, "N3")["category"] != row(rows, 2, "N1")["category"]   # finance


def test_state_counts_impressions_and_pool_has_side_features(built):
    cfg, summary, _ = built
    state = features(cfg, "state").set_index("user_id")
    assert state.loc["U1", "impressions"] == 3 and state.loc["U4", "impressions"] == 1
    pool = features(cfg, "candidate_pool").set_index("news_id")
    # as of just after impression 11 (11/15 23:00:01): N6 was shown at 23:00 -> age 0 h is
    # wrong only if first_seen ignored histories: N6 is in no history, first shown in 1
    first_shown = np.datetime64("2019-11-09T08:00:00")
    as_of = np.datetime64(summary["as_of"][:19])
    hours = (as_of - first_shown) / np.timedelta64(1, "h")
    assert pool.loc["N6", "age_hours"] == pytest.approx(hours, rel=1e-6)
    assert pool.loc["N6", "news_dense"][1] == pytest.approx(math.log1p(1))   # shown once in 48 h


def test_negative_keep_rate(spark, tmp_path):
    write_sample(tmp_path)
    cfg = make_cfg(tmp_path)   # npratio 2, no validation rows
    embed_news.run(cfg, spark)
    summary = build_features.run(cfg, spark)
    negatives = kept = 0
    for imp in TRAIN:
        labels = [int(t.rsplit("-", 1)[1]) for t in imp[4].split()]
        pos, neg = sum(labels), len(labels) - sum(labels)
        negatives += neg
        kept += min(neg, max(2 * pos, 1))
    assert summary["sampling"]["negative_keep_rate"] == pytest.approx(kept / negatives)


def test_time_split_one_folder(spark, tmp_path):
    write_sample(tmp_path, dev=DEV)
    cfg = make_cfg(tmp_path, "paths.dev=", "features.npratio=0")
    embed_news.run(cfg, spark)
    import datetime as dt
    summary = build_features.run(cfg, spark, time_split=dt.date(2019, 11, 11))
    assert summary["as_of"].startswith("2019-11-12T00:00:00")
    assert sorted(set(features(cfg, "train")["impression_id"])) == [1, 2, 3]
    assert sorted(set(features(cfg, "dev")["impression_id"])) == [4]


def test_topic_dot_is_the_user_vector_against_the_category_mean(built):
    cfg, _, rows = built
    from tests.builders import NEWS, vectors_by_id
    vectors = vectors_by_id(cfg)
    finance = np.mean([vectors[n] for n, (category, _) in NEWS.items()
                       if category == "finance" and n in vectors], axis=0)
    r = row(rows, 1, "N3")          # N3 is finance
    assert r["pair_dense"][0] == pytest.approx(float(np.dot(r["user_vec"], finance)), rel=1e-4, abs=1e-6)


def test_popularity_equals_brute_force_at_the_window_edges(spark):
    """The sorted-search form of the windowed popularity against a direct count, on a log
    whose impressions fall exactly on the window's edges (t - W counts, t - W - 1 does not)
    and share seconds, spread over more partitions than there are news (empty ones)."""
    from pyspark.sql import types as T
    from features import side_features as side
    hours = 1
    width = hours * 3600
    rng = np.random.default_rng(7)
    base = [0, 1, width, width + 1, width + 2, 2 * width + 1, 2 * width + 1, 5000, 5000]
    times = base + list(rng.integers(0, 3 * width, 60))
    log = [(0, number, int(t), [(str(rng.choice(["A", "B", "C"])), int(rng.integers(0, 2)))
                                for _ in range(int(rng.integers(1, 4)))])
           for number, t in enumerate(times)]
    schema = T.StructType([
        T.StructField("src", T.IntegerType()), T.StructField("impression_id", T.LongType()),
        T.StructField("t", T.LongType()), T.StructField("candidates", T.ArrayType(T.StructType([
            T.StructField("news_id", T.StringType()), T.StructField("label", T.IntegerType())])))])
    got = {}
    for r in side.candidate_popularity(spark.createDataFrame(log, schema), hours, 8).collect():
        for pos, counts in enumerate(r["popularity"]):
            got[(r["impression_id"], pos)] = (counts["pop_impressions"], counts["pop_clicks"])
    shown = [(news, t, label) for _, _, t, candidates in log for news, label in candidates]
    expected = {}
    for _, number, t, candidates in log:
        for pos, (news, _) in enumerate(candidates):
            inside = [label for n, s, label in shown if n == news and t - width <= s <= t - 1]
            expected[(number, pos)] = (len(inside), sum(inside))
    assert got == expected
    assert any(v[0] > 0 for v in expected.values()) and len(expected) > 60


def test_the_benchmark_reference_hashes_categories_as_spark_does(spark):
    """bench/pandas_train_rows.py's xxHash64 gives side.bucket's buckets, for names of every
    length class of the algorithm (under 4, 4 to 7, 8 to 31 and 32 or more bytes) and non-ASCII."""
    from pyspark.sql import functions as F
    from bench import pandas_train_rows as reference
    from features import side_features as side
    names = ["", " ", "a", "tv", "news", "sports", "lifestyle", "foodanddrink", "é", "médias",
             "x" * 31, "y" * 32, "autos and a very long subcategory name" * 3]
    got = {r["name"]: r["b"] for r in spark.createDataFrame([(n,) for n in names], "name string")
           .select("name", side.bucket(F.col("name"), 1024).alias("b")).collect()}
    assert {n: reference.category_bucket(n, 1024) for n in names} == got
    assert len(set(got.values())) > 8


def test_topics_are_the_mean_vector_of_each_category(spark):
    ids = np.array(["N1", "N2", "N3"], dtype=object)
    matrix = np.array([[1, 0], [3, 2], [5, 5]], np.float32)
    categories = spark.createDataFrame([("N1", 4), ("N2", 4), ("N9", 7)],
                                       "news_id string, category int")
    topics = side.Topics.of_catalogue(ids, matrix, categories)
    # N3 has no category (bucket 0); N9 has no vector and no topic of its own
    assert list(topics.categories) == [0, 4]
    np.testing.assert_array_equal(topics.matrix, [[5, 5], [2, 1]])
    rows = {r["category"]: (list(r["topic_vec"]), r["topic_index"])
            for r in topics.vectors(spark).collect()}
    assert rows == {0: ([5.0, 5.0], 0), 4: ([2.0, 1.0], 1)}
