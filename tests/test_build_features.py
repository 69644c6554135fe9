"""embed_news + build_features on a hand-made MIND sample, checked against numpy."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from common import outputs, storage
from common.config import load_config
from common.errors import ConfigError
from jobs import build_features, embed_news
from features.mind import RejectedShareExceeded
from tests.builders import (DEV, NEWS, TRAIN, features, make_cfg, read_table, vectors_by_id,
                            write_sample)

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("mind")
    write_sample(root)
    cfg = make_cfg(root)
    embed_summary = embed_news.run(cfg, spark)
    summary = build_features.run(cfg, spark)
    return root, cfg, embed_summary, summary


def test_embed_news_covers_both_splits(built):
    _, cfg, embed_summary, _ = built
    vectors = vectors_by_id(cfg)
    assert set(vectors) == set(NEWS)
    assert embed_summary["dim"] == 16
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in vectors.values())


def test_history_mode_user_vectors_equal_numpy_mean_of_history(spark, built, tmp_path):
    """features.user_clicks=history: MIND's convention, the history column alone."""
    root = built[0]
    cfg = make_cfg(root, f"paths.work={tmp_path / 'work'}", "features.user_clicks=history")
    shutil.copytree(str(root / "work" / "news_vectors"), str(tmp_path / "work" / "news_vectors"))
    build_features.run(cfg, spark)
    vectors = vectors_by_id(cfg)
    histories = {int(r[0]): r[3].split() for r in TRAIN + DEV}
    for table in ("train", "dev"):
        rows = features(cfg, table)
        assert len(rows) > 0
        for _, row in rows.iterrows():
            known = [vectors[n] for n in histories[row["impression_id"]] if n in vectors]
            expected = np.mean(known, axis=0) if known else np.zeros(16)
            np.testing.assert_allclose(row["user_vec"], expected, atol=1e-6)
            assert row["history_len"] == len(known)
            np.testing.assert_allclose(row["news_vec"], vectors[row["news_id"]], atol=0)


def test_empty_history_gives_zero_vector(built):
    rows = features(built[1], "train")
    empty = rows[rows["impression_id"] == 2]
    assert len(empty) == 3 and (empty["history_len"] == 0).all()
    assert all(not np.any(v) for v in empty["user_vec"])


def test_npratio_sampling_and_dev_keeps_all(built):
    _, cfg, _, summary = built
    train, dev = features(cfg, "train"), features(cfg, "dev")
    for imp in TRAIN:
        cands = [t.rsplit("-", 1) for t in imp[4].split()]
        known = [(n, int(l)) for n, l in cands if n in NEWS]
        pos = sum(l for _, l in known)
        neg = len(known) - pos
        got = train[train["impression_id"] == int(imp[0])]
        assert got["label"].sum() == pos
        assert (got["label"] == 0).sum() == min(neg, 2 * pos)
    assert sorted(dev["impression_id"]) == sorted([10] * 3 + [11] * 4)
    assert summary["rows"]["dev"]["rows"] == 7


def test_unknown_ids_counted(built):
    summary = built[3]
    # N99 (history of impression 4) and N77 (a candidate) are in no news.tsv; N10, a train
    # candidate, is only in the dev news.tsv, so it is missing from train's but has a vector
    assert summary["ids_missing_from_news_tsv"]["train"] == {"history": 1, "candidates": 2}
    assert summary["ids_missing_from_news_tsv"]["dev"] == {"history": 0, "candidates": 0}
    assert summary["candidates_without_vector"] == 1
    assert "N77" not in set(features(built[1], "train")["news_id"])


def test_user_profiles_latest_history_plus_clicks(built):
    _, cfg, _, _ = built
    vectors = vectors_by_id(cfg)
    profiles = features(cfg, "user_profiles").set_index("user_id")
    expected_clicked = {"U1": {"N1", "N2", "N3", "N6", "N8", "N9"}, "U2": {"N2", "N5"},
                        "U3": {"N7", "N8", "N99", "N9", "N77"}, "U4": {"N5", "N6"}}
    assert set(profiles.index) == set(expected_clicked)
    for user, clicked in expected_clicked.items():
        assert set(profiles.loc[user, "clicked_news"]) == clicked
        known = sorted(n for n in clicked if n in vectors)
        np.testing.assert_allclose(profiles.loc[user, "user_vec"],
                                   np.mean([vectors[n] for n in known], axis=0), atol=1e-6)
        assert profiles.loc[user, "history_len"] == len(known)


def test_candidate_pool_is_the_last_window(built):
    _, cfg, _, summary = built
    pool = features(cfg, "candidate_pool").set_index("news_id")
    # data end 11/15 11 PM; the 24 h window holds impressions 10 and 11 only
    assert set(pool.index) == {"N3", "N9", "N10", "N6", "N7", "N8", "N1"}
    assert pool.loc["N9", "clicks"] == 1 and pool.loc["N9", "impressions"] == 1
    assert summary["data_end"].startswith("2019-11-15T23:00")


def test_generated_sample_parquet_shaped_for_petastorm(spark, tmp_path):
    """On the generated tiny sample: nothing rejected, at least min_row_groups row groups, and
    every file holds impressions from across the whole time range."""
    from synthetic.generate import generate
    generate("tiny", str(tmp_path / "mind"), seed=3)
    cfg = load_config(overrides=[
        f"paths.train={tmp_path / 'mind' / 'MINDsmall_train'}",
        f"paths.dev={tmp_path / 'mind' / 'MINDsmall_dev'}", f"paths.work={tmp_path / 'work'}",
        "embed.encoder=hashing", "embed.postprocess=project", "embed.hashing_dim=32", "embed.projection_dim=0",
        "features.min_row_groups=16", "features.files=4"])
    embed_news.run(cfg, spark)
    summary = build_features.run(cfg, spark)
    assert set(summary["rejected_rows"].values()) == {0}
    # the last 24 h of the train split are the validation rows
    assert summary["rows"]["train"]["impressions"] + summary["rows"]["valid"]["impressions"] == 500
    assert 0 < summary["rows"]["valid"]["impressions"] < 250
    path = summary["output"].replace("file://", "")
    files = pq.ParquetDataset(f"{path}/train").files
    assert len(files) == 4
    assert sum(pq.ParquetFile(f).metadata.num_row_groups for f in files) >= 16
    # the two vectors are packed float32 bytes, the dense arrays lists of floats
    schema = pq.ParquetDataset(f"{path}/train").schema
    assert str(schema.field("user_vec").type) == "binary"
    assert str(schema.field("news_vec").type) == "binary"
    assert str(schema.field("news_dense").type) in ("list<element: float not null>", "list<element: float>")
    # impression ids are in time order in no particular way, so use the files' id spread:
    # a file written from one input block would hold one contiguous range of impressions
    for f in files:
        ids = pq.read_table(f, columns=["impression_id"]).column(0).to_numpy()
        assert ids.max() - ids.min() > 250


def test_point_in_time_later_clicks_do_not_leak(spark, built, tmp_path):
    """Changing everything after impression 3 (later clicks, later histories) leaves the rows
    of impressions up to 3 unchanged."""
    _, _, _, _ = built
    changed = [r[:] for r in TRAIN]
    changed[3] = ["4", "U1", "11/11/2019 10:00:00 PM", "N1 N2 N6 N8 N3", "N1-1 N3-1 N9-1"]
    changed[4] = ["5", "U2", "11/12/2019 6:45:10 AM", "N2 N9 N10", "N4-1 N5-1 N6-1"]
    write_sample(tmp_path, train=changed)
    cfg = make_cfg(tmp_path)
    embed_news.run(cfg, spark)
    build_features.run(cfg, spark)
    before = features(built[1], "train")
    after = features(cfg, "train")
    key = ["impression_id", "news_id"]
    early_before = before[before["impression_id"] <= 3].sort_values(key).reset_index(drop=True)
    early_after = after[after["impression_id"] <= 3].sort_values(key).reset_index(drop=True)
    assert len(early_before) > 0
    for column in ("label", "history_len", "news_id"):
        assert list(early_before[column]) == list(early_after[column])
    np.testing.assert_array_equal(np.stack(early_before["user_vec"]), np.stack(early_after["user_vec"]))
    # the changed later impression does see its own (changed) history
    assert set(after[after["impression_id"] == 4]["history_len"]) == {5}


def test_rerun_gives_same_rows_and_keeps_one_current(spark, built):
    _, cfg, _, first = built
    first_tables = {t: features(cfg, t) for t in ("train", "dev", "state", "candidate_pool")}
    second = build_features.run(cfg, spark)
    assert second["run_id"] != first["run_id"]
    for table in ("train", "dev", "state", "candidate_pool"):
        a = first_tables[table]
        b = features(cfg, table)
        key = [c for c in ("impression_id", "user_id", "news_id") if c in a.columns]
        a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
        assert a.drop(columns=[c for c in a.columns if c.endswith(("vec", "news", "sum"))]).equals(
            b.drop(columns=[c for c in b.columns if c.endswith(("vec", "news", "sum"))]))
        for column in (c for c in a.columns if c.endswith(("vec", "sum"))):
            np.testing.assert_array_equal(np.stack(a[column]), np.stack(b[column]))
    assert outputs.current_rows(cfg)["run_id"] == second["run_id"]


def test_other_seed_samples_other_negatives(spark, built, tmp_path):
    root = built[0]
    cfg = make_cfg(root, f"paths.work={tmp_path / 'work'}", "features.seed=7")
    shutil.copytree(str(root / "work" / "news_vectors"), str(tmp_path / "work" / "news_vectors"))
    summary = build_features.run(cfg, spark)
    a = features(built[1], "train")
    b = read_table(f"{summary['output']}/train")
    assert a["label"].sum() == b["label"].sum()
    assert set(zip(a["impression_id"], a["news_id"])) != set(zip(b["impression_id"], b["news_id"]))


def test_crash_mid_run_keeps_previous_output(spark, built, monkeypatch):
    _, cfg, _, _ = built
    before = outputs.current_rows(cfg)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the candidate pool")

    monkeypatch.setattr(build_features, "write_pool", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_features.run(cfg, spark)
    after = outputs.current_rows(cfg)
    assert after["run_id"] == before["run_id"]
    assert storage.exists(f"{after['path']}/train")


def test_rejected_share_threshold(spark, tmp_path):
    bad_train = TRAIN + [["6", "U9", "not a time", "", "N1-1"]]
    write_sample(tmp_path, train=bad_train)
    cfg = make_cfg(tmp_path)
    embed_news.run(cfg, spark)
    with pytest.raises(RejectedShareExceeded, match=r"behaviors.tsv: 1 of 6 rows rejected"):
        build_features.run(cfg, spark)
    assert outputs.as_of_moments(cfg, outputs.ROWS) == []
    summary = build_features.run(make_cfg(tmp_path, "mind.max_rejected_share=0.5"), spark)
    rejected = read_table(f"{summary['output']}/rejected")
    assert list(rejected["line"]) == [6] and list(rejected["column"]) == [3]
    assert rejected["file"][0].endswith("train/behaviors.tsv")
    assert list(summary["rejected_rows"].values()) == [1, 0]


def test_precomputed_vectors_wrong_width_is_a_clear_error(spark, tmp_path):
    write_sample(tmp_path)
    vec = tmp_path / "vectors.vec"
    lines = [f"{nid}\t" + "\t".join(["0.5"] * 8) for nid in NEWS]
    lines[4] = "N5\t" + "\t".join(["0.5"] * 7)
    vec.write_text("\n".join(lines) + "\n")
    cfg = make_cfg(tmp_path, "embed.encoder=precomputed", f"embed.precomputed_path={vec}",
                   "embed.precomputed_dim=8")
    with pytest.raises(ValueError, match=r"vectors.vec:5: vector of news 'N5' has width 7"):
        embed_news.run(cfg, spark)
    vec.write_text("\n".join(f"{nid} " + " ".join(["0.5"] * 8) for nid in NEWS) + "\n")
    summary = embed_news.run(cfg, spark)
    assert summary["dim"] == 8 and summary["vectors"] == len(NEWS)
    wrong = make_cfg(tmp_path, "embed.encoder=precomputed", f"embed.precomputed_path={vec}",
                     "embed.precomputed_dim=16")
    with pytest.raises(ValueError, match="has width 8"):
        embed_news.run(wrong, spark)


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'features.nprati'"):
        load_config(overrides=["features.nprati=3"])
    with pytest.raises(ConfigError, match="'features.npratio' must be an integer"):
        load_config(overrides=["features.npratio=four"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("embed:\n  normalize: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: 'embed.normalize' must be a boolean"):
        load_config(bad)
    assert build_features.main(["--set", "paths.nope=1"]) == 2


def test_precomputed_vector_with_a_nan_says_where(spark, tmp_path):
    write_sample(tmp_path)
    vec = tmp_path / "vectors.vec"
    lines = [f"{nid} " + " ".join(["0.5"] * 8) for nid in NEWS]
    lines[2] = "N3 0.5 0.5 nan 0.5 0.5 0.5 0.5 0.5"
    lines[6] = "N7 0.5 x 0.5 0.5 0.5 0.5 0.5 0.5"
    vec.write_text("\n".join(lines) + "\n")
    cfg = make_cfg(tmp_path, "embed.encoder=precomputed", f"embed.precomputed_path={vec}",
                   "embed.precomputed_dim=8")
    with pytest.raises(ValueError, match=r"vectors.vec:3: vector of news 'N3' has NaN at position 3"):
        embed_news.run(cfg, spark)
    lines[2] = "N3 " + " ".join(["0.5"] * 8)
    vec.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"vectors.vec:7: vector of news 'N7' has a value that "
                                         r"is not a number at position 2"):
        embed_news.run(cfg, spark)


def test_a_step_run_before_its_input_is_one_clear_line(tmp_path, capsys):
    cfg = ["--set", f"paths.work={tmp_path / 'work'}"]
    assert build_features.main(cfg) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished embed_news run" in err[0] and "run the embed_news" in err[0]


def test_shuffle_partitions_are_left_to_a_cluster():
    from common.spark import LOCAL_SHUFFLE_PARTITIONS, session_settings
    default = load_config()
    assert "spark.sql.shuffle.partitions" not in session_settings(default, local=False)
    assert session_settings(default, local=True)["spark.sql.shuffle.partitions"] == str(
        LOCAL_SHUFFLE_PARTITIONS)
    given = load_config(overrides=["spark.shuffle_partitions=64"])
    assert session_settings(given, local=False)["spark.sql.shuffle.partitions"] == "64"
