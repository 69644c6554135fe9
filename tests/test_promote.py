"""The registry and the promotion gate end to end: real training processes on the tiny
synthetic sample register candidates in a real MLflow store (SQLite under paths.work), the
promote stage judges them on real dev rows with Spark, and score writes the served model's
lists into a real Spark SQL table."""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from common import outputs, storage
from common.errors import UserInputError
from evaluation.promotion import verdict
from tests.builders import PROCESS_ENV, PROJECT, tiny_work

DAY = "2019-11-16"
TRAIN = ["train.epochs=3", "train.patience=0", "train.warmup_steps=10", "train.batch_size=128",
         "train.threads_per_rank=1", "train.reader_threads=1", "train.shuffle_buffer=1024",
         "model.deep_units=[32]", "model.dropout=0.0"]


def train(work: Path, *extra: str) -> dict:
    """python -m dcn.train in its own process (one rank); its JSON summary."""
    args = [a for item in [f"paths.work={work}", *TRAIN, *extra] for a in ("--set", item)]
    result = subprocess.run([sys.executable, "-m", "dcn.train", *args, "--as-of", DAY],
                            cwd=PROJECT, env=PROCESS_ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout[result.stdout.index("{"):])


def publish_shuffled_labels(cfg) -> str:
    """A copy of the current rows run as of DAY, its train labels permuted, published as the
    newest run: a model trained on it has learnt nothing."""
    as_of = outputs.day_start(dt.date.fromisoformat(DAY))
    pointer = outputs.current_rows(cfg, as_of)
    root = outputs.as_of_root(cfg, as_of, outputs.ROWS)
    run_id = storage.start_run(root)
    target = Path(storage.run_dir(root, run_id).replace("file://", ""))
    shutil.copytree(pointer["path"].replace("file://", ""), target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("_COMMITTED"))
    rng = np.random.default_rng(0)
    for path in sorted((target / "train").glob("*.parquet")):
        table = pq.read_table(path)
        labels = table.column("label").to_numpy()
        shuffled = table.set_column(table.schema.get_field_index("label"), "label",
                                    [rng.permutation(labels)])
        pq.write_table(shuffled, path, row_group_size=max(1, table.num_rows // 2))
    storage.publish_run(root, run_id, dict(pointer["summary"], run_id=run_id), keep_runs=5)
    return run_id


def table(spark, cfg) -> list[tuple]:
    """The table's rows of DAY (without scored_at), in a fixed order."""
    rows = spark.sql(f"SELECT user_id, rank, news_id, score, model_version FROM "
                     f"newsrec.{cfg['score.table']} WHERE run_date = '{DAY}' "
                     "ORDER BY user_id, rank").collect()
    return [tuple(r) for r in rows]


@pytest.fixture(scope="module")
def story(spark, tmp_path_factory):
    """Two good candidates and one trained on shuffled labels; promote the first, try the
    broken one, promote the second, roll back; the table of DAY after each step."""
    from jobs import promote, score

    root = tmp_path_factory.mktemp("promote")
    cfg, work = tiny_work(spark, root, as_of=dt.datetime(2019, 11, 16))
    cfg = cfg.with_overrides(["score.table=recs_promote", f"score.table_location={root / 't'}",
                              "score.k=5"])
    good = [train(work, "model.seed=0"), train(work, "model.seed=1")]
    publish_shuffled_labels(cfg)
    broken = train(work, "model.seed=0")
    steps = {"good": good, "broken": broken}
    with pytest.raises(UserInputError, match=r"no model is served yet .*spark-submit.sh promote"):
        score.run(cfg, DAY, spark)
    steps["first"] = promote.run(cfg, version=good[0]["version"], spark=spark)
    score.run(cfg, DAY, spark)
    steps["table_first"] = table(spark, cfg)
    steps["refused"] = promote.run(cfg, version=broken["version"], spark=spark)
    score.run(cfg, DAY, spark)
    steps["table_refused"] = table(spark, cfg)
    # the second candidate may be a little worse than the first on these few rows: the
    # tolerance here is about the story, the rule has its own test
    lenient = cfg.with_overrides(["promote.max_auc_drop=0.1"])
    steps["second"] = promote.run(lenient, version=good[1]["version"], spark=spark)
    score.run(cfg, DAY, spark)
    steps["table_second"] = table(spark, cfg)
    steps["rollback"] = promote.run(cfg, rollback=True)
    score.run(cfg, DAY, spark)
    steps["table_rollback"] = table(spark, cfg)
    return cfg, steps


@pytest.mark.slow
@pytest.mark.spark
def test_training_registers_candidates_pinned_to_their_date(story):
    from dcn.export import load_metadata, model_folder
    from dcn.registry import Registry

    cfg, steps = story
    registry = Registry(cfg)
    versions = {v.version: v for v in registry.versions()}
    for summary in [*steps["good"], steps["broken"]]:
        assert summary["status"] == "trained" and summary["as_of"] == f"{DAY}T00:00:00"
        assert versions[summary["version"]].as_of == f"{DAY}T00:00:00"
        assert load_metadata(model_folder(cfg, summary["version"]))["as_of"] == f"{DAY}T00:00:00"
    assert steps["broken"]["features_run_id"] != steps["good"][0]["features_run_id"]
    run = registry.client.get_run(registry.client.get_model_version(
        registry.name, str(versions[steps["good"][0]["version"]].number)).run_id)
    assert run.data.params["as_of"] == f"{DAY}T00:00:00" and "val_auc" in run.data.metrics
    epochs = registry.client.get_metric_history(run.info.run_id, "epoch_val_auc")
    assert [m.step for m in epochs] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.spark
def test_good_candidate_is_served_and_the_broken_one_refused(story):
    cfg, steps = story
    first, refused, second = steps["first"], steps["refused"], steps["second"]
    good = [s["version"] for s in steps["good"]]
    assert first["promoted"] and first["served"] == good[0] and first["served_before"] is None
    assert first["figures"]["candidate_auc"] > first["figures"]["best_baseline_auc"]
    assert not refused["promoted"] and refused["served"] == good[0]
    figures = refused["figures"]
    assert figures["candidate_auc"] <= figures["best_baseline_auc"] or (
        figures["candidate_auc"] < figures["served_auc"] - cfg["promote.max_auc_drop"])
    # the candidate's own held-out rows, the served model scored on the same ones
    assert figures["features_run_id"] == steps["broken"]["features_run_id"]
    assert figures["served_auc"] == pytest.approx(first["figures"]["candidate_auc"], abs=0.05)
    assert {r[4] for r in steps["table_first"]} == {good[0]}
    assert steps["table_refused"] == steps["table_first"]
    assert second["promoted"] and second["served"] == good[1]
    assert {r[4] for r in steps["table_second"]} == {good[1]}
    root = outputs.promotions_root(cfg)
    decisions = [storage.committed_run(root, r, "promote")["summary"]
                 for r in storage.committed_runs(root)]
    assert [d["action"] for d in decisions][-3:] == ["gate", "gate", "rollback"]


@pytest.mark.slow
@pytest.mark.spark
def test_rollback_restores_the_previous_lists_row_for_row(story, capsys):
    from jobs import show_runs

    cfg, steps = story
    good = [s["version"] for s in steps["good"]]
    assert steps["rollback"]["served"] == good[0]
    assert steps["rollback"]["served_history"] == [steps["first"]["registered_version"]]
    assert steps["table_rollback"] == steps["table_first"] != steps["table_second"]
    show_runs.show(cfg)
    shown = capsys.readouterr().out
    assert re.search(rf"served model +{good[0]} ", shown)
    assert re.search(rf"last decision .*: rollback {good[0]} promoted", shown)


def test_gate_rule():
    figures = {"candidate_auc": 0.70, "best_baseline": "ctr", "best_baseline_auc": 0.65,
               "served_auc": None}
    assert verdict(figures, 0.005)[0]
    assert verdict(dict(figures, served_auc=0.705), 0.005)[0]
    ok, reasons = verdict(dict(figures, served_auc=0.7051), 0.005)
    assert not ok and reasons[-1].startswith("AUC 0.7000 < served 0.7051")
    ok, reasons = verdict(dict(figures, best_baseline_auc=0.70), 0.005)
    assert not ok and "<= best baseline ctr" in reasons[0]


def test_rollback_without_history_and_force_without_version(tmp_path):
    from common.config import load_config
    from jobs import promote

    cfg = load_config(overrides=[f"paths.work={tmp_path / 'work'}"])
    assert promote.main(["--set", f"paths.work={tmp_path / 'work'}", "--rollback"]) == 1
    with pytest.raises(UserInputError, match="cannot roll back: .* no earlier served version"):
        promote.run(cfg, rollback=True)
    with pytest.raises(UserInputError, match="--force serves the version it names"):
        promote.run(cfg, force=True)
    with pytest.raises(UserInputError, match=r"no exported model version 'v9'"):
        promote.run(cfg, version="v9")
    with pytest.raises(UserInputError, match=r"no registered model version in newsrec-dcn"):
        promote.run(cfg)


@pytest.mark.slow
@pytest.mark.spark
def test_pruning_old_exports_spares_every_version_served(story):
    """A training keeps train.keep_versions exports but never deletes one the registry may
    serve again: the served model and the versions a rollback returns to (not the one rolled
    back from) stay scorable."""
    from dcn.export import export_model, model_folder
    from dcn.registry import Registry
    from tests.builders import model_metadata, random_model

    cfg, steps = story
    protected = Registry(cfg).protected_versions()
    assert protected == {steps["good"][0]["version"]}     # the second was rolled back
    newest = export_model(cfg.with_overrides(["train.keep_versions=1"]), random_model(32),
                          model_metadata(cfg, 32), protected=protected)
    kept = set(storage.committed_runs(outputs.models_root(cfg)))
    assert kept == protected | {newest}
    with pytest.raises(storage.RunNotFound):
        model_folder(cfg, steps["broken"]["version"])


def test_force_serves_an_export_made_before_the_registry(tmp_path, capsys):
    from common.config import load_config
    from dcn.export import export_model
    from dcn.registry import served_version
    from jobs import promote
    from tests.builders import random_model

    work = tmp_path / "work"
    cfg = load_config(overrides=[f"paths.work={work}"])
    version = export_model(cfg, random_model(8), {"user_dim": 8, "news_dim": 8})
    assert promote.main(["--set", f"paths.work={work}", "--version", version, "--force"]) == 0
    assert f"promote (force): {version} promoted; served: {version}; forced" in capsys.readouterr().out
    assert served_version(cfg).version == version
    assert storage.current_run(outputs.promotions_root(cfg), "promote")["summary"]["served"] == version
