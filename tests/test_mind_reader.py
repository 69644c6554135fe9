"""Reading MIND files: exact parsing, edge cases, rejected rows with file/line/column."""
from __future__ import annotations

import datetime as dt

import pytest

from features.mind import (RejectedShareExceeded, check_rejected_share, check_rejected_shares,
                           parse_behaviors, parse_news)
from tests.builders import write_tsv

pytestmark = pytest.mark.spark

ENTITIES = ('[{"Label": "Caf\u00e9 Society", "Type": "O", "WikidataId": "Q1", "Confidence": 0.9, '
            '"OccurrenceOffsets": [0], "SurfaceForms": ["Caf\u00e9"]}]')


def news_row(nid, title="A title", abstract="An abstract", entities="[]"):
    return [nid, "sports", "golf", title, abstract, f"https://example.org/{nid}.html", entities, "[]"]


def test_behaviors_edge_cases_parse(spark, tmp_path):
    folder = tmp_path / "split"
    write_tsv(folder / "behaviors.tsv", [
        ["1", "U13740", "11/11/2019 9:05:58 AM", "N1 N2", "N3-1 N4-0"],
        ["2", "U7", "11/9/2019 12:00:03 PM", "", "N3-0 N4-1 N1-0"],     # empty history
        ["3", "U7", "12/31/2019 11:59:59 PM", "N2", "N4-1"],
    ])
    parsed = parse_behaviors(spark, str(folder))
    good, rejected = parsed.good, parsed.rejected
    rows = {r["impression_id"]: r for r in good.collect()}
    assert rejected.count() == 0
    assert set(rows) == {1, 2, 3}
    assert rows[1]["history"] == ["N1", "N2"]
    assert rows[2]["history"] == []
    assert [(c["news_id"], c["label"]) for c in rows[2]["candidates"]] == [
        ("N3", 0), ("N4", 1), ("N1", 0)]
    assert rows[1]["time"] == dt.datetime(2019, 11, 11, 9, 5, 58)
    assert rows[2]["time"] == dt.datetime(2019, 11, 9, 12, 0, 3)
    assert rows[3]["time"] == dt.datetime(2019, 12, 31, 23, 59, 59)


def test_malformed_behaviors_rows_name_file_line_column(spark, tmp_path):
    folder = tmp_path / "split"
    path = folder / "behaviors.tsv"
    lines = [
        ["1", "U1", "11/11/2019 9:05:58 AM", "N1", "N3-1 N4-0"],
        ["2", "U1", "11/11/2019 9:05:58 AM", "N1", "N3-1"],
        "3\tU1\t11/11/2019 9:05:58 AM\tN1",                                # 4 columns
        ["x4", "U1", "11/11/2019 9:05:58 AM", "N1", "N3-1"],              # bad impression id
        ["5", "user1", "11/11/2019 9:05:58 AM", "N1", "N3-1"],            # bad user id
        ["6", "U1", "2019-11-11 09:05:58", "N1", "N3-1"],                 # bad time
        ["7", "U1", "11/11/2019 9:05:58 AM", "N1 X9", "N3-1"],            # bad history token
        ["8", "U1", "11/11/2019 9:05:58 AM", "N1", "N3-1 N4-2"],          # bad label
        ["9", "U1", "11/11/2019 9:05:58 AM", "N1", ""],                   # no candidates
        ["10", "U1", "11/11/2019 9:05:58 AM", "N1", "N5-1"],
    ]
    write_tsv(path, lines)
    with open(path, "ab") as handle:                                       # line 11: bad UTF-8
        handle.write(b"11\tU1\t11/11/2019 9:05:58 AM\tN1\tN3-1 \xff\xfe\n")
    parsed = parse_behaviors(spark, str(folder))
    good, rejected = parsed.good, parsed.rejected
    got = {r["line"]: (r["column"], r["reason"]) for r in rejected.collect()}
    assert sorted(good.select("impression_id").toPandas()["impression_id"]) == [1, 2, 10]
    assert set(got) == {3, 4, 5, 6, 7, 8, 9, 11}
    assert got[3] == (None, "expected 5 tab-separated columns, found 4")
    assert got[4][0] == 1 and "x4" in got[4][1]
    assert got[5][0] == 2 and "user1" in got[5][1]
    assert got[6][0] == 3 and "2019-11-11 09:05:58" in got[6][1]
    assert got[7][0] == 4 and "'X9'" in got[7][1]
    assert got[8][0] == 5 and "'N4-2'" in got[8][1]
    assert got[9][0] == 5
    assert got[11] == (None, "line is not valid UTF-8")
    assert all(r["file"].endswith("behaviors.tsv") for r in rejected.collect())

    with pytest.raises(RejectedShareExceeded) as err:
        check_rejected_share(parsed, str(path), max_share=0.01)
    message = str(err.value)
    assert "8 of 11 rows rejected" in message and f"{path}:3" in message
    check = check_rejected_share(parsed, str(path), max_share=0.9)
    assert (check.lines, check.rejected, check.duplicates) == (11, 8, 0)


def test_news_edge_cases(spark, tmp_path):
    folder = tmp_path / "split"
    title = 'He said "it\'s | done" & caf\u00e9 \u2014 \U0001F600 \u00fcber'
    write_tsv(folder / "news.tsv", [
        news_row("N1", title=title, abstract="", entities=ENTITIES),
        news_row("N2"),
        news_row("N3", entities="{not json"),
        news_row("N4")[:7],
    ])
    parsed = parse_news(spark, str(folder))
    good, rejected = parsed.good, parsed.rejected
    rows = {r["news_id"]: r for r in good.collect()}
    assert set(rows) == {"N1", "N2"}
    assert rows["N1"]["title"] == title and rows["N1"]["abstract"] == ""
    bad = {r["line"]: (r["column"], r["reason"]) for r in rejected.collect()}
    assert bad == {3: (7, "title entities are not a JSON list of entities"),
                   4: (None, "expected 8 tab-separated columns, found 7")}


def test_repeated_ids_are_rejected_counted_and_held_to_the_threshold(spark, tmp_path):
    """A repeated impression id or news id: the first line is kept, every later one is a
    rejected row at its own line, counted as a duplicate, and too many of them fail the file."""
    folder = tmp_path / "split"
    write_tsv(folder / "behaviors.tsv", [
        ["1", "U1", "11/11/2019 9:05:58 AM", "N1", "N3-1 N4-0"],
        ["2", "U2", "11/11/2019 9:06:00 AM", "", "N3-0 N4-1"],
        ["1", "U9", "11/11/2019 9:07:00 AM", "N2", "N4-1"],               # id 1 again
        ["3", "U3", "11/11/2019 9:08:00 AM", "", "N3-1"],
        ["1", "U1", "11/11/2019 9:05:58 AM", "N1", "N3-1 N4-0"],          # same line again
    ])
    write_tsv(folder / "news.tsv", [news_row("N1"), news_row("N2"),
                                    news_row("N1", title="Another title")])
    parsed = parse_behaviors(spark, str(folder))
    good, rejected = parsed.good, parsed.rejected
    kept = good.select("impression_id", "user_id").toPandas().sort_values("impression_id")
    assert list(kept["impression_id"]) == [1, 2, 3] and list(kept["user_id"]) == ["U1", "U2", "U3"]
    got = {r["line"]: (r["column"], r["reason"]) for r in rejected.collect()}
    assert set(got) == {3, 5} and all(c == 1 and "duplicate impression id '1'" in reason
                                      for c, reason in got.values())
    check = check_rejected_share(parsed, str(folder / "behaviors.tsv"), max_share=0.5)
    assert (check.lines, check.rejected, check.duplicates) == (5, 2, 2)
    with pytest.raises(RejectedShareExceeded, match=r"behaviors.tsv:3 column 1: duplicate"):
        check_rejected_share(parsed, str(folder / "behaviors.tsv"), max_share=0.1)

    parsed_news = parse_news(spark, str(folder))
    news, news_rejected = parsed_news.good, parsed_news.rejected
    assert {(r["news_id"], r["title"]) for r in news.collect()} == {("N1", "A title"),
                                                                    ("N2", "A title")}
    assert [(r["line"], r["column"]) for r in news_rejected.collect()] == [(3, 1)]


def test_line_numbers_survive_many_blocks(spark, tmp_path):
    """Line numbers stay exact when Spark reads one file as many blocks in many tasks."""
    folder = tmp_path / "split"
    rows = [[str(i), f"U{i}", "11/11/2019 9:05:58 AM", "N1 N2", "N3-1 N4-0"] for i in range(1, 20001)]
    bad_lines = [3, 4097, 12345, 19999, 20000]
    for line in bad_lines:
        rows[line - 1] = ["bad", "U1", "11/11/2019 9:05:58 AM", "N1", "N3-1"]
    write_tsv(folder / "behaviors.tsv", rows)
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "65536")
    try:
        parsed = parse_behaviors(spark, str(folder))
        good, rejected = parsed.good, parsed.rejected
        assert good.rdd.getNumPartitions() > 4
        assert sorted(r["line"] for r in rejected.collect()) == bad_lines
        assert good.count() == 20000 - len(bad_lines)
        assert parsed.counts() == (20000 - len(bad_lines), len(bad_lines), 0)
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)


def test_many_files_parse_in_one_pass_each_checked_and_located(spark, tmp_path):
    """A log of day partitions parsed at once: rows keep their file's index, repeated ids are
    repeats only within a file, a row off its partition's day is rejected at its own file and
    line, and each file gets its own counts and threshold."""
    days = ["2019-11-11", "2019-11-12"]
    folders = [tmp_path / f"date={day}" for day in days]
    write_tsv(folders[0] / "behaviors.tsv", [
        ["1", "U1", "11/11/2019 9:05:58 AM", "N1", "N3-1 N4-0"],
        ["2", "U2", "11/11/2019 9:06:00 AM", "", "N3-0 N4-1"]])
    write_tsv(folders[1] / "behaviors.tsv", [
        ["1", "U1", "11/12/2019 9:05:58 AM", "N1", "N3-1"],                # id 1 again: another file
        ["3", "U3", "11/11/2019 11:00:00 PM", "", "N4-1"],                 # the day before
        ["4", "U4", "11/12/2019 1:00:00 AM", "N3", "N4-0"]])
    parsed = parse_behaviors(spark, [str(f) for f in folders], days=days)
    kept = sorted((r["file_index"], r["impression_id"]) for r in parsed.indexed_good.collect())
    assert kept == [(0, 1), (0, 2), (1, 1), (1, 4)]
    bad = [(r["file"].endswith("date=2019-11-12/behaviors.tsv"), r["line"], r["column"], r["reason"])
           for r in parsed.rejected.collect()]
    assert bad == [(True, 2, 3, "time '11/11/2019 11:00:00 PM' is not on the partition's day "
                                "2019-11-12")]
    uris = [str(f / "behaviors.tsv") for f in folders]
    checks = check_rejected_shares(parsed, uris, max_share=0.5)
    assert [(c.file, c.lines, c.rejected) for c in checks] == [(uris[0], 2, 0), (uris[1], 3, 1)]
    with pytest.raises(RejectedShareExceeded, match=r"date=2019-11-12/behaviors.tsv: 1 of 3 rows"):
        check_rejected_shares(parsed, uris, max_share=0.2)

    write_tsv(folders[0] / "news.tsv", [news_row("N1"), news_row("N1")])
    (folders[1] / "news.tsv").write_text("")
    news = parse_news(spark, [str(f) for f in folders])
    with pytest.raises(RejectedShareExceeded, match=r"date=2019-11-12/news.tsv: the file is empty"):
        check_rejected_shares(news, [str(f / "news.tsv") for f in folders], max_share=0.9)
