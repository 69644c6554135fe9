"""Fresh news get vectors in the daily run: over a daily log whose catalogue grows by day,
`daily` embeds each day's new news and only those, with the transform fitted on the first
catalogue, never rewrites the vectors of earlier days, ranks the news published the day
before, and fails a day whose shown news lack vectors."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from common import outputs, storage
from common.config import load_config
from common.errors import UserInputError
from features import vector_fit, vector_transform
from features.encoders import HashingEncoder
from features.news_vectors import current_vectors, transform_settings, vectors_identity
from jobs import daily
from synthetic.generate import generate
from synthetic.writer import write_daily_log
from tests.builders import model_metadata, random_model

pytestmark = [pytest.mark.spark, pytest.mark.slow]
DAYS = [dt.date(2019, 11, 10), dt.date(2019, 11, 11), dt.date(2019, 11, 12)]


def news_ids(path: Path) -> set:
    return {line.split("\t", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()}


def partition_bytes(cfg, day: dt.date) -> dict:
    """The files of the current run of one day's vectors partition, by name."""
    root = outputs.vectors_partition_root(cfg, vectors_identity(cfg)["id"], day)
    folder = Path(storage.current_run(root, "vectors")["path"].replace("file://", "")) / "vectors"
    return {f.name: f.read_bytes() for f in folder.glob("*.parquet")}


@pytest.fixture(scope="module")
def growing_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh_news")
    generate("tiny", str(root / "mind"), seed=5)
    write_daily_log(str(root / "mind"), str(root / "log"))
    cfg = load_config(overrides=[
        f"paths.log={root / 'log'}", f"paths.work={root / 'work'}", "embed.encoder=hashing",
        "embed.hashing_dim=16", "embed.text=title", "embed.postprocess=whiten",
        "embed.projection_dim=8", "features.candidate_window_hours=24",
        "score.k=100", f"score.table_location={root / 'table'}", "score.table=recs_fresh"])
    return root, cfg


def test_daily_embeds_each_days_new_news_only(spark, growing_log):
    from dcn.export import export_model

    root, cfg = growing_log
    log = root / "log"
    # every day of the log brings news of its own, beside the catalogue from before the log
    published = {day: news_ids(log / f"date={day}" / "news.tsv")
                 for day in (DAYS[0] - dt.timedelta(days=1), *DAYS[:-1])}
    assert all(published.values()) and (log / "news.tsv").exists()
    summaries, first_partition = [], None
    for day in DAYS:
        if day == DAYS[2]:   # a model of these vectors (and their fit), scored by name
            version = export_model(cfg, random_model(8), model_metadata(cfg, 8))
            cfg = cfg.with_overrides([f"score.model_version={version}"])
        summaries.append(daily.run(cfg, day, score=day == DAYS[2], spark=spark))
        if first_partition is None:
            first_partition = partition_bytes(cfg, DAYS[0])
    first, second, third = summaries
    # day 1 embeds the catalogue from before the log and the news of the log's first day;
    # each later day only the news first published the day before
    assert first["news_embedded"] == len(news_ids(log / "news.tsv") | published[dt.date(2019, 11, 9)])
    assert second["news_embedded"] == len(published[DAYS[0]])
    assert third["news_embedded"] == len(published[DAYS[1]])
    assert all(s["news_without_vector"] == 0 for s in summaries)
    assert third["score"]["rows_written"] > 0
    # the vectors of day 1 are the same files, byte for byte; a rerun embeds nothing
    assert partition_bytes(cfg, DAYS[0]) == first_partition
    assert daily.run(cfg, DAYS[2], score=False, spark=spark)["news_embedded"] == 0
    assert current_vectors(cfg)["partitions"] == 3
    # the states of every day record the same identity: news added later do not change it
    states = [outputs.current_as_of(cfg, outputs.day_start(day), outputs.STATE, "")
              for day in DAYS]
    identity = vectors_identity(cfg)
    assert all(s["summary"]["news_vectors"] == identity for s in states)
    # the whitening was fitted once, on the first catalogue, and day 2's news got that same
    # transform: their vectors are the stored fit applied to their titles' hashing vectors
    fit = vector_fit.stored_fit(cfg, identity["id"])
    assert identity["fit"] == fit.digest() and fit.rows == first["news_embedded"]
    assert len(storage.committed_runs(vector_fit.fit_root(cfg, identity["id"]))) == 1
    titles = dict(line.split("\t")[0:4:3] for line in (
        log / f"date={DAYS[1]}" / "news.tsv").read_text(encoding="utf-8").splitlines())
    stored = {r["news_id"]: r["vector"] for r in spark.read.parquet(
        *current_vectors(cfg)["vectors_uris"]).where(F.col("news_id").isin(list(titles))).collect()}
    assert set(stored) == set(titles)
    ids = sorted(titles)
    expected = vector_transform.apply(HashingEncoder(16).encode([titles[i] for i in ids]),
                                      transform_settings(cfg), fit)
    np.testing.assert_allclose(np.array([stored[i] for i in ids]), expected, rtol=1e-5, atol=1e-6)
    # day 3's lists rank news first published on day 2
    listed = {r["news_id"] for r in spark.sql(
        f"SELECT DISTINCT news_id FROM newsrec.recs_fresh WHERE run_date = '{DAYS[2]}'").collect()}
    assert listed & published[DAYS[1]]


def test_a_day_whose_shown_news_lack_vectors_fails(spark, growing_log):
    """Day 4 shows the news of day 3's news.tsv; without that file they have no vector."""
    root, cfg = growing_log
    day3_news = root / "log" / f"date={DAYS[2]}" / "news.tsv"
    missing = news_ids(day3_news)
    day3_news.unlink()
    day4 = DAYS[2] + dt.timedelta(days=1)
    with pytest.raises(UserInputError, match=rf"{len(missing)} of \d+ shown news have no vector "
                                             r".*max_news_without_vector_share=0.05\), e.g. N"):
        daily.run(cfg, day4, score=False, spark=spark)
    assert not storage.has_committed_run(
        outputs.as_of_root(cfg, outputs.day_start(day4), outputs.STATE))


def test_vectors_whose_fit_is_lost_are_never_mixed_with_a_new_fit(spark, growing_log):
    """Without its fit, an identity that holds vectors refuses to fit again: the new news would
    get vectors of another transform than the old ones."""
    import shutil

    from common.cli import StageTimer
    from features.fresh_news import embed_missing

    root, cfg = growing_log
    late = root / "log" / "date=2019-11-20"
    late.mkdir()
    (late / "news.tsv").write_text("N999999\tnews\tworld\tA late headline\t\t\t[]\t[]\n",
                                   encoding="utf-8")
    fit_folder = vector_fit.fit_root(cfg, vectors_identity(cfg)["id"]).replace("file://", "")
    shutil.rmtree(fit_folder)
    with pytest.raises(UserInputError, match="holds vectors but not the whiten fit"):
        embed_missing(spark, cfg, dt.date(2019, 11, 21), None, StageTimer("test"))
    assert vector_fit.stored_fit(cfg, vectors_identity(cfg)["id"]) is None
