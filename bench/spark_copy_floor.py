"""The cost floor of build_features' train rows in Spark: read finished rows, write them again.

    python bench/spark_copy_floor.py IN_PARQUET OUT_DIR [--set key=value ...]
                                     [--dictionary on|off] [--compression snappy|none|zstd]

Starts Spark the way every job does (common.spark.get_spark, master from the config),
reads a Parquet table of feature rows (bench/build_features_bench.py passes the pandas
baseline's output: the same train rows) and writes it with build_features' writer and
row-group size. No parsing, no vector means, no sampling: any implementation of the train
rows in Spark DataFrame operations costs at least this. Prints one JSON line: rows, seconds
(whole process, JVM start included, measured by the caller) and the write alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import storage  # noqa: E402
from common.config import load_config  # noqa: E402
from common.spark import get_spark  # noqa: E402
from jobs.build_features import row_group_bytes, write_parquet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--dictionary", choices=["on", "off"], default="off",
                        help="Parquet dictionary encoding (build_features: off)")
    parser.add_argument("--compression", default="snappy")
    args = parser.parse_args()
    cfg = load_config(overrides=args.overrides)
    spark = get_spark(cfg, "spark_copy_floor")
    spark.conf.set("spark.sql.parquet.compression.codec", args.compression)
    rows = spark.read.parquet(storage.to_uri(args.source))
    count = rows.count()
    dim = len(rows.first()["user_vec"])
    start = time.perf_counter()
    write_parquet(rows, storage.to_uri(args.target), row_group_bytes(count, dim, cfg),
                  dictionary=args.dictionary == "on")
    print(json.dumps({"rows": count, "write_seconds": time.perf_counter() - start,
                      "dictionary": args.dictionary, "compression": args.compression}))


if __name__ == "__main__":
    main()
