"""How often a one-pass Petastorm read ends early, with and without dcn.data's guard.

    .venv/bin/python -m bench.petastorm_pass_race [--passes 300] [--switch-interval 1e-6]

petastorm 0.13.1's ThreadPool ends a pass when `all_workers_done()` and then
`ventilator.completed()` hold; if the ventilator thread ventilates the rest of the row
groups between those two reads, the pass ends early and silently (dcn.data._pass_finished).
This script reads rank 1 of 2 of a small table (row groups of 1500 and 40 rows, rank 1
holding 4 x 40 rows, the shape of tests/test_train.py's uneven-shards test) `--passes` times
with each end-of-pass rule, alternating, with Python's thread switch interval lowered so the
switch lands between the two reads often enough to count. Prints the short passes of each.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.record import record
from dcn import data
from dcn import shards

GROUPS = [1500, 40] * 4
DIM = 8


class _PetastormEndOfPass(data._ArrowResults):
    """dcn.data's Arrow conversion with petastorm's own end-of-pass rule (no guard)."""

    def read_next(self, workers_pool, schema, ngram):
        from petastorm.workers_pool import EmptyResultError

        try:
            result = workers_pool.get_results()
        except EmptyResultError:
            raise StopIteration from None
        return schema.make_namedtuple(**{name: data._column_to_numpy(name, result.column(name))
                                         for name in result.column_names})


def write_table(folder: Path) -> str:
    rng = np.random.default_rng(0)
    path = folder / "part-0.parquet"
    vectors = pa.list_(pa.float32())
    with pq.ParquetWriter(path, pa.schema([("user_vec", vectors), ("news_vec", vectors),
                                            ("label", pa.int32())])) as writer:
        for rows in GROUPS:
            writer.write_table(pa.table({
                "user_vec": pa.array(list(rng.normal(size=(rows, DIM)).astype(np.float32)),
                                     vectors),
                "news_vec": pa.array(list(rng.normal(size=(rows, DIM)).astype(np.float32)),
                                     vectors),
                "label": pa.array(rng.integers(0, 2, rows), pa.int32())}))
    return str(folder)


def rows_of_one_pass(uri: str, guarded: bool) -> int:
    reader = data.make_reader(uri, 1, 2, threads=1, endless=False, shuffle=True)
    if not guarded:
        reader._results_queue_reader = _PetastormEndOfPass()
    try:
        return sum(len(group[2]) for group in data._row_groups(reader, (DIM, DIM)))
    finally:
        reader.stop()
        reader.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=300, help="passes per rule")
    parser.add_argument("--switch-interval", type=float, default=1e-6,
                        help="sys.setswitchinterval while reading (Python's default: 0.005)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        uri = write_table(Path(folder))
        expected = shards.shard_rows(uri, 1, 2)
        counts = {"petastorm's rule": collections.Counter(),
                  "dcn.data's guard": collections.Counter()}
        default_interval = sys.getswitchinterval()
        sys.setswitchinterval(args.switch_interval)
        try:
            for _ in range(args.passes):
                counts["petastorm's rule"][rows_of_one_pass(uri, guarded=False)] += 1
                counts["dcn.data's guard"][rows_of_one_pass(uri, guarded=True)] += 1
        finally:
            sys.setswitchinterval(default_interval)
    print(f"one-pass reads of a {expected}-row shard, {args.passes} per rule, "
          f"switch interval {args.switch_interval:g} s")
    figures = {"rows of the shard": expected, "passes per rule": args.passes}
    for rule, seen in counts.items():
        short = sum(n for rows, n in seen.items() if rows != expected)
        print(f"  {rule:<18} short passes {short:>4} of {args.passes}   rows seen: "
              + ", ".join(f"{rows} x{n}" for rows, n in sorted(seen.items())))
        figures.update({f"{rule}: share of passes ending short": short / args.passes,
                        f"{rule}: passes ending short": short})
    record("petastorm_pass_race", figures)


if __name__ == "__main__":
    main()
