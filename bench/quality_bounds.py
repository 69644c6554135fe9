"""How much of the best-baseline-to-oracle gap can any model fed the user's history close?

    .venv/bin/python -m bench.quality_bounds [--data data/sample-small] [--scale small]
                                             [--seed 0] [--work work/demo-small]

The oracle of jobs.evaluate ranks each dev impression by the planted click probability, which
depends on the user's latent topic interest theta_u and the news' latent popularity (see
the synthetic package). A model only sees the news the user clicked before (on the dev day,
the history string of behaviors.tsv: about 30 clicks drawn from theta_u) and title vectors,
which carry the topic but not the popularity. This script ranks the same dev impressions with
reference scorers that know more than any model can learn from those inputs:

- `oracle`: the planted probability (ground_truth/dev.tsv), as in jobs.evaluate.
- `oracle_without_popularity`: AFFINITY_WEIGHT * theta_u[topic(n)], the planted interest term
  alone (needs the latent theta_u).
- `history_topic_counts`: log(0.5 + the number of the user's history clicks in the candidate's
  true topic), the topic read from news.tsv's category column. It knows every news' topic
  exactly, where a model must infer it from a title vector; what it cannot know is theta_u
  beyond what the history shows.
- `history_topic_counts_plus_popularity`: the above plus POPULARITY_WEIGHT * log(latent
  popularity): an upper reference for a model given the history and perfect popularity.

and prints their per-impression AUC, MRR, nDCG@5, nDCG@10 (dcn.metrics, MIND's definitions)
beside the current evaluation run's scorers (`--work`: the paths.work of a run of
jobs.evaluate on the same sample), with the share of the best-baseline-to-oracle gap each
closes. The latent state is rebuilt from the generator's seeded streams (the sample must come
from `python -m synthetic --scale SCALE --seed SEED`); the script checks that the
rebuilt topics match news.tsv. Results: bench/results/quality_bounds.json.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.record import record
from dcn.metrics import impression_metrics

from synthetic.population import AFFINITY_WEIGHT, POPULARITY_WEIGHT, make_news, make_users
from synthetic.sampling import seeded_streams
from synthetic.scales import SCALES
from synthetic.topics import TOPICS

ROOT = Path(__file__).resolve().parent.parent

METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")


def read_news_topics(folder: Path) -> dict[str, str]:
    """news id -> category, from both splits' news.tsv."""
    topics = {}
    for split in ("MINDsmall_train", "MINDsmall_dev"):
        with open(folder / split / "news.tsv", encoding="utf-8") as lines:
            for line in lines:
                fields = line.split("\t", 2)
                topics[fields[0]] = fields[1]
    return topics


def read_truth(path: Path) -> dict[str, dict[str, float]]:
    truth: dict[str, dict[str, float]] = defaultdict(dict)
    with open(path, encoding="utf-8") as lines:
        next(lines)
        for line in lines:
            impression, news, probability = line.rstrip("\n").split("\t")
            truth[impression][news] = float(probability)
    return truth


def latent_state(scale: str, seed: int, categories: dict[str, str]):
    """(news id -> (topic index, log popularity), user id -> theta) rebuilt from the seed."""
    size = SCALES[scale]
    streams = seeded_streams(seed)
    news = make_news(size.news, streams["news"])
    users = make_users(size.users, streams["users"])
    by_news = {nid: (int(topic), float(np.log(pop)))
               for nid, topic, pop in zip(news.ids, news.topic, news.popularity)}
    mismatched = [nid for nid, category in categories.items()
                  if nid not in by_news or TOPICS[by_news[nid][0]].name != category]
    if mismatched:
        raise SystemExit(f"the sample was not generated with --scale {scale} --seed {seed}: "
                         f"{len(mismatched)} news (e.g. {mismatched[0]}) do not match")
    return by_news, dict(zip(users.ids, users.interest))


def reference_metrics(folder: Path, scale: str, seed: int) -> dict[str, dict[str, float]]:
    categories = read_news_topics(folder)
    by_news, theta = latent_state(scale, seed, categories)
    truth = read_truth(folder / "ground_truth" / "dev.tsv")
    sums: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    with open(folder / "MINDsmall_dev" / "behaviors.tsv", encoding="utf-8") as lines:
        for line in lines:
            impression, user, _time, history, shown = line.rstrip("\n").split("\t")
            counts = np.zeros(len(TOPICS))
            for nid in history.split():
                counts[by_news[nid][0]] += 1
            pairs = [token.rsplit("-", 1) for token in shown.split()]
            labels = np.array([int(label) for _, label in pairs])
            topic = np.array([by_news[nid][0] for nid, _ in pairs])
            log_pop = np.array([by_news[nid][1] for nid, _ in pairs])
            scores = {
                "oracle": np.array([truth[impression][nid] for nid, _ in pairs]),
                "oracle_without_popularity": AFFINITY_WEIGHT * theta[user][topic],
                "history_topic_counts": np.log(0.5 + counts[topic]),
                "history_topic_counts_plus_popularity":
                    np.log(0.5 + counts[topic]) + POPULARITY_WEIGHT * log_pop,
            }
            for name, score in scores.items():
                for metric, value in impression_metrics(labels, score).items():
                    sums[name][metric].append(value)
    return {name: {metric: float(np.mean(values[metric])) for metric in METRICS}
            for name, values in sums.items()}


def evaluation_metrics(work: str) -> dict[str, dict[str, float]]:
    from common.config import load_config
    from evaluation.document import current_evaluation

    summary = current_evaluation(load_config(overrides=[f"paths.work={work}"]))["summary"]
    return {name: {metric: values[metric] for metric in METRICS}
            for name, values in summary["metrics"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "data" / "sample-small"))
    parser.add_argument("--scale", default="small", choices=sorted(SCALES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="paths.work of a jobs.evaluate run on this sample")
    args = parser.parse_args()

    table = reference_metrics(Path(args.data), args.scale, args.seed)
    evaluated = evaluation_metrics(args.work) if args.work else {}
    for name, values in evaluated.items():
        table.setdefault(name, values)
    baselines = [b for b in ("random", "popularity", "cosine") if b in table]
    best = {m: max((table[b][m] for b in baselines), default=None) for m in METRICS}
    oracle = table["oracle"]

    def gap(name: str, metric: str) -> str:
        if best[metric] is None or oracle[metric] == best[metric]:
            return ""
        return f"{(table[name][metric] - best[metric]) / (oracle[metric] - best[metric]):7.1%}"

    print(f"dev impressions of {args.data} (per-impression means; 'gap' = share of the "
          f"best-baseline-to-oracle gap closed)")
    print(f"{'scorer':<38}" + "".join(f"{m:>9}" for m in METRICS) + f"{'gap auc':>10}{'gap nDCG@10':>13}")
    order = sorted(table, key=lambda name: table[name]["auc"])
    for name in order:
        print(f"{name:<38}" + "".join(f"{table[name][m]:9.4f}" for m in METRICS)
              + f"{gap(name, 'auc'):>10}{gap(name, 'ndcg@10'):>13}")
    out = ROOT / "bench" / "results" / "quality_bounds.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": args.data, "scale": args.scale, "seed": args.seed,
                               "work": args.work, "metrics": table}, indent=2))
    print(f"saved {out.relative_to(ROOT)}")
    record("quality_bounds", [
        (f"{name}, {label}", value) for name in order for label, value in (
            ("AUC", table[name]["auc"]), ("nDCG@10", table[name]["ndcg@10"]),
            ("share of the best-baseline-to-oracle gap closed, AUC",
             gap(name, "auc").strip() or None),
            ("the same, nDCG@10", gap(name, "ndcg@10").strip() or None))])


if __name__ == "__main__":
    main()
