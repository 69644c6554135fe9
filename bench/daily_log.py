"""What the benchmarks of the daily run share: their arguments, the synthetic sample written as
a log partitioned by day, and a stage command timed whole (JVM start included)."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCALES = ["tiny", "small", "mind-small"]


def argument_parser(description: str, encoder: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", default="mind-small", choices=SCALES)
    if encoder:
        parser.add_argument("--encoder", default="minilm", choices=["minilm", "use", "e5-small", "hashing"])
    parser.add_argument("--repeats", type=int, default=1)
    return parser


def arguments(description: str, encoder: bool = False) -> argparse.Namespace:
    return argument_parser(description, encoder).parse_args()


def sample(scale: str, name: str = "daily") -> tuple[Path, list[str]]:
    """(the folder bench/data/NAME-SCALE holding the sample's `log`, the log's days),
    generating the sample (seed 0) unless a log of the current layout (a catalogue growing by
    day) is there."""
    data = ROOT / "bench" / "data" / f"{name}-{scale}"
    if not list((data / "log").glob("date=*/news.tsv")):
        subprocess.run([sys.executable, "-m", "synthetic", "--scale", scale,
                        "--out", str(data), "--daily-log"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return data, sorted(p.name[len("date="):] for p in (data / "log").glob("date=*"))


def timed(cmd: list[str]) -> tuple[float, dict]:
    """Seconds a stage command took, and the summary it printed."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout[done.stdout.index("{"):])


def save(name: str, report: dict, figures: dict) -> None:
    """Write `report` to bench/results/NAME.json and `figures` to this benchmark's section
    of BENCHMARKS.md."""
    from bench.record import record

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    record(f"{name}_bench", figures)


SUBMIT = str(ROOT / "spark-submit.sh")


def stage_settings(data: Path, encoder: str) -> list[str]:
    """The `--set` options of every stage run on the sample in `data`."""
    return ["--set", f"paths.log={data / 'log'}", "--set", f"embed.encoder={encoder}",
            "--set", "spark.master=local[2]", "--set", "spark.driver_memory=6g"]


def work_folders(name: str, scale: str, sides: tuple[str, str]) -> dict[str, Path]:
    """An empty `paths.work` per side of a comparison."""
    works = {side: ROOT / "bench" / "data" / f"work-{name}-{scale}-{side}" for side in sides}
    for work in works.values():
        shutil.rmtree(work, ignore_errors=True)
    return works
