"""The one definition of a user's state: checked against a plain-Python reading of it, for
leakage, served-equals-trained, incremental-equals-full and out-of-order backfills."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common import outputs
from common.errors import UserInputError
from common.config import load_config
from jobs import build_features, daily, embed_news, score
from synthetic.generate import generate
from synthetic.writer import write_daily_log
from features.news_vectors import current_vectors
from tests.builders import (features, make_cfg, model_metadata, read_table, vectors_by_id,
                            vectors_table, write_sample)

pytestmark = pytest.mark.spark
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"


# ----------------------------------------------------------------- the definition, in Python

def parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, TIME_FORMAT)


def log_rows(*files) -> list[dict]:
    """Impressions of MIND behaviors rows: (src, id, user, time, history, clicks)."""
    rows = []
    for src, lines in enumerate(files):
        for r in lines:
            fields = r if isinstance(r, list) else r.split("\t")
            tokens = [t.rsplit("-", 1) for t in fields[4].split()]
            rows.append({"key": (src, int(fields[0])), "user": fields[1],
                         "time": parse_time(fields[2]), "history": fields[3].split(),
                         "clicks": [n for n, label in tokens if label == "1"]})
    return rows


def clicked_before(rows, user, moment, strictly=True) -> set:
    return {n for r in rows if r["user"] == user and r["time"] < moment
            for n in r["history"] + r["clicks"]}


def reference_impression(rows, row, mode) -> set:
    if mode == "history":
        return set(row["history"])
    return set(row["history"]) | clicked_before(rows, row["user"], row["time"])


def reference_profile(rows, user, as_of, mode) -> tuple[set, set]:
    """(ids whose vectors make the profile, every id clicked before as_of)."""
    clicked = clicked_before(rows, user, as_of)
    if mode == "history":
        mine = [r for r in rows if r["user"] == user and r["time"] < as_of]
        latest = max(mine, key=lambda r: (r["time"], r["key"]))
        return set(latest["history"]), clicked
    return clicked, clicked


def mean_of(ids, vectors, dim):
    known = sorted(n for n in ids if n in vectors)
    return (np.mean([vectors[n] for n in known], axis=0) if known else np.zeros(dim)), len(known)


def read_folder_rows(folder: Path) -> list[str]:
    return (folder / "behaviors.tsv").read_text(encoding="utf-8").splitlines()


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def tiny(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_state")
    generate("tiny", str(root / "mind"), seed=5)
    cfg = load_config(overrides=[
        f"paths.train={root / 'mind' / 'MINDsmall_train'}",
        f"paths.dev={root / 'mind' / 'MINDsmall_dev'}", f"paths.work={root / 'work'}",
        "embed.encoder=hashing", "embed.postprocess=project", "embed.hashing_dim=16", "embed.projection_dim=0",
        "features.min_row_groups=4", "features.files=4", "features.validation_hours=0"])
    embed_news.run(cfg, spark)
    rows = log_rows(read_folder_rows(root / "mind" / "MINDsmall_train"),
                    read_folder_rows(root / "mind" / "MINDsmall_dev"))
    return root, cfg, rows


@pytest.mark.parametrize("mode", ["history_and_clicks", "history"])
def test_rows_and_state_follow_the_definition(spark, tiny, tmp_path, mode):
    root, base, rows = tiny
    cfg = base.with_overrides([f"paths.work={tmp_path}", f"features.user_clicks={mode}"])
    shutil.copytree(root / "work" / "news_vectors", tmp_path / "news_vectors")
    as_of = dt.datetime(2019, 11, 13, 12)
    summary = build_features.run(cfg, spark, as_of=as_of)
    vectors, dim = vectors_by_id(cfg), 16
    by_key = {r["key"]: r for r in rows}
    train = features(cfg, "train")
    assert summary["as_of"] == "2019-11-13T12:00:00" and summary["user_clicks"] == mode
    before = {r["key"][1] for r in rows if r["key"][0] == 0 and r["time"] < as_of}
    assert len(train) > 0 and set(train["impression_id"]) == before
    assert train["impression_id"].map(lambda i: by_key[(0, i)]["time"] < as_of).all()
    grown = 0
    for impression_id, group in train.groupby("impression_id"):
        row = by_key[(0, impression_id)]
        expected, length = mean_of(reference_impression(rows, row, mode), vectors, dim)
        for vec, got_len in zip(group["user_vec"], group["history_len"]):
            np.testing.assert_allclose(vec, expected, atol=1e-6)
            assert got_len == length
        grown += length > len([n for n in row["history"] if n in vectors])
    # the default definition sees earlier clicks; MIND's convention never does
    assert (grown > 0) == (mode == "history_and_clicks")
    assert len(features(cfg, "dev")) == 0        # the dev day is after the as-of moment

    state = features(cfg, "state").set_index("user_id")
    users = {r["user"] for r in rows if r["time"] < as_of}
    assert set(state.index) == users
    for user in users:
        vector_ids, clicked = reference_profile(rows, user, as_of, mode)
        expected, length = mean_of(vector_ids, vectors, dim)
        np.testing.assert_allclose(state.loc[user, "user_vec"], expected, atol=1e-6)
        assert state.loc[user, "history_len"] == length
        assert list(state.loc[user, "clicked_news"]) == sorted(clicked)


# ------------------------------------------------------------------- hand-made timelines

LEAK_TRAIN = [
    ["1", "U1", "11/9/2019 8:00:00 AM", "N1", "N2-0 N3-0 N4-0"],          # t1
    ["2", "U1", "11/10/2019 8:00:00 AM", "N1", "N5-1 N6-0 N7-0"],         # t2: clicks N5
    ["3", "U1", "11/11/2019 8:00:00 AM", "N1", "N6-0 N7-0 N8-0"],         # t3 sees N5
    ["4", "U2", "11/9/2019 9:00:00 AM", "N2", "N9-1 N3-0"],               # same second ...
    ["5", "U2", "11/9/2019 9:00:00 AM", "N4", "N6-1 N3-0"],               # ... as this one
    ["6", "U2", "11/9/2019 9:00:01 AM", "N2", "N7-0 N8-1"],               # sees N9, N4, N6
    ["7", "U3", "11/12/2019 12:00:00 AM", "N1 N2", "N3-1 N4-0"],          # at a midnight
    ["8", "U3", "11/11/2019 7:00:00 AM", "N1 N2", "N6-1 N7-0"],
]


def user_len(rows, impression_id):
    lens = set(rows[rows["impression_id"] == impression_id]["history_len"])
    assert len(lens) == 1
    return lens.pop()


def user_vec(rows, impression_id):
    return np.stack(rows[rows["impression_id"] == impression_id]["user_vec"])[0]


@pytest.fixture(scope="module")
def timeline(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline")
    write_sample(root, train=LEAK_TRAIN)
    cfg = make_cfg(root, "features.npratio=0")
    embed_news.run(cfg, spark)
    build_features.run(cfg, spark)
    return root, cfg


def test_a_click_reaches_later_impressions_only(timeline):
    _, cfg = timeline
    rows, vectors = features(cfg, "train"), vectors_by_id(cfg)
    assert [user_len(rows, i) for i in (1, 2, 3)] == [1, 1, 2]
    np.testing.assert_array_equal(user_vec(rows, 1), user_vec(rows, 2))
    np.testing.assert_allclose(user_vec(rows, 3), (vectors["N1"] + vectors["N5"]) / 2, atol=1e-6)


def test_impressions_in_the_same_second_do_not_see_each_other(timeline):
    _, cfg = timeline
    rows, vectors = features(cfg, "train"), vectors_by_id(cfg)
    assert user_len(rows, 4) == 1 and user_len(rows, 5) == 1
    np.testing.assert_allclose(user_vec(rows, 4), vectors["N2"], atol=1e-6)
    np.testing.assert_allclose(user_vec(rows, 5), vectors["N4"], atol=1e-6)
    # one second later: both histories and both clicks
    assert user_len(rows, 6) == 4
    np.testing.assert_allclose(user_vec(rows, 6), np.mean(
        [vectors[n] for n in ("N2", "N4", "N6", "N9")], axis=0), atol=1e-6)


def test_served_profile_equals_the_trained_vector(spark, timeline):
    """The state served for 11/12 is, to the bit, the user vector that U3's impression at
    11/12 00:00:00 gets in the train rows (its history is already in the state)."""
    _, cfg = timeline
    day = dt.datetime(2019, 11, 12)
    build_features.run(cfg, spark, as_of=day)
    served = features(cfg, "state", day).set_index("user_id")
    rows = features(cfg, "train")          # the newest rows: as of the end of the data
    assert user_len(rows, 7) == served.loc["U3", "history_len"] == 3
    np.testing.assert_array_equal(user_vec(rows, 7), np.asarray(served.loc["U3", "user_vec"]))
    assert list(served.loc["U3", "clicked_news"]) == ["N1", "N2", "N6"]


def test_a_stale_run_date_fails_and_writes_nothing(spark, timeline):
    from dcn.export import export_model
    from tests.builders import random_model

    root, base = timeline
    cfg = base.with_overrides(["score.table=recs_stale", f"score.table_location={root / 't'}"])
    build_features.run(cfg, spark, as_of=dt.datetime(2019, 11, 20))
    export_model(cfg, random_model(16), model_metadata(cfg, 16))
    with pytest.raises(UserInputError, match=r"cannot score 2019-11-20: the log's last "
                                             r"impression before it is at 2019-11-15T23:00:00, "
                                             r"97.0 hours earlier"):
        score.run(cfg, "2019-11-20", spark)
    assert not spark.catalog.tableExists("newsrec.recs_stale")


def test_a_model_trained_on_other_vectors_is_refused(spark, timeline):
    from dcn.export import export_model
    from tests.builders import random_model

    root, base = timeline
    cfg = base.with_overrides(["score.table=recs_lineage", f"score.table_location={root / 'l'}",
                               "score.model_version=other-vectors"])
    build_features.run(cfg, spark, as_of=dt.datetime(2019, 11, 16))
    other = dict(model_metadata(cfg, 16), news_vectors=dict(
        model_metadata(cfg, 16)["news_vectors"], encoder="use", id="0123456789ab"))
    export_model(cfg, random_model(16), other, version="other-vectors")
    with pytest.raises(UserInputError, match=r"trained on other news vectors .*encoder: "
                                             r"model 'use', features 'hashing'"):
        score.run(cfg, "2019-11-16", spark)
    assert not spark.catalog.tableExists("newsrec.recs_lineage")


# -------------------------------------------------------------- the daily log and the chain

def state_table(cfg, day: dt.date) -> pd.DataFrame:
    pointer = outputs.current_as_of(cfg, outputs.day_start(day), outputs.STATE, "")
    table = read_table(f"{pointer['path']}/state").sort_values("user_id").reset_index(drop=True)
    return table


def assert_same_state(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a["user_id"]) == list(b["user_id"])
    assert list(a["history_len"]) == list(b["history_len"])
    assert [list(x) for x in a["clicked_news"]] == [list(x) for x in b["clicked_news"]]
    for column in ("vector_sum", "user_vec"):
        np.testing.assert_array_equal(np.stack(a[column]), np.stack(b[column]))


@pytest.fixture(scope="module")
def daily_log(spark, tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("daily_log")
    write_daily_log(str(tiny[0] / "mind"), str(root / "log"))
    cfg = load_config(overrides=[
        f"paths.log={root / 'log'}", f"paths.work={root / 'work'}", "embed.encoder=hashing", "embed.postprocess=project",
        "embed.hashing_dim=16", "embed.projection_dim=0", "features.min_row_groups=4",
        "features.files=4", "features.candidate_window_hours=24", "score.k=5",
        f"score.table_location={root / 'table'}", "score.table=recs_daily"])
    embed_news.run(cfg, spark)
    return root, cfg


def fresh(cfg, work: Path, source: Path):
    shutil.copytree(source / "news_vectors", work / "news_vectors")
    return cfg.with_overrides([f"paths.work={work}"])


@pytest.mark.slow
def test_incremental_equals_full_and_backfills_in_any_order(spark, daily_log, tmp_path):
    root, cfg = daily_log
    days = [dt.date(2019, 11, d) for d in (11, 12, 13)]
    in_order = fresh(cfg, tmp_path / "in_order", root / "work")
    for day in days:
        daily.run(in_order, day, score=False, spark=spark)
    # day by day: each run computed exactly one new state after the first
    full = fresh(cfg, tmp_path / "full", root / "work")
    for day in days:
        build_features.run(full, spark, as_of=outputs.day_start(day))
        assert_same_state(state_table(in_order, day), state_table(full, day))

    shuffled = fresh(cfg, tmp_path / "shuffled", root / "work")
    for day in (days[2], days[0], days[1]):
        daily.run(shuffled, day, score=False, spark=spark)
    for day in days:
        assert_same_state(state_table(shuffled, day), state_table(in_order, day))


@pytest.mark.slow
def test_a_late_day_is_picked_up_by_rerunning_it_and_the_days_after(spark, daily_log, tmp_path):
    root, cfg = daily_log
    log = tmp_path / "log"
    shutil.copytree(root / "log", log)
    late = fresh(cfg.with_overrides([f"paths.log={log}"]), tmp_path / "work", root / "work")
    first = daily.run(late, dt.date(2019, 11, 12), score=False, spark=spark)
    before = state_table(late, dt.date(2019, 11, 12))
    # a late row for 11/10: a new user clicks N-something on that day
    day_file = log / "date=2019-11-10" / "behaviors.tsv"
    some_news = vectors_table(late)["news_id"][0]
    with open(day_file, "a", encoding="utf-8") as handle:
        handle.write(f"999999\tU999999\t11/10/2019 3:00:00 PM\t\t{some_news}-1\n")
    again = daily.run(late, dt.date(2019, 11, 12), score=False, spark=spark)
    assert first["states_computed"] and again["states_computed"] == [
        "2019-11-11T00:00:00", "2019-11-12T00:00:00"]
    after = state_table(late, dt.date(2019, 11, 12))
    assert "U999999" in set(after["user_id"]) and "U999999" not in set(before["user_id"])
    full = fresh(cfg.with_overrides([f"paths.log={log}"]), tmp_path / "full", root / "work")
    build_features.run(full, spark, as_of=dt.datetime(2019, 11, 12))
    assert_same_state(after, state_table(full, dt.date(2019, 11, 12)))


@pytest.mark.slow
def test_daily_scoring_by_date(spark, daily_log, tmp_path):
    """No state for the date, or a date past the staleness limit: a clear error and nothing
    written. Two dates inside the data: different lists, none holding a news the user had
    clicked before that date."""
    from dcn.export import export_model
    from tests.builders import random_model

    root, cfg = daily_log
    work = fresh(cfg, tmp_path / "work", root / "work")
    version = export_model(work, random_model(16), model_metadata(work, 16))
    work = work.with_overrides([f"score.model_version={version}"])
    table = "SELECT count(*) FROM newsrec.recs_daily"
    with pytest.raises(UserInputError, match=r"no state as of 2019-11-12T00:00:00 .* "
                                             r"daily --date 2019-11-12"):
        score.run(work, "2019-11-12", spark)
    assert not spark.catalog.tableExists("newsrec.recs_daily") or spark.sql(table).first()[0] == 0

    rows = log_rows(*[(p / "behaviors.tsv").read_text().splitlines()
                      for p in sorted((root / "log").glob("date=*"))])
    lists = {}
    for day in ("2019-11-12", "2019-11-14"):
        summary = daily.run(work, dt.date.fromisoformat(day), spark=spark)
        assert summary["score"]["rows_written"] > 0
        got = spark.sql(f"SELECT user_id, news_id FROM newsrec.recs_daily "
                        f"WHERE run_date = '{day}'").toPandas()
        moment = dt.datetime.fromisoformat(day)
        for user, group in got.groupby("user_id"):
            assert not set(group["news_id"]) & clicked_before(rows, user, moment)
        lists[day] = {u: sorted(g["news_id"]) for u, g in got.groupby("user_id")}
    common = set(lists["2019-11-12"]) & set(lists["2019-11-14"])
    assert common and any(lists["2019-11-12"][u] != lists["2019-11-14"][u] for u in common)


def test_the_benchmark_reference_builds_the_same_rows(spark, tiny, tmp_path):
    """bench/pandas_train_rows.py (single process, its own code) and build_features give the
    same train rows, every column, when both keep every candidate: the benchmark compares the
    same work, and two independent implementations of the state and the side features agree."""
    import subprocess
    import sys

    root, base, _ = tiny
    cfg = base.with_overrides([f"paths.work={tmp_path}", "features.npratio=0"])
    shutil.copytree(root / "work" / "news_vectors", tmp_path / "news_vectors")
    build_features.run(cfg, spark)
    vectors_uri = current_vectors(cfg)["vectors_uris"][0].replace("file://", "")
    out = tmp_path / "reference.parquet"
    mind = root / "mind"
    subprocess.run([sys.executable, "-m", "bench.pandas_train_rows",
                    str(mind / "MINDsmall_train" / "behaviors.tsv"),
                    vectors_uri, str(out), "0", "--news", str(mind / "MINDsmall_train" / "news.tsv"),
                    str(mind / "MINDsmall_dev" / "news.tsv"),
                    "--dev", str(mind / "MINDsmall_dev" / "behaviors.tsv"),
                    "--dev-out", str(tmp_path / "reference_dev.parquet"),
                    "--window-hours", str(cfg["features.popularity_window_hours"]),
                    "--ctr-prior", str(cfg["features.ctr_prior"]),
                    "--prior-impressions", str(cfg["features.ctr_prior_impressions"]),
                    "--buckets", str(cfg["features.category_buckets"])],
                   cwd=Path(__file__).resolve().parent.parent, check=True, capture_output=True,
                   timeout=300)
    for split, path in (("train", out), ("dev", tmp_path / "reference_dev.parquet")):
        assert_same_rows(read_table(str(path)), features(cfg, split))


def assert_same_rows(reference, spark_rows):
    key = ["impression_id", "news_id"]
    reference = reference.sort_values(key, ignore_index=True)
    spark_rows = spark_rows.sort_values(key, ignore_index=True)
    assert len(spark_rows) > 1000 and list(reference.columns) == list(spark_rows.columns)
    for column in ("impression_id", "news_id", "user_id", "label", "history_len", "category",
                   "subcategory"):
        assert list(reference[column]) == list(spark_rows[column]), column
    assert spark_rows["category"].nunique() > 3
    for column in ("user_vec", "news_vec", "user_dense", "news_dense", "pair_dense"):
        np.testing.assert_allclose(np.stack(reference[column]), np.stack(spark_rows[column]),
                                   rtol=1e-6, atol=1e-6, err_msg=column)
    np.testing.assert_allclose(reference["age_hours"], spark_rows["age_hours"], rtol=1e-6)
    popularity = np.stack(spark_rows["news_dense"])[:, 1]
    assert (popularity > 0).mean() > 0.5     # the windowed counts are exercised
