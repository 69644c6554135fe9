"""jobs.evaluate on a hand-made MIND sample (metrics checked against dcn.metrics on the driver,
prediction.txt checked by hand) and on the synthetic generator's planted sample."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from common import storage
from common.cli import UserInputError
from common.config import load_config
from jobs import evaluate as ev
from dcn import metrics as M
from dcn.export import export_model, load_model
from dcn.model import build_dcn
from jobs import build_features, embed_news
from tests.conftest import write_tsv
from tests.test_build_features import TRAIN, features, model_metadata, write_sample

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
    return [f"paths.train={root / 'train'}", f"paths.dev={root / 'dev'}",
            f"paths.work={root / 'work'}", f"paths.ground_truth={root / 'truth'}",
            "embed.encoder=hashing", f"embed.hashing_dim={DIM}", "embed.projection_dim=0",
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
    model = build_dcn(DIM, DIM, cross_layers=2, deep_units=[8], seed=3)
    export_model(cfg, model, model_metadata(cfg, DIM))
    doc = ev.evaluate(cfg, spark)
    return root, cfg, doc


def run_files(output):
    return {name: storage.read_text(f"{output}/{name}") for name in ev.OUTPUT_FILES
            if name != "metrics.png"}


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


def expected_scores(spark, cfg, rows):
    """Every scorer's score per dev row, computed here with numpy / the Keras model."""
    user = np.stack(rows["user_vec"]).astype(np.float32)
    news = np.stack(rows["news_vec"]).astype(np.float32)
    model, _ = load_model(ev.model_folder(cfg))
    logits = np.asarray(model.predict({"user_vec": user, "news_vec": news}, verbose=0),
                        dtype=np.float64).reshape(-1)
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
        "oracle": np.array([TRUTH[i][n] for i, n in keys]),
    }


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
    assert set(doc["scorers"]) == {"dcn", "random", "popularity", "cosine", "oracle"}
    for scorer, values in scores.items():
        accumulator = M.MetricAccumulator()
        for y, s in by_impression(keys, labels, values).values():
            accumulator.add(y, s)
        expected, got = accumulator.result(), doc["scorers"][scorer]
        for name in M.METRIC_NAMES:
            assert got[name] == pytest.approx(expected[name], abs=1e-9), (scorer, name)
        assert (got["impressions"], got["skipped_impressions"]) == (4, 2)
    for scorer, tolerance in (("dcn", 1e-6), ("oracle", 1e-12)):
        # Keras' float32 logits change in the last bits with the batch a row is scored in
        # (about 1e-6 here), and the workers' batches are not the test's: hence 1e-6 for dcn.
        got = doc["scorers"][scorer]
        assert got["log_loss"] == pytest.approx(M.log_loss(labels, scores[scorer]), abs=tolerance)
        exact = M.global_auc(labels, scores[scorer])
        assert got["global_auc_error_bound"] < 0.01
        assert abs(got["global_auc"] - exact) <= got["global_auc_error_bound"] + 1e-12
    # impression 12's user has no history: cosine is 0 for all its candidates (listed order decides)
    assert np.all(by_impression(keys, labels, scores["cosine"])[12][1] == 0)


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
    fs, path = storage.filesystem(f"{pointer['path']}/metrics.png")
    with fs.open_input_stream(path) as stream:
        png = stream.read()
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
    for scorer in ("dcn", "random", "popularity", "cosine", "oracle"):
        line = next(l for l in report.splitlines() if l.startswith(f"| {scorer} |"))
        assert f"{doc['scorers'][scorer]['auc']:.4f}" in line
        assert f"{doc['scorers'][scorer]['ndcg@10']:.4f}" in line
    for metric in ("auc", "ndcg@10"):
        gap = doc["gap_closed"][metric]
        best = max(("random", "popularity", "cosine"), key=lambda b: doc["scorers"][b][metric])
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

    monkeypatch.setattr(ev, "metrics_plot_png", crash)
    cfg = load_config(overrides=overrides(root, "paths.ground_truth="))
    with pytest.raises(RuntimeError, match="simulated crash"):
        ev.evaluate(cfg, spark)
    assert storage.current_run(str(evaluation), "evaluate")["run_id"] == before["run_id"]
    (crashed,) = set(p.name for p in (evaluation / "runs").iterdir() if p.is_dir()) - runs_before
    left = evaluation / "runs" / crashed
    assert (left / "prediction.txt").exists() and not (left / "metrics.png").exists()
    partial = json.loads((left / "metrics.json").read_text())
    assert set(partial["scorers"]) == {"dcn", "random", "popularity", "cosine"}
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
    generate_mind = pytest.importorskip("jobs.generate_mind")
    generate_mind.generate("tiny", str(tmp_path / "sample"), seed=0)
    sample = tmp_path / "sample"
    cfg = load_config(overrides=[
        f"paths.train={sample / 'MINDsmall_train'}", f"paths.dev={sample / 'MINDsmall_dev'}",
        f"paths.ground_truth={sample / 'ground_truth'}", f"paths.work={tmp_path / 'work'}",
        "embed.encoder=hashing", "embed.hashing_dim=32", "embed.projection_dim=0",
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
