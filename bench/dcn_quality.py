"""Does the DCN win? Its dev metrics against the baselines and the reference ranker, over
generator seeds, and an ablation of its side features.

    .venv/bin/python -m bench.dcn_quality [--scale small] [--seeds 0,1,2] [--encoder NAME]
                                          [--ablation-seed 0] [--work work/quality]
                                          [--set KEY=VALUE ...]

For each seed: generate the synthetic MIND sample (python -m synthetic), run embed_news,
build_features --as-of 2019-11-16, train (one rank) and evaluate through ./spark-submit.sh,
then rank the same dev impressions with bench/quality_bounds.py's reference ranker
`history_topic_counts_plus_popularity` (it knows every news' true topic and latent
popularity). Prints the mean ± std over the seeds of impression AUC and nDCG@10 for the DCN,
the reference ranker and the best baseline, and whether the DCN matches the reference.

On `--ablation-seed`'s features, the DCN is trained again with each side-feature set
(vectors only; + dot; the low-rank matrix cross instead; + category; + news_stats
(popularity and age); + topic (user_vec . the category's mean vector); all) and each row gives
AUC, nDCG@10 and the dev log loss. Results: bench/results/dcn_quality_<scale>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.quality_bounds import reference_metrics
from bench.record import record

ROOT = Path(__file__).resolve().parent.parent
RUN_DATE = "2019-11-16"
REFERENCE = "history_topic_counts_plus_popularity"
# name -> (model.features, other settings). The low-rank matrix cross (DCN-V2) is the other
# way to let the model express u . v: x0 * (W x) holds every bilinear term u_i W_ij n_j.
ABLATION = {
    "vectors only": ([], []),
    "+ u.v": (["dot"], []),
    "matrix cross (rank 32)": ([], ["model.cross_kind=matrix", "model.cross_rank=32"]),
    "+ category": (["category"], []),
    "+ popularity and age": (["news_stats"], []),
    "+ topic affinity": (["topic"], []),
    "all": (["user_stats", "news_stats", "category", "dot", "topic"], []),
}
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")


def job(name: str, settings: list[str], *options: str) -> None:
    done = subprocess.run([str(ROOT / "spark-submit.sh"), name, *options, *settings], cwd=ROOT,
                          env=ENV, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def train(settings: list[str], features: list[str] | None = None,
          others: tuple[str, ...] = ()) -> None:
    extra = ["--set", f"model.features={json.dumps(features)}"] if features is not None else []
    for item in others:
        extra += ["--set", item]
    done = subprocess.run([sys.executable, "-m", "dcn.train", "--force", *settings, *extra],
                          cwd=ROOT, env=dict(ENV, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True)
    if done.returncode:
        sys.exit(f"train failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def evaluation(work: Path) -> dict:
    from common.config import load_config
    from evaluation.document import current_evaluation
    pointer = current_evaluation(load_config(overrides=[f"paths.work={work}"]))
    return json.loads((Path(pointer["path"].replace("file://", "")) / "metrics.json").read_text())


def run_seed(args, seed: int) -> tuple[list[str], Path, dict]:
    data = ROOT / "data" / f"quality-{args.scale}-{seed}"
    work = Path(args.work) / f"{args.scale}-{seed}"
    if not (data / "MINDsmall_dev" / "behaviors.tsv").exists():
        subprocess.run([sys.executable, "-m", "synthetic", "--scale", args.scale,
                        "--out", str(data), "--seed", str(seed)], cwd=ROOT, check=True)
    settings = ["--set", f"embed.encoder={args.encoder}"] if args.encoder else []
    for key, value in (("train", data / "MINDsmall_train"), ("dev", data / "MINDsmall_dev"),
                       ("ground_truth", data / "ground_truth"), ("work", work)):
        settings += ["--set", f"paths.{key}={value}"]
    for item in args.set:
        settings += ["--set", item]
    job("embed_news", settings)
    job("build_features", settings, "--as-of", RUN_DATE)
    train(settings)
    job("evaluate", settings)
    doc = evaluation(work)
    reference = reference_metrics(data, args.scale, seed)[REFERENCE]
    return settings, work, {"metrics": doc["scorers"], "reference": reference,
                            "calibration": doc.get("calibration")}


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--encoder", default=None, help="default: the configuration's")
    parser.add_argument("--ablation-seed", type=int, default=0)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--work", default=str(ROOT / "work" / "quality"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every job (repeatable), as spark-submit.sh takes it")
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    results, settings_of = {}, {}
    for seed in seeds:
        settings_of[seed], _, results[seed] = run_seed(args, seed)
        print(f"seed {seed}: dcn auc {results[seed]['metrics']['dcn']['auc']:.4f}, "
              f"reference auc {results[seed]['reference']['auc']:.4f}", flush=True)

    baselines = [b for b in results[seeds[0]]["metrics"] if b not in ("dcn", "oracle")]
    print(f"\n{args.scale} sample, {len(seeds)} seed(s), encoder {args.encoder}: mean ± std")
    print(f"{'ranker':<40}{'auc':>18}{'ndcg@10':>18}")
    rows = {"dcn": [results[s]["metrics"]["dcn"] for s in seeds],
            REFERENCE: [results[s]["reference"] for s in seeds]}
    for b in baselines:
        rows[b] = [results[s]["metrics"][b] for s in seeds]
    for name, values in rows.items():
        print(f"{name:<40}{mean_std([v['auc'] for v in values]):>18}"
              f"{mean_std([v['ndcg@10'] for v in values]):>18}")
    wins = {m: statistics.mean(v[m] for v in rows["dcn"]) >= statistics.mean(v[m] for v in rows[REFERENCE])
            for m in ("auc", "ndcg@10")}
    best = max(baselines, key=lambda b: statistics.mean(v["auc"] for v in rows[b]))
    print(f"dcn matches the reference ranker: auc {wins['auc']}, ndcg@10 {wins['ndcg@10']}; "
          f"best baseline by auc: {best}")

    ablation = {}
    if not args.no_ablation:
        seed = args.ablation_seed if args.ablation_seed in seeds else seeds[0]
        settings = settings_of[seed]
        work = Path(args.work) / f"{args.scale}-{seed}"
        print(f"\nablation on seed {seed}:")
        print(f"{'features':<24}{'auc':>9}{'ndcg@10':>9}{'log loss':>10}")
        for name, (features, others) in ABLATION.items():
            train(settings, features, others)
            job("evaluate", settings)
            doc = evaluation(work)
            dcn = doc["scorers"]["dcn"]
            loss = (doc.get("calibration") or {}).get("log_loss")
            ablation[name] = {"features": features, "settings": others,
                              "auc": dcn["auc"], "ndcg@10": dcn["ndcg@10"],
                              "log_loss": loss}
            print(f"{name:<24}{dcn['auc']:9.4f}{dcn['ndcg@10']:9.4f}"
                  f"{loss if loss is not None else float('nan'):10.4f}", flush=True)
    out = ROOT / "bench" / "results" / f"dcn_quality_{args.scale}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"scale": args.scale, "seeds": seeds, "encoder": args.encoder,
                               "settings": args.set,
                               "per_seed": results, "ablation": ablation}, indent=2, default=str))
    print(f"saved {out.relative_to(ROOT)}")
    measures = (("auc", "AUC"), ("ndcg@10", "nDCG@10"))
    figures = [(f"{name}, {label} (mean ± std over the seeds)",
                mean_std([v[metric] for v in values]))
               for name, values in rows.items() for metric, label in measures]
    figures += [(f"dcn matches the reference ranker, {metric}", wins[metric]) for metric in wins]
    figures += [(f"ablation: {name}, {label}", result[metric]) for name, result in ablation.items()
                for metric, label in (*measures, ("log_loss", "log loss"))]
    record("dcn_quality", figures)


if __name__ == "__main__":
    main()
