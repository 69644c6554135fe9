"""Reading MIND files (behaviors.tsv, news.tsv) exactly and defensively, in Spark.

Every line is parsed with DataFrame expressions (no Python on the rows). A line that breaks
the format becomes a rejected row naming its file, its 1-based line number, the 1-based column
at fault and the reason; the job that reads the files fails when the rejected share of a file
passes `mind.max_rejected_share`.

Line numbers on a distributed read: Spark splits a file into blocks read by different tasks,
and every line belongs to the block where it starts. Within a task, rows keep file order and
`monotonically_increasing_id()` increases by one per row, so a line's number is the count of
lines in earlier blocks of its file plus its offset within its block. The per-block counts are
a tiny table (one row per block), so this costs one extra pass over the text and no shuffle of
the lines themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Sequence

from pyspark.sql import DataFrame, SparkSession, Window, functions as F

from common import columns as C
from common import schemas, storage
from common.errors import UserInputError

BEHAVIORS_FILE = "behaviors.tsv"
NEWS_FILE = "news.tsv"
BEHAVIORS_COLUMNS = 5
NEWS_COLUMNS = 8
TIME_FORMAT = "M/d/yyyy h:mm:ss a"
NEWS_ID_PATTERN = r"^N[0-9]+$"
USER_ID_PATTERN = r"^U[0-9]+$"
IMPRESSION_ID_PATTERN = r"^[0-9]{1,18}$"
CANDIDATE_PATTERN = r"^N[0-9]+-[01]$"
# The position of a row's file in the list of files one parse read: one parse (one cached pass,
# one count job) covers every file of a log, however many days it has.
FILE_INDEX = "file_index"
ENTITY_SCHEMA = ("array<struct<Label:string,Type:string,WikidataId:string,Confidence:double,"
                 "OccurrenceOffsets:array<int>,SurfaceForms:array<string>>>")


class RejectedShareExceeded(UserInputError):
    """Too many malformed rows in an input file."""


def read_lines(spark: SparkSession, uris: str | Sequence[str]) -> DataFrame:
    """Lines of text files as (file_index, file, block, row_id, text, raw_ok): `file_index` is
    the file's position in `uris`; `raw_ok` is false for a line that is not valid UTF-8 (its
    text then holds replacement characters). `block` and `row_id` locate the line for
    `with_line_numbers`."""
    uris = [uris] if isinstance(uris, str) else list(uris)
    value_bytes = F.col("value").cast("binary")
    return reduce(DataFrame.unionByName, [spark.read.text(uri).select(
        F.lit(index).alias(FILE_INDEX),
        F.input_file_name().alias("file"),
        F.input_file_block_start().alias("block"),
        F.monotonically_increasing_id().alias("row_id"),
        F.regexp_replace(F.decode(value_bytes, "UTF-8"), "\r$", "").alias("text"),
        (F.encode(F.decode(value_bytes, "UTF-8"), "UTF-8") == value_bytes).alias("raw_ok"))
        for index, uri in enumerate(uris)])


def with_line_numbers(rows: DataFrame, all_lines: DataFrame) -> DataFrame:
    """Add the 1-based `line` to `rows` (a subset of `all_lines`, both carrying file, block,
    row_id from one cached read of `read_lines`)."""
    blocks = (all_lines.groupBy("file", "block")
              .agg(F.count("*").alias("n"), F.min("row_id").alias("first_row_id")))
    in_file = Window.partitionBy("file").orderBy("block")
    blocks = blocks.withColumn("lines_before", F.sum("n").over(in_file) - F.col("n")).drop("n")
    return (rows.join(F.broadcast(blocks), ["file", "block"])
            .withColumn("line", F.col("lines_before") + F.col("row_id") - F.col("first_row_id") + 1)
            .drop("lines_before", "first_row_id"))


def read_numbered_lines(spark: SparkSession, uri: str) -> DataFrame:
    """Every line of a text file with its 1-based line number: (file, line, text, raw_ok)."""
    lines = read_lines(spark, uri).cache()
    return with_line_numbers(lines, lines).select("file", "line", "text", "raw_ok")


def _tokens(column: F.Column) -> F.Column:
    """Space-separated tokens of a field, with empty tokens (an empty field) dropped."""
    return F.filter(F.split(column, " "), lambda t: t != "")


def _first_bad(tokens: F.Column, pattern: str) -> F.Column:
    return F.element_at(F.filter(tokens, lambda t: ~t.rlike(pattern)), 1)


def _reject_reason(checks: list[tuple[F.Column, int | None, F.Column]]) -> F.Column:
    """The first failing check as struct(column, reason), or null when every check passes."""
    result = F.lit(None).cast("struct<column:int,reason:string>")
    for failed, column, reason in reversed(checks):
        result = F.when(failed, F.struct(F.lit(column).cast("int").alias("column"),
                                         reason.alias("reason"))).otherwise(result)
    return result


def _field_count_check(n_columns: int) -> tuple[F.Column, None, F.Column]:
    return (F.size("fields") != n_columns, None,
            F.format_string(f"expected {n_columns} tab-separated columns, found %d",
                            F.size("fields")))


def _split_rows(lines: DataFrame, checks, parsed_columns: list[F.Column],
                unique: tuple[str, str] | None = None):
    """Check every line once, cache the result, and derive the good rows and the rejected rows
    (with line numbers, computed only for the rejected ones) from that cache.

    `unique` = (column, what): a well-formed row whose id repeats one on an earlier line of the
    file is rejected as well (the first one is kept), so repeated ids are counted, located and
    held to `mind.max_rejected_share` like any other malformed row."""
    checked = (lines.withColumn("fields", F.split("text", "\t", -1))
               .withColumn("_reject", _reject_reason(checks)))
    checked = checked.select(
        FILE_INDEX, "file", "block", "row_id", "_reject",
        F.when(F.col("_reject").isNotNull(), F.col("text")).alias("text"),
        *[F.when(F.col("_reject").isNull(), c).alias(name) for c, name in parsed_columns],
    )
    if unique is not None:
        checked = _reject_repeated_ids(checked.cache(), *unique)
    checked = checked.cache()
    good = checked.where(F.col("_reject").isNull()).select(
        FILE_INDEX, *[name for _, name in parsed_columns])
    rejected = with_line_numbers(checked.where(F.col("_reject").isNotNull()), checked).select(
        FILE_INDEX, "file", "line", F.col("_reject.column").alias("column"),
        F.col("_reject.reason").alias("reason"), "text")
    return ParsedFile(good, rejected, checked)


@dataclass
class ParsedFile:
    """Parsed files (one or many, read in one pass): their good rows and rejected rows, both
    with each row's FILE_INDEX, and the cached checked lines both come from."""
    indexed_good: DataFrame
    indexed_rejected: DataFrame
    checked: DataFrame

    @property
    def good(self) -> DataFrame:
        return self.indexed_good.drop(FILE_INDEX)

    @property
    def rejected(self) -> DataFrame:
        """schemas.REJECTED_ROWS, with line numbers."""
        return schemas.conform(self.indexed_rejected, schemas.REJECTED_ROWS)

    def counts_by_file(self) -> dict[int, tuple[int, int, int]]:
        """FILE_INDEX -> (good rows, rejected rows, rejected as repeated ids), in one pass over
        the cached checked lines (no line numbers needed to count); a file without lines is
        absent."""
        reject = F.col("_reject")
        stats = self.checked.groupBy(FILE_INDEX).agg(
            F.count(F.when(reject.isNull(), 1)).alias("good"), F.count(reject).alias("rejected"),
            F.count(F.when(reject["reason"].startswith(DUPLICATE_REASON + " "), 1))
            .alias("duplicates")).collect()
        return {row[FILE_INDEX]: (int(row["good"]), int(row["rejected"]), int(row["duplicates"]))
                for row in stats}

    def counts(self) -> tuple[int, int, int]:
        """`counts_by_file` summed over the files."""
        per_file = self.counts_by_file().values()
        return tuple(sum(c[i] for c in per_file) for i in range(3))


DUPLICATE_REASON = "duplicate"


def _reject_repeated_ids(checked: DataFrame, column: str, what: str) -> DataFrame:
    """Mark every good row whose `column` value appeared on an earlier line of its file.
    One aggregation over the ids; the rows are rejoined only when an id repeats."""
    position = F.struct("block", "row_id")
    good = checked.where(F.col("_reject").isNull())
    repeated = (good.groupBy("file", column)
                .agg(F.min(position).alias("_first"), F.count("*").alias("_n"))
                .where(F.col("_n") > 1).drop("_n").cache())
    if repeated.isEmpty():
        repeated.unpersist()
        return checked
    reason = F.struct(F.lit(1).alias("column"), F.format_string(
        f"{DUPLICATE_REASON} {what} '%s': an earlier line of this file has it (the first is kept)",
        F.col(column).cast("string")).alias("reason"))
    marked = (checked.join(F.broadcast(repeated), ["file", column], "left")
              .withColumn("_reject", F.when(F.col("_reject").isNull() & F.col("_first").isNotNull()
                                            & (position != F.col("_first")), reason)
                          .otherwise(F.col("_reject")))
              .drop("_first"))
    return marked.select(*checked.columns)


def _file_uris(folders: str | Sequence[str], name: str) -> list[str]:
    folders = [folders] if isinstance(folders, str) else folders
    return [f"{folder.rstrip('/')}/{name}" for folder in folders]


def parse_behaviors(spark: SparkSession, folders: str | Sequence[str],
                    days: str | Sequence[str] | None = None) -> ParsedFile:
    """Parse `folder/behaviors.tsv` of each of `folders` into good rows and rejected rows
    (ParsedFile), in one pass.

    Good rows: impression_id, user_id, time (timestamp, UTC), history (news ids, oldest first;
    empty for an empty history), candidates (array of struct(news_id, label)) in listed order.
    With `days` (YYYY-MM-DD, one per folder: each file is one day's partition of a log), a row
    whose time falls on another day than its file's is rejected.
    """
    days = [days] if isinstance(days, str) else days
    lines = read_lines(spark, _file_uris(folders, BEHAVIORS_FILE))
    file_day = (None if days is None else
                F.element_at(F.array(*[F.lit(day) for day in days]), F.col(FILE_INDEX) + 1))
    field = lambda i: F.col("fields")[i]  # noqa: E731
    history, impressions = _tokens(field(3)), _tokens(field(4))
    parsed_time = F.to_timestamp(field(2), TIME_FORMAT)
    checks = [
        (~F.col("raw_ok"), None, F.lit("line is not valid UTF-8")),
        _field_count_check(BEHAVIORS_COLUMNS),
        (~field(0).rlike(IMPRESSION_ID_PATTERN), 1,
         F.format_string("impression id '%s' is not an integer", field(0))),
        (~field(1).rlike(USER_ID_PATTERN), 2,
         F.format_string("user id '%s' is not U followed by digits", field(1))),
        (parsed_time.isNull(), 3,
         F.format_string("time '%s' is not M/D/YYYY h:mm:ss AM|PM", field(2))),
        (F.exists(history, lambda t: ~t.rlike(NEWS_ID_PATTERN)), 4,
         F.format_string("history token '%s' is not a news id",
                         _first_bad(history, NEWS_ID_PATTERN))),
        *([] if file_day is None else [
            (F.to_date(parsed_time) != file_day.cast("date"), 3,
             F.format_string("time '%s' is not on the partition's day %s", field(2), file_day))]),
        (F.size(impressions) == 0, 5, F.lit("impressions field is empty")),
        (F.exists(impressions, lambda t: ~t.rlike(CANDIDATE_PATTERN)), 5,
         F.format_string("impression token '%s' is not NEWSID-1 or NEWSID-0",
                         _first_bad(impressions, CANDIDATE_PATTERN))),
    ]
    candidates = F.transform(impressions, lambda t: F.struct(
        F.substring_index(t, "-", 1).alias(C.NEWS_ID),
        F.substring_index(t, "-", -1).cast("int").alias(C.LABEL)))
    return _split_rows(lines, checks, [
        (field(0).cast("long"), C.IMPRESSION_ID), (field(1), C.USER_ID), (parsed_time, C.TIME),
        (history, "history"), (candidates, "candidates")],
        unique=(C.IMPRESSION_ID, "impression id"))


def parse_news(spark: SparkSession, folders: str | Sequence[str]) -> ParsedFile:
    """Parse `folder/news.tsv` of each of `folders` into good rows and rejected rows
    (ParsedFile), in one pass.

    Good rows: news_id, category, subcategory, title, abstract.
    """
    lines = read_lines(spark, _file_uris(folders, NEWS_FILE))
    field = lambda i: F.col("fields")[i]  # noqa: E731
    checks = [
        (~F.col("raw_ok"), None, F.lit("line is not valid UTF-8")),
        _field_count_check(NEWS_COLUMNS),
        (~field(0).rlike(NEWS_ID_PATTERN), 1,
         F.format_string("news id '%s' is not N followed by digits", field(0))),
        (F.trim(field(1)) == "", 2, F.lit("category is empty")),
        (F.trim(field(3)) == "", 4, F.lit("title is empty")),
        (_bad_entities(field(6)), 7, F.lit("title entities are not a JSON list of entities")),
        (_bad_entities(field(7)), 8, F.lit("abstract entities are not a JSON list of entities")),
    ]
    return _split_rows(lines, checks, [
        (field(0), C.NEWS_ID), (field(1), "category"), (field(2), "subcategory"),
        (field(3), "title"), (field(4), "abstract")], unique=(C.NEWS_ID, "news id"))


def _bad_entities(column: F.Column) -> F.Column:
    """True for a non-empty entity field that is not a JSON list of entity objects."""
    parsed = F.from_json(column, ENTITY_SCHEMA)
    return (F.trim(column) != "") & parsed.isNull()


@dataclass(frozen=True)
class FileCheck:
    file: str
    lines: int
    rejected: int
    duplicates: int = 0     # rejected because their id repeats an earlier line's

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.lines if self.lines else 0.0


def check_rejected_shares(parsed: ParsedFile, uris: Sequence[str],
                          max_share: float) -> list[FileCheck]:
    """Count each file's rows (`uris` in the order the parse read them) and fail with examples
    on the first whose rejected share passes `max_share`."""
    counts = parsed.counts_by_file()
    checks = []
    for index, uri in enumerate(uris):
        n_good, n_rejected, duplicates = counts.get(index, (0, 0, 0))
        check = FileCheck(uri, n_good + n_rejected, n_rejected, duplicates)
        if check.lines == 0 and storage.is_dir(uri):
            raise RejectedShareExceeded(f"{uri} is a directory: expected the file itself there")
        if check.lines == 0:
            raise RejectedShareExceeded(f"{uri}: the file is empty")
        if check.rejected_share > max_share:
            examples = (parsed.indexed_rejected.where(F.col(FILE_INDEX) == index)
                        .orderBy("line").limit(5).collect())
            detail = "\n".join(
                f"  {uri}:{r['line']}" + (f" column {r['column']}" if r['column'] else "")
                + f": {r['reason']}" for r in examples)
            raise RejectedShareExceeded(
                f"{uri}: {n_rejected} of {check.lines} rows rejected ({check.rejected_share:.2%} "
                f"> mind.max_rejected_share {max_share:.2%}); first ones:\n" + detail)
        checks.append(check)
    return checks


def check_rejected_share(parsed: ParsedFile, uri: str, max_share: float) -> FileCheck:
    """`check_rejected_shares` of a parse of one file."""
    return check_rejected_shares(parsed, [uri], max_share)[0]
