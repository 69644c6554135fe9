"""The command line: python -m synthetic --scale SCALE --out DIR [--seed N] [--daily-log]
(see the package docstring)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from synthetic.generate import generate
from synthetic.scales import SCALES
from synthetic.writer import write_daily_log


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m synthetic",
        description="Write a synthetic MIND-format sample with a planted click model.")
    parser.add_argument("--scale", required=True, choices=sorted(SCALES))
    parser.add_argument("--out", required=True, help="output folder (a sample there is replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--daily-log", action="store_true",
                        help="also write the sample as a log partitioned by day, in OUT/log")
    args = parser.parse_args(argv)
    summary = generate(args.scale, args.out, args.seed)
    if args.daily_log:
        summary["daily_log"] = write_daily_log(args.out, os.path.join(args.out, "log"))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
