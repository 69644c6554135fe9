"""Benchmark: model quality with the point-in-time user state against MIND's history-only
convention, on the same synthetic sample, side by side in one run.

    .venv/bin/python -m bench.user_clicks_quality [--scale small] [--encoder use] [--ranks 2]

For each `features.user_clicks` mode (`history_and_clicks`, the default, and `history`):
build_features as of the day after the sample, train the DCN (horovodrun, `--ranks` ranks,
the default training settings), evaluate on the dev day. Prints impression AUC and nDCG@10 of
the DCN and of the cosine baseline for both, and their differences. The news vectors are
computed once and shared. Results: bench/results/user_clicks_quality.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.record import record
from common.config import load_config
from features.news_vectors import has_vectors

ROOT = Path(__file__).resolve().parent.parent
MODES = ("history_and_clicks", "history")


def call(cmd: list[str]) -> str:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["tiny", "small", "mind-small"])
    parser.add_argument("--encoder", default="use", choices=["minilm", "use", "e5-small", "hashing"])
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()

    data = ROOT / "bench" / "data" / args.scale
    if not (data / "MINDsmall_dev" / "behaviors.tsv").exists():
        call([sys.executable, "-m", "synthetic", "--scale", args.scale, "--out", str(data)])
    base = ["--set", f"paths.train={data}/MINDsmall_train", "--set", f"paths.dev={data}/MINDsmall_dev",
            "--set", f"embed.encoder={args.encoder}", "--set", "spark.master=local[2]"]
    submit = str(ROOT / "spark-submit.sh")
    vectors_work = ROOT / "bench" / "data" / f"work-quality-{args.scale}-{args.encoder}-vectors"
    if not has_vectors(load_config(overrides=[a for a in base if a != "--set"]
                                     + [f"paths.work={vectors_work}"])):
        call([submit, "embed_news", *base, "--set", f"paths.work={vectors_work}"])
    results = {}
    for mode in MODES:
        work = ROOT / "bench" / "data" / f"work-quality-{args.scale}-{args.encoder}-{mode}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(vectors_work / "news_vectors", work / "news_vectors")
        settings = [*base, "--set", f"paths.work={work}", "--set", f"features.user_clicks={mode}"]
        call([submit, "build_features", "--as-of", "2019-11-16", *settings])
        venv = Path(sys.executable).parent
        call([str(venv / "horovodrun"), "-np", str(args.ranks), "-H", f"localhost:{args.ranks}",
              "--gloo", sys.executable, "-m", "dcn.train", *settings])
        call([submit, "evaluate", *settings])
        from evaluation.document import current_evaluation
        pointer = current_evaluation(load_config(overrides=[f"paths.work={work}"]))
        doc = json.loads((Path(pointer["path"].replace("file://", "")) / "metrics.json").read_text())
        results[mode] = {s: {m: doc["scorers"][s][m] for m in ("auc", "ndcg@10")}
                         for s in ("dcn", "cosine")}
    print(f"scale {args.scale}, encoder {args.encoder}, {args.ranks} ranks; dev impressions")
    print(f"{'user_clicks':<20}{'dcn AUC':>9}{'dcn nDCG@10':>13}{'cosine AUC':>12}{'cosine nDCG@10':>16}")
    for mode in MODES:
        r = results[mode]
        print(f"{mode:<20}{r['dcn']['auc']:>9.4f}{r['dcn']['ndcg@10']:>13.4f}"
              f"{r['cosine']['auc']:>12.4f}{r['cosine']['ndcg@10']:>16.4f}")
    gain = {m: results[MODES[0]]["dcn"][m] - results[MODES[1]]["dcn"][m] for m in ("auc", "ndcg@10")}
    print(f"dcn difference (default - history): AUC {gain['auc']:+.4f}, nDCG@10 {gain['ndcg@10']:+.4f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "user_clicks_quality.json").write_text(json.dumps({"args": vars(args), "results": results,
                                                              "dcn_difference": gain}, indent=2))
    measures = (("auc", "AUC"), ("ndcg@10", "nDCG@10"))
    figures = [(f"dcn difference (default - history), {label}", gain[metric])
               for metric, label in measures]
    figures += [(f"{mode}: {scorer} {label}", results[mode][scorer][metric]) for mode in MODES
                for scorer in ("dcn", "cosine") for metric, label in measures]
    record("user_clicks_quality", figures)


if __name__ == "__main__":
    main()
