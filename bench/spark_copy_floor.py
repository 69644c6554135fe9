"""The cost floor of build_features' train rows in Spark: read finished rows, write them again.

    python -m bench.spark_copy_floor OUT_DIR IN_PARQUET [IN_PARQUET ...] [--set key=value ...]
                                     [--dictionary on|off] [--compression snappy|none|zstd]

Starts Spark the way every job does (common.spark.get_spark, master from the config),
reads Parquet tables of feature rows (bench/build_features_bench.py passes the pandas
baseline's outputs: the same train and dev rows) and writes each with build_features' writer
and row-group size, to OUT_DIR/0, OUT_DIR/1, ... No parsing, no vector means, no sampling: any implementation of the train
rows in Spark DataFrame operations costs at least this. Prints one JSON line: rows, seconds
(whole process, JVM start included, measured by the caller) and the write alone.
"""
from __future__ import annotations

import argparse
import json
import time

from bench.record import record
from common import packed_vectors, storage
from common.config import load_config
from common.spark import get_spark
from features.tables import row_group_bytes, write_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("sources", nargs="+")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--dictionary", choices=["on", "off"], default="off",
                        help="Parquet dictionary encoding (build_features: off)")
    parser.add_argument("--compression", default="snappy")
    args = parser.parse_args()
    cfg = load_config(overrides=args.overrides)
    spark = get_spark(cfg, "spark_copy_floor")
    spark.conf.set("spark.sql.parquet.compression.codec", args.compression)
    total, seconds = 0, 0.0
    for number, source in enumerate(args.sources):
        rows = spark.read.parquet(storage.to_uri(source))
        count = rows.count()
        dim = packed_vectors.width(rows.first()["user_vec"])
        start = time.perf_counter()
        write_parquet(rows, storage.to_uri(f"{args.target}/{number}"),
                      row_group_bytes(count, dim, cfg), dictionary=args.dictionary == "on")
        seconds += time.perf_counter() - start
        total += count
    print(json.dumps({"rows": total, "write_seconds": seconds,
                      "dictionary": args.dictionary, "compression": args.compression}))
    record("spark_copy_floor", {"rows written per second (the write alone)": total / seconds,
                                "rows": total, "write seconds": seconds})


if __name__ == "__main__":
    main()
