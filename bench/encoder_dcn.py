"""Benchmark: the DCN's dev metrics with the default news vectors against `use` projected to 128
(issue #23's measure), on synthetic samples, side by side in one run.

    python -m bench.encoder_dcn [--scales small,few] [--seeds 0,1,2]

For every scale and seed, the pipeline of bench/dcn_quality.py (generate, embed_news,
build_features, train on one rank, evaluate) runs once per vector setting:
- `default`: the configuration's embed settings (conf/default.yaml);
- `use`: `embed.encoder=use`, `embed.text=title`, `embed.postprocess=project`.
Prints, per scale, the mean ± std over the seeds of the DCN's impression AUC and nDCG@10 for
both, and the mean of the per-seed differences (default - use). The synthetic titles are made
of topic words, so these differences say little about real headlines (bench/encoder_probe.py
measures those).
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.dcn_quality import ROOT, mean_std, run_seed
from bench.record import record

VARIANTS = {
    "default": [],
    "use": ["embed.encoder=use", "embed.text=title", "embed.postprocess=project"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="small,few")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", default=str(ROOT / "work" / "encoder_dcn"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    figures = []
    for scale in args.scales.split(","):
        metrics = {name: [] for name in VARIANTS}
        for seed in seeds:
            for name, settings in VARIANTS.items():
                run = argparse.Namespace(scale=scale, encoder=None, set=settings,
                                         work=str(Path(args.work) / name))
                dcn = run_seed(run, seed)[2]["metrics"]["dcn"]
                metrics[name].append(dcn)
                print(f"{scale} seed {seed} {name}: auc {dcn['auc']:.4f}, "
                      f"ndcg@10 {dcn['ndcg@10']:.4f}", flush=True)
        for metric, label in (("auc", "AUC"), ("ndcg@10", "nDCG@10")):
            for name in VARIANTS:
                figures.append((f"{scale}: DCN {label}, {name} vectors (mean ± std, "
                                f"{len(seeds)} seeds)",
                                mean_std([m[metric] for m in metrics[name]])))
            gain = statistics.mean(d[metric] - u[metric]
                                   for d, u in zip(metrics["default"], metrics["use"]))
            figures.append((f"{scale}: DCN {label}, default - use (mean of per-seed differences)",
                            f"{gain:+.4f}"))
    for label, value in figures:
        print(f"{label}: {value}")
    record(f"encoder_dcn ({args.scales})", figures)


if __name__ == "__main__":
    main()
