"""jobs.evaluate (evaluation/) on a hand-made MIND sample (metrics checked against dcn.metrics on the driver,
prediction.txt checked by hand) and on the synthetic generator's planted sample; and the
evaluator's pure helpers (the rank-average baseline, segments, the partial accumulator)
without Spark."""
from __future__ import annotations

import json
import math
import pickle
import shutil

import numpy as np
import pytest

from common import storage
from common.errors import UserInputError
from common.config import load_config
from jobs import evaluate as ev
from synthetic.generate import generate
from evaluation import aggregate, document, report, scorers
from dcn import metrics as M
from dcn.export import export_model, load_model, model_folder
from dcn.model import build_dcn, model_spec
from dcn.spec import input_columns
from jobs import build_features, embed_news
from features.side_features import NEWS_DENSE_NAMES, USER_DENSE_NAMES
from tests.builders import TRAIN, features, model_metadata, write_sample, write_tsv

pytestmark = pytest.mark.spark

DIM = 16  # hashing encoder width, no projection
SEED = 7  # evaluate.seed
# Dev impressions: N77 and N88 have no vector (in no news.tsv). 12 has an empty history (zero
# user vector: cosine ties, broken by the listed order, which is not the news id order), 13 has
# no click, 14 keeps only a non-click once N77 is dropped, 15 has 11
# candidates (nDCG@5 differs from nDCG@10), 16 has no candidate with a vector at all.
DEV = [
    ["10", "U1", "11/15/2019 8:00:00 AM", "N1 N2", "N3-0 N9-1 N10-0"],
    ["11", "U4", "11/15/2019 11:00:00 PM", "N5", "N6-1 N7-0 N8-0 N1-0"],
    ["12", "U5", "11/15/2019 9:00:00 AM", "", "N4-1 N77-0 N5-0 N2-0"],
    ["13", "U1", "11/15/2019 10:00:00 AM", "N1 N2", "N3-0 N4-0"],
    ["14", "U6", "11/15/2019 10:30:00 AM", "N3 N9", "N77-1 N5-0"],
    ["15", "U2", "11/15/2019 1:00:00 PM", "N2",
     "N1-1 N3-0 N5-1 N6-0 N7-0 N8-0 N9-0 N10-0 N4-0 N2-0 N77-0"],
    ["16", "U7", "11/15/2019 2:00:00 PM", "N1", "N77-0 N88-1"],
]
TRUTH = {
    10: {"N3": 0.30, "N9": 0.60, "N10": 0.10},
    11: {"N6": 0.50, "N7": 0.20, "N8": 0.55, "N1": 0.05},
    12: {"N4": 0.70, "N77": 0.90, "N5": 0.10, "N2": 0.20},
    13: {"N3": 0.10, "N4": 0.20},
    14: {"N77": 0.80, "N5": 0.30},
    15: {"N1": 0.35, "N3": 0.05, "N5": 0.40, "N6": 0.12, "N7": 0.11, "N8": 0.10, "N9": 0.09,
         "N10": 0.08, "N4": 0.07, "N2": 0.06, "N77": 0.50},
    16: {"N77": 0.30, "N88": 0.40},
}
# prediction.txt by the oracle, worked out by hand from TRUTH; N77/N88 (no vector) rank last.
ORACLE_LINES = ["10 [2,1,3]", "11 [2,3,1,4]", "12 [1,4,3,2]", "13 [2,1]", "14 [2,1]",
                "15 [2,10,1,3,4,5,6,7,8,9,11]", "16 [1,2]"]


def overrides(root, *extra):
    # validation_hours=0: every train impression is in the train rows (the tests below count
    # them); `popularity` covers the train and validation rows either way.
    return ["features.validation_hours=0",
            f"paths.train={root / 'train'}", f"paths.dev={root / 'dev'}",
            f"paths.work={root / 'work'}", f"paths.ground_truth={root / 'truth'}",
            "embed.encoder=hashing", "embed.postprocess=project", f"embed.hashing_dim={DIM}", "embed.projection_dim=0",
            "features.min_row_groups=2", "spark.master=local[2]", "spark.shuffle_partitions=4",
            "spark.driver_memory=2g", f"evaluate.seed={SEED}", "evaluate.batch_size=5", *extra]


def write_truth(folder, truth):
    rows = ["impression_id\tnews_id\tclick_prob"]
    rows += [f"{imp}\t{news}\t{p}" for imp, probs in truth.items() for news, p in probs.items()]
    write_tsv(folder / "dev.tsv", rows)


@pytest.fixture(scope="module")
def evaluated(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    write_sample(root, dev=DEV)
    write_truth(root / "truth", TRUTH)
    cfg = load_config(overrides=overrides(root))
    embed_news.run(cfg, spark)
    build_features.run(cfg, spark)
    export_model(cfg, side_feature_model(cfg), model_metadata(cfg, DIM))
    doc = ev.evaluate(cfg, spark)
    return root, cfg, doc


def side_feature_model(cfg):
    """A DCN fed every side input (dense arrays, category buckets), so evaluation must read
    and feed them all; non-trivial standardization so a mis-fed input changes the scores."""
    return build_dcn(DIM, DIM, cross_layers=2, deep_units=[8], seed=3,
                     features=["user_stats", "news_stats", "category"],
                     user_dense_mean=[0.5] * len(USER_DENSE_NAMES),
                     user_dense_std=[0.7] * len(USER_DENSE_NAMES),
                     news_dense_mean=[1.0] * len(NEWS_DENSE_NAMES),
                     news_dense_std=[0.5] * len(NEWS_DENSE_NAMES),
                     category_buckets=cfg["features.category_buckets"], category_dim=4)


def run_files(output):
    return {name: storage.read_text(f"{output}/{name}") for name in document.OUTPUT_FILES
            if not name.endswith(".png")}


def read_png(uri):
    fs, path = storage.filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


# ------------------------------------------------------------------ independent computation


def dev_rows(cfg):
    return features(cfg, "dev")


def listed_position():
    return {(int(r[0]), t.rsplit("-", 1)[0]): i for r in DEV for i, t in enumerate(r[4].split())}


def train_clicks():
    clicks = {}
    for row in TRAIN:
        for token in row[4].split():
            news, label = token.rsplit("-", 1)
            clicks[news] = clicks.get(news, 0) + int(label)
    return clicks


def random_scores(spark, rows):
    """The documented formula, in Spark SQL text (not the evaluator's Column code)."""
    frame = spark.createDataFrame([(int(i), n) for i, n in zip(rows["impression_id"], rows["news_id"])],
                                  "impression_id long, news_id string")
    out = frame.selectExpr(
        "impression_id", "news_id",
        f"cast(xxhash64(cast({SEED} as int), impression_id, news_id) & {(1 << 53) - 1} as double)"
        f" / {float(1 << 53)} as r").collect()
    return {(r["impression_id"], r["news_id"]): r["r"] for r in out}


def model_feed(model, rows):
    """The model's inputs from the dev rows, as the test reads the model's needs."""
    feed = {"user_vec": np.stack(rows["user_vec"]).astype(np.float32),
            "news_vec": np.stack(rows["news_vec"]).astype(np.float32)}
    for name, width in input_columns(model_spec(model)).items():
        feed[name] = (np.stack(rows[name]).astype(np.float32) if width
                      else rows[name].to_numpy().astype(np.int32))
    return feed


def independent_rank_average(a, b):
    """Mean of the two average ranks, ranks counted pairwise: #smaller + (#equal + 1) / 2."""
    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        return np.array([np.sum(v < x) + (np.sum(v == x) + 1) / 2 for x in v])
    return (ranks(a) + ranks(b)) / 2


def expected_scores(spark, cfg, rows):
    """Every row scorer's score per dev row, computed here with numpy / the Keras model
    (ctr_cosine is per impression: see impression_scores)."""
    model, _ = load_model(model_folder(cfg))
    feed = model_feed(model, rows)
    assert set(feed) == {"user_vec", "news_vec", "user_dense", "news_dense", "category",
                         "subcategory"}
    user, news = feed["user_vec"], feed["news_vec"]
    logits = np.asarray(model.predict(feed, verbose=0), dtype=np.float64).reshape(-1)
    cosine = []
    for u, n in zip(user.astype(np.float64), news.astype(np.float64)):
        norm = np.linalg.norm(u) * np.linalg.norm(n)
        cosine.append(float(u @ n / norm) if norm > 0 else 0.0)
    clicks, randoms = train_clicks(), random_scores(spark, rows)
    keys = list(zip(rows["impression_id"].astype(int), rows["news_id"]))
    return keys, {
        "dcn": 1.0 / (1.0 + np.exp(-logits)),
        "random": np.array([randoms[k] for k in keys]),
        "popularity": np.array([float(clicks.get(n, 0)) for _, n in keys]),
        "cosine": np.array(cosine),
        "ctr": np.array([float(d[NEWS_DENSE_NAMES.index("smoothed_ctr")])
                         for d in rows["news_dense"]]),
        "oracle": np.array([TRUTH[i][n] for i, n in keys]),
    }


def impression_scores(keys, labels, scores):
    """{impression: (labels, {scorer: scores})} in listed order, ctr_cosine included."""
    grouped = {s: by_impression(keys, labels, v) for s, v in scores.items()}
    out = {}
    for imp, (y, _) in grouped["dcn"].items():
        values = {s: grouped[s][imp][1] for s in scores}
        values["ctr_cosine"] = independent_rank_average(values["ctr"], values["cosine"])
        out[imp] = (y, values)
    return out


def listed_ages(rows):
    position = listed_position()
    ages = {}
    for imp, news, age in zip(rows["impression_id"].astype(int), rows["news_id"], rows["age_hours"]):
        ages.setdefault(imp, []).append((position[(imp, news)], float(age)))
    return {imp: np.array([a for _, a in sorted(v)]) for imp, v in ages.items()}


def by_impression(keys, labels, scores):
    """{impression: (labels, scores)} in the order the impression lists its candidates."""
    position = listed_position()
    groups = {}
    for k, y, s in zip(keys, labels, scores):
        groups.setdefault(k[0], []).append((position[k], y, s))
    return {imp: (np.array([y for _, y, _ in sorted(g)]), np.array([s for _, _, s in sorted(g)]))
            for imp, g in groups.items()}


def test_every_scorer_matches_dcn_metrics_on_the_driver(spark, evaluated):
    _, cfg, doc = evaluated
    rows = dev_rows(cfg)
    assert len(rows) == 23
    keys, scores = expected_scores(spark, cfg, rows)
    labels = rows["label"].to_numpy()
    assert set(doc["scorers"]) == {"dcn", "random", "popularity", "cosine", "ctr", "ctr_cosine",
                                   "oracle"}
    impressions = impression_scores(keys, labels, scores)
    for scorer in doc["scorers"]:
        accumulator = M.MetricAccumulator()
        for y, values in impressions.values():
            accumulator.add(y, values[scorer])
        expected, got = accumulator.result(), doc["scorers"][scorer]
        for name in M.METRIC_NAMES:
            assert got[name] == pytest.approx(expected[name], abs=1e-9), (scorer, name)
        assert (got["impressions"], got["skipped_impressions"]) == (4, 2)
    assert doc["model_inputs"] == {"user_vec": DIM, "news_vec": DIM, "user_dense": 2,
                                   "news_dense": 4, "category": 0, "subcategory": 0}
    for scorer, tolerance in (("dcn", 1e-6), ("ctr", 1e-7), ("oracle", 1e-12)):
        # Keras' float32 logits change in the last bits with the batch a row is scored in
        # (about 1e-6 here), and the workers' batches are not the test's: hence 1e-6 for dcn.
        got = doc["scorers"][scorer]
        assert got["log_loss"] == pytest.approx(M.log_loss(labels, scores[scorer]), abs=tolerance)
        exact = M.global_auc(labels, scores[scorer])
        if scorer != "ctr":   # many news share the prior's click rate: ties in one bin
            assert got["global_auc_error_bound"] < 0.01
        assert abs(got["global_auc"] - exact) <= got["global_auc_error_bound"] + 1e-12
    # impression 12's user has no history: cosine is 0 for all its candidates (listed order decides)
    assert np.all(by_impression(keys, labels, scores["cosine"])[12][1] == 0)


def test_segments_match_dcn_metrics_on_the_driver(spark, evaluated):
    _, cfg, doc = evaluated
    rows = dev_rows(cfg)
    keys, scores = expected_scores(spark, cfg, rows)
    impressions = impression_scores(keys, rows["label"].to_numpy(), scores)
    history = dict(zip(rows["impression_id"].astype(int), rows["history_len"].astype(int)))
    ages = listed_ages(rows)
    bucket = lambda n: "0" if n == 0 else "1-4" if n < 5 else "5-19" if n < 20 else "20+"  # noqa: E731
    expected = {(d, g): {s: M.MetricAccumulator() for s in doc["scorers"]}
                for d, groups in aggregate.SEGMENTS.items() for g in groups}
    for imp, (y, values) in impressions.items():
        fresh = ages[imp] < 24
        for scorer, v in values.items():
            expected[("user", "cold" if history[imp] == 0 else "warm")][scorer].add(y, v)
            expected[("history_len", bucket(history[imp]))][scorer].add(y, v)
            for group, mask in (("fresh", fresh), ("older", ~fresh)):
                if mask.any():
                    expected[("news_age", group)][scorer].add(y[mask], v[mask])
    assert list(doc["segments"]) == ["user", "history_len", "news_age"]
    counted = {}
    for (dimension, group), accumulators in expected.items():
        for scorer, accumulator in accumulators.items():
            want, got = accumulator.result(), doc["segments"][dimension][group][scorer]
            assert got["impressions"] == want["impressions"], (dimension, group, scorer)
            assert got["skipped_impressions"] == want["skipped_impressions"]
            for name in M.METRIC_NAMES:
                assert got[name] == pytest.approx(want[name], abs=1e-9, nan_ok=True)
        counted[(dimension, group)] = accumulators["dcn"].result()["impressions"]
    # the sample has cold and warm users, and fresh and older candidates counted
    assert counted[("user", "cold")] + counted[("user", "warm")] == 4
    assert counted[("user", "cold")] > 0 and counted[("news_age", "older")] > 0
    assert sum(counted[("history_len", g)] for g in aggregate.SEGMENTS["history_len"]) == 4


def test_calibration_of_dcn_matches_numpy(spark, evaluated):
    _, cfg, doc = evaluated
    rows = dev_rows(cfg)
    _, scores = expected_scores(spark, cfg, rows)
    labels, p = rows["label"].to_numpy(), scores["dcn"]
    cal = doc["calibration"]
    assert cal["rows"] == 23 and sum(d["n"] for d in cal["deciles"]) == 23
    assert cal["mean_predicted"] == pytest.approx(p.mean(), abs=1e-6)
    assert cal["observed_ctr"] == pytest.approx(labels.mean(), abs=1e-12)
    assert cal["log_loss"] == doc["scorers"]["dcn"]["log_loss"]
    # the deciles: the rows of each fine bin (1e-4 wide) go to the decile of the bin's
    # middle row in the order of the predictions
    fine = np.minimum(np.floor(p * 10_000).astype(int), 9_999)
    decile, before = np.empty(23, dtype=int), 0
    for b in sorted(set(fine)):
        n = int(np.sum(fine == b))
        decile[fine == b] = min(9, int(10 * (before + n / 2) / 23))
        before += n
    want = [(g + 1, int(np.sum(decile == g)), p[decile == g].mean(), labels[decile == g].mean())
            for g in range(10) if np.any(decile == g)]
    got = [(d["group"], d["n"], d["mean_predicted"], d["observed"]) for d in cal["deciles"]]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert [v for g in got for v in g[2:]] == pytest.approx([v for w in want for v in w[2:]],
                                                            abs=1e-6)
    ece = sum(w[1] / 23 * abs(w[2] - w[3]) for w in want)
    assert cal["ece"] == pytest.approx(ece, abs=1e-6)
    report = run_files(doc["output"])["report.md"]
    assert "## Calibration of the DCN probabilities" in report
    assert f"ECE, 10 equal-count groups) {cal['ece']:.4f}" in report
    assert f"| {got[0][0]} | {got[0][1]} | " in report
    assert "## Metrics by segment" in report and "| cold | dcn | " in report
    png = read_png(f"{doc['output']}/reliability.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_counts_of_impressions_and_candidates(evaluated):
    doc = evaluated[2]
    assert doc["impressions"] == {"listed": 7, "counted": 4, "skipped_single_class": 2,
                                  "without_rows": 1}
    assert doc["candidates"] == {"listed": 28, "scored": 23, "without_vector": 5, "feature_rows": 23}


def expected_line(imp, listed, scored):
    """Ranks in listed order: by score descending, ties and unscored candidates by listed
    order, unscored after every scored one."""
    order = sorted(range(len(listed)),
                   key=lambda i: (0, -scored[listed[i]], i) if listed[i] in scored else (1, 0, i))
    ranks = [0] * len(listed)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return f"{imp} [{','.join(map(str, ranks))}]"


def test_prediction_file_ranks_dcn_scores_in_listed_order(spark, evaluated):
    _, cfg, doc = evaluated
    rows = dev_rows(cfg)
    keys, scores = expected_scores(spark, cfg, rows)
    dcn = dict(zip(keys, scores["dcn"]))
    expected = []
    for row in sorted(DEV, key=lambda r: int(r[0])):
        imp, listed = int(row[0]), [t.rsplit("-", 1)[0] for t in row[4].split()]
        expected.append(expected_line(imp, listed, {n: s for (i, n), s in dcn.items() if i == imp}))
    text = storage.read_text(f"{doc['output']}/prediction.txt")
    assert text.splitlines() == expected
    assert text.endswith("\n")
    assert doc["prediction_file"] == {"scorer": "dcn", "lines": 7}


def test_cli_oracle_prediction_file_hand_checked_and_published_complete(evaluated, capsys):
    root, _, first = evaluated
    args = [part for item in overrides(root, "evaluate.prediction_scorer=oracle")
            for part in ("--set", item)]
    assert ev.main(args) == 0
    printed = capsys.readouterr().out
    assert "| scorer | AUC | MRR | nDCG@5 | nDCG@10 | global AUC | log loss |" in printed
    assert "| oracle | " in printed and "gap closed" in printed
    pointer = storage.current_run(str(root / "work" / "evaluation"), "evaluate")
    assert pointer["run_id"] != first["run_id"]
    files = run_files(pointer["path"])
    assert files["prediction.txt"].splitlines() == ORACLE_LINES
    png = read_png(f"{pointer['path']}/metrics.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    again = json.loads(files["metrics.json"])
    assert again["run_id"] == pointer["run_id"] and again["prediction_file"]["scorer"] == "oracle"
    assert again["model_version"] == first["model_version"]
    assert again["features_run_id"] == first["features_run_id"]
    for scorer, values in first["scorers"].items():  # same inputs, same numbers
        for name in M.METRIC_NAMES:
            assert again["scorers"][scorer][name] == pytest.approx(values[name], abs=1e-12)
    assert pointer["summary"]["metrics"]["oracle"]["auc"] == pytest.approx(
        first["scorers"]["oracle"]["auc"], abs=1e-12)


def test_report_table_and_gap_closed(evaluated):
    doc = evaluated[2]
    report = run_files(doc["output"])["report.md"]
    for scorer in ("dcn", *scorers.BASELINES, "oracle"):
        line = next(l for l in report.splitlines() if l.startswith(f"| {scorer} |"))
        assert f"{doc['scorers'][scorer]['auc']:.4f}" in line
        assert f"{doc['scorers'][scorer]['ndcg@10']:.4f}" in line
    for metric in ("auc", "ndcg@10"):
        gap = doc["gap_closed"][metric]
        best = max(scorers.BASELINES, key=lambda b: doc["scorers"][b][metric])
        assert gap["best_baseline"] == best
        b, o, d = (doc["scorers"][s][metric] for s in (best, "oracle", "dcn"))
        assert gap["gap_closed"] == pytest.approx((d - b) / (o - b), abs=1e-12)
        assert f"gap closed {gap['gap_closed']:.1%}" in report
    assert json.loads(run_files(doc["output"])["metrics.json"])["gap_closed"]["auc"]["oracle"] == \
        pytest.approx(doc["scorers"]["oracle"]["auc"])


def test_crash_before_the_last_file_publishes_nothing(spark, evaluated, monkeypatch):
    """Also runs without a ground truth: no oracle, no gap (checked in the unpublished run)."""
    root = evaluated[0]
    evaluation = root / "work" / "evaluation"
    before = storage.current_run(str(evaluation), "evaluate")
    runs_before = set(p.name for p in (evaluation / "runs").iterdir() if p.is_dir())

    def crash(doc):
        raise RuntimeError("simulated crash while drawing the plot")

    monkeypatch.setattr(report, "metrics_plot_png", crash)
    cfg = load_config(overrides=overrides(root, "paths.ground_truth="))
    with pytest.raises(RuntimeError, match="simulated crash"):
        ev.evaluate(cfg, spark)
    assert storage.current_run(str(evaluation), "evaluate")["run_id"] == before["run_id"]
    (crashed,) = set(p.name for p in (evaluation / "runs").iterdir() if p.is_dir()) - runs_before
    left = evaluation / "runs" / crashed
    assert (left / "prediction.txt").exists() and not (left / "metrics.png").exists()
    partial = json.loads((left / "metrics.json").read_text())
    assert set(partial["scorers"]) == {"dcn", *scorers.BASELINES}
    assert partial["gap_closed"] == {"auc": None, "ndcg@10": None}


def test_width_mismatch_is_a_clear_error_before_any_work(spark, evaluated, tmp_path):
    root = evaluated[0]
    shutil.copytree(root / "work" / "features", tmp_path / "work" / "features")
    cfg = load_config(overrides=overrides(root, f"paths.work={tmp_path / 'work'}"))
    export_model(cfg, build_dcn(DIM, 8, cross_layers=1, deep_units=[]), model_metadata(evaluated[1], DIM, 8), version="narrow")
    with pytest.raises(UserInputError, match=r"narrow does not fit .* model expects user_vec width 16 "
                                             r"and news_vec width 8, but the data has .* news_vec width 16"):
        ev.evaluate(cfg, spark)
    assert not (tmp_path / "work" / "evaluation").exists()


def test_oracle_scorer_needs_a_ground_truth(spark, evaluated):
    cfg = load_config(overrides=overrides(evaluated[0], "paths.ground_truth=",
                                          "evaluate.prediction_scorer=oracle"))
    with pytest.raises(UserInputError, match="prediction_scorer must be one of"):
        ev.evaluate(cfg, spark)


def test_oracle_beats_random_on_the_planted_sample(spark, tmp_path):
    generate("tiny", str(tmp_path / "sample"), seed=0)
    sample = tmp_path / "sample"
    cfg = load_config(overrides=[
        f"paths.train={sample / 'MINDsmall_train'}", f"paths.dev={sample / 'MINDsmall_dev'}",
        f"paths.ground_truth={sample / 'ground_truth'}", f"paths.work={tmp_path / 'work'}",
        "embed.encoder=hashing", "embed.postprocess=project", "embed.hashing_dim=32", "embed.projection_dim=0",
        "features.min_row_groups=2", "spark.shuffle_partitions=4"])
    embed_news.run(cfg, spark)
    build_features.run(cfg, spark)
    export_model(cfg, build_dcn(32, 32, cross_layers=1, deep_units=[8]), model_metadata(cfg, 32))
    doc = ev.evaluate(cfg, spark)
    scores = doc["scorers"]
    assert doc["impressions"]["counted"] > 200
    assert scores["oracle"]["auc"] > 0.75
    assert abs(scores["random"]["auc"] - 0.5) < 0.05
    assert scores["oracle"]["auc"] > scores["random"]["auc"] + 0.2
    assert scores["oracle"]["ndcg@10"] > scores["random"]["ndcg@10"] + 0.2
    assert scores["oracle"]["log_loss"] < scores["dcn"]["log_loss"]
    assert all(math.isfinite(scores[s][m]) for s in scores for m in M.METRIC_NAMES)


# ------------------------------------------------------------------ pure helpers (no Spark)


def test_rank_average_baseline_on_a_small_impression():
    ctr = [0.10, 0.30, 0.30, 0.05]      # ascending average ranks 2, 3.5, 3.5, 1
    cosine = [0.2, -0.1, 0.5, 0.9]      #                          2, 1,   3,   4
    combined = scorers.rank_average(ctr, cosine)
    assert combined.tolist() == [2.0, 2.25, 3.25, 2.5]
    assert combined.tolist() == independent_rank_average(ctr, cosine).tolist()
    # the higher the better: candidate 3 first, then 4, 2, 1
    assert M.prediction_ranks(combined) == [4, 3, 1, 2]
    scores = scorers.with_derived_scores({"ctr": np.array(ctr), "cosine": np.array(cosine)},
                                    ("ctr", "cosine", "ctr_cosine"))
    assert scores["ctr_cosine"].tolist() == [2.0, 2.25, 3.25, 2.5]
    # from a batch's columns, and None for an impression without rows
    columns = {"ctr": np.array([np.array(ctr), None], dtype=object),
               "cosine": np.array([np.array(cosine), None], dtype=object)}
    assert scorers.impression_scores(columns, 0, ("ctr_cosine",))["ctr_cosine"].tolist() == \
        [2.0, 2.25, 3.25, 2.5]
    assert scorers.impression_scores(columns, 1, ("ctr_cosine",)) == {"ctr_cosine": None}


def test_segment_assignment():
    assert [aggregate.user_segment(n) for n in (0, 1, 30)] == ["cold", "warm", "warm"]
    assert [aggregate.history_bucket(n) for n in (0, 1, 4, 5, 19, 20, 500)] == \
        ["0", "1-4", "1-4", "5-19", "5-19", "20+", "20+"]
    with pytest.raises(ValueError):
        aggregate.history_bucket(-1)
    masks = aggregate.freshness_masks([0.0, 23.9, 24.0, 100.0])
    assert masks["fresh"].tolist() == [True, True, False, False]
    assert masks["older"].tolist() == [False, False, True, True]


def test_partial_fills_segments_and_calibration_by_hand():
    """Two impressions, two scorers. A: a cold user (history_len 0); fresh candidates 0 and 2
    (a click and a non-click), one older candidate (single class: skipped). B: history 7;
    every candidate older."""
    scorers = ("dcn", "cosine")
    a = dict(labels=[1, 0, 0], ages=[1.0, 30.0, 2.0],
             scores={"dcn": [0.9, 0.2, 0.5], "cosine": [0.1, 0.3, 0.2]})
    b = dict(labels=[0, 1], ages=[48.0, 72.0], scores={"dcn": [0.4, 0.3], "cosine": [0.1, 0.7]})
    first, second = aggregate.EvaluationPartial(scorers, 100), aggregate.EvaluationPartial(scorers, 100)
    first.add(3, a["labels"], a["scores"], history_len=0, age_hours=a["ages"])
    second.add(2, b["labels"], b["scores"], history_len=7, age_hours=b["ages"])
    second.add(4, None, {"dcn": None, "cosine": None})          # no candidate with a vector
    # the rows of a batch of impressions, as the kernel passes them
    columns = {"label": np.array([np.array(a["labels"]), None, np.array(b["labels"])], dtype=object),
               "dcn": np.array([np.array(a["scores"]["dcn"]), None, np.array(b["scores"]["dcn"])],
                               dtype=object)}
    labels, rows = aggregate.batch_rows(columns, ["dcn"])
    assert labels.tolist() == [1, 0, 0, 0, 1] and rows["dcn"].tolist() == [0.9, 0.2, 0.5, 0.4, 0.3]
    first.add_rows(labels[:3], {"dcn": rows["dcn"][:3]})
    second.add_rows(labels[3:], {"dcn": rows["dcn"][3:]})
    merged = first.merge(pickle.loads(pickle.dumps(second)))
    seg = merged.segment_metrics()
    assert seg["user"]["cold"]["dcn"]["impressions"] == 1
    assert seg["user"]["cold"]["dcn"]["auc"] == 1.0          # 0.9 above 0.2 and 0.5
    assert seg["user"]["cold"]["cosine"]["auc"] == 0.0       # 0.1 below both
    assert seg["user"]["warm"]["dcn"]["auc"] == 0.0 and seg["user"]["warm"]["cosine"]["auc"] == 1.0
    assert [seg["history_len"][g]["dcn"]["impressions"] for g in ("0", "1-4", "5-19", "20+")] == \
        [1, 0, 1, 0]
    assert math.isnan(seg["history_len"]["20+"]["dcn"]["auc"])
    fresh, older = seg["news_age"]["fresh"], seg["news_age"]["older"]
    # fresh: only A's candidates 0 and 2 (dcn 0.9 > 0.5, cosine 0.1 < 0.2)
    assert (fresh["dcn"]["impressions"], fresh["dcn"]["skipped_impressions"]) == (1, 0)
    assert fresh["dcn"]["auc"] == 1.0 and fresh["cosine"]["auc"] == 0.0
    assert fresh["cosine"]["mrr"] == 0.5
    # older: A's candidate 1 alone is a single class (skipped); B is counted
    assert (older["dcn"]["impressions"], older["dcn"]["skipped_impressions"]) == (1, 1)
    assert older["dcn"]["auc"] == 0.0 and older["cosine"]["mrr"] == 1.0
    cal = merged.calibration_summary(groups=5)
    assert cal["rows"] == 5 and cal["observed_ctr"] == 0.4
    assert cal["mean_predicted"] == pytest.approx((0.9 + 0.2 + 0.5 + 0.4 + 0.3) / 5)
    # 5 rows in 5 groups, one each, by prediction: 0.2 (no), 0.3 (click), 0.4, 0.5 (no), 0.9
    assert [d["mean_predicted"] for d in cal["deciles"]] == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.9])
    assert [d["observed"] for d in cal["deciles"]] == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert cal["ece"] == pytest.approx((0.2 + 0.7 + 0.4 + 0.5 + 0.1) / 5)
    assert merged.impressions_without_rows == 1 and merged.rows == 5


def test_show_runs_prints_the_evaluation(evaluated, capsys):
    """The demo's last step: the current runs, with the metrics table and the calibration."""
    from jobs import show_runs
    show_runs.show(load_config(overrides=overrides(evaluated[0])))
    out = capsys.readouterr().out
    assert "| dcn |" in out and "| ctr_cosine |" in out
    assert "expected calibration error" in out
