"""Guards of the unattended daily run, on a real daily log, real Spark and the real
recommendations table: a date far past the log fails before any state is computed, a
truncated day is refused before scoring, and a copied work folder never writes into (or
cleans up) the table of the folder it was copied from."""
from __future__ import annotations

import datetime as dt
import shutil

import pytest

from common.config import load_config
from common.errors import UserInputError
from jobs import daily, embed_news, score
from synthetic.generate import generate
from synthetic.writer import write_daily_log
from tests.builders import model_metadata, random_model

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def log_and_work(spark, tmp_path_factory):
    """A tiny daily log, and a work folder with its news vectors and a random model."""
    from dcn.export import export_model

    root = tmp_path_factory.mktemp("daily_guards")
    generate("tiny", str(root / "mind"), seed=7)
    write_daily_log(str(root / "mind"), str(root / "log"))
    settings = [f"paths.log={root / 'log'}", f"paths.work={root / 'work'}",
                "embed.encoder=hashing", "embed.postprocess=project", "embed.hashing_dim=16", "embed.projection_dim=0",
                "features.min_row_groups=4", "features.files=4",
                "features.candidate_window_hours=24", "score.k=3",
                f"score.table_location={root / 'work' / 'table'}", "score.table=recs_guards"]
    cfg = load_config(overrides=settings)
    embed_news.run(cfg, spark)
    # scored with this version by name: the tests are about the day's data, not the gate
    version = export_model(cfg, random_model(16), model_metadata(cfg, 16))
    settings.append(f"score.model_version={version}")
    cfg = cfg.with_overrides([settings[-1]])
    days = sorted(dt.date.fromisoformat(p.name[len("date="):]) for p in (root / "log").glob("date=*"))
    return root, cfg, settings, days


def fresh(cfg, root, name, log=None):
    """A work folder of its own (the news vectors and model copied in) with a table of its
    own (`recs_NAME`; the tests share one metastore), on `log` if given."""
    work = root / name
    for part in ("news_vectors", "models"):
        shutil.copytree(root / "work" / part, work / part)
    return cfg.with_overrides([f"paths.work={work}", f"score.table_location={work / 'table'}",
                               f"score.table=recs_{name}"] + ([f"paths.log={log}"] if log else []))


def partition_rows(spark, cfg, day: dt.date) -> int:
    return spark.sql(f"SELECT count(*) FROM newsrec.{cfg['score.table']} "
                     f"WHERE run_date = '{day}'").first()[0]


def test_a_date_far_past_the_log_fails_before_any_state(spark, log_and_work, capsys):
    root, cfg, settings, days = log_and_work
    work = fresh(cfg, root, "far")
    args = [part for s in settings + [f"paths.work={work['paths.work']}"] for part in ("--set", s)]
    assert daily.main(["--date", "2030-01-01", *args]) == 1
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and f"the log's last day is {days[-1]}" in errors[0]
    assert f"pick a date up to {days[-1] + dt.timedelta(days=3)}" in errors[0]
    assert not list((root / "far").rglob("as_of=*"))       # no state, no pool computed
    # score's own message for that date names the same limit, and no command that would run long
    with pytest.raises(UserInputError, match=f"the log's last day is {days[-1]}") as raised:
        score.run(work, "2030-01-01", spark)
    assert "daily --date" not in str(raised.value)


def test_a_truncated_day_is_refused_with_its_figures(spark, log_and_work, tmp_path):
    root, cfg, _, days = log_and_work
    log = tmp_path / "log"
    shutil.copytree(root / "log", log)
    work = fresh(cfg, root, "truncated", log=log)
    scored = days[-2]                    # scores from the days before it: at least two
    assert daily.run(work, scored, spark=spark)["volume"]["previous_days"] >= 2
    assert partition_rows(spark, work, scored) > 0
    day_file = log / f"date={scored}" / "behaviors.tsv"
    lines = day_file.read_text(encoding="utf-8").splitlines(keepends=True)
    day_file.write_text("".join(lines[:max(1, len(lines) // 10)]), encoding="utf-8")
    before = partition_rows(spark, work, scored)
    with pytest.raises(UserInputError, match=f"the log's day {scored} looks incomplete: "
                                             "impressions ") as raised:
        daily.run(work, scored + dt.timedelta(days=1), spark=spark)
    message = str(raised.value)
    assert "users" in message and "news shown" in message and "daily.min_volume_ratio 0.5" in message
    assert partition_rows(spark, work, scored) == before
    assert partition_rows(spark, work, scored + dt.timedelta(days=1)) == 0
    # a missing day is refused too
    shutil.rmtree(day_file.parent)
    with pytest.raises(UserInputError, match=f"no impression on {scored}|has no day before"):
        daily.run(work, scored + dt.timedelta(days=1), spark=spark)


def test_a_copied_work_folder_never_touches_the_original_table(spark, log_and_work):
    root, cfg, _, days = log_and_work
    original = fresh(cfg, root, "original")
    scored = days[-2]
    summary = daily.run(original, scored, spark=spark)
    rows = partition_rows(spark, original, scored)
    assert rows == summary["score"]["rows_written"] > 0
    shutil.copytree(root / "original", root / "copy")
    copy = original.with_overrides([f"paths.work={root / 'copy'}",
                                    f"score.table_location={root / 'copy' / 'table'}"])
    with pytest.raises(UserInputError, match=r"outside this configuration's .*copy/table "
                                             r"\(score.table_location\)"):
        score.run(copy, scored.isoformat(), spark)
    assert partition_rows(spark, original, scored) == rows
    assert (root / "original" / "table" / f"run_date={scored}" / summary["score"]["run_id"]).is_dir()
