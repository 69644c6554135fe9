"""Print a readable summary of the current outputs under `paths.work`.

    python -m jobs.show_runs [--config FILE] [--set key=value ...]
"""
from __future__ import annotations

import sys

from common import outputs, storage
from common.config import Config
from common.cli import run_main
from common.errors import UserInputError
from features.news_vectors import current_vectors


def _pointer(root: str, what: str) -> dict | None:
    try:
        return storage.current_run(root, what)
    except storage.RunNotFound:
        return None


def news_vectors_lines(cfg: Config) -> list[str]:
    try:
        s = current_vectors(cfg)
    except UserInputError:
        return ["news vectors: none yet"]
    return [f"news vectors   {s['vectors']:>10,} news, {s['dim']}-d, encoder "
            f"{s['identity']['encoder']}, {s['partitions']} day partitions   "
            f"({outputs.vectors_identity_root(cfg, s['identity']['id'])})"]


def features_lines(cfg: Config) -> list[str]:
    try:
        s = outputs.latest_rows(cfg)["summary"]
    except storage.RunNotFound:
        return ["features: none yet"]
    rows = s["rows"]
    lines = [f"features run   {s['run_id']}   as of {s['as_of']} (user clicks: {s['user_clicks']})"
             f"   ({s['output']})"]
    for split in ("train", "dev"):
        r = rows[split]
        lines.append(f"  {split:<5} rows {r['rows']:>10,}  impressions {r['impressions']:>8,}  "
                     f"positive share {r['positive_share']:.2%}  files {r['files']}")
    lines.append(f"  user states {s['users']:,}   candidate pool {s['candidate_pool']:,} news")
    lines.append("  rejected rows " + ", ".join(f"{k.rsplit('/', 2)[-2]}/{k.rsplit('/', 1)[-1]}: {v}"
                                                for k, v in s["rejected_rows"].items()))
    lines.append(f"  ids missing from news.tsv {s['ids_missing_from_news_tsv']}; candidates "
                 f"without vector {s['candidates_without_vector']}")
    lines.append("  seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()))
    states = outputs.as_of_moments(cfg, outputs.STATE)
    if states:
        lines.append(f"  user states as of {len(states)} moments, "
                     f"{outputs.as_of_key(states[0])} to {outputs.as_of_key(states[-1])}")
    return lines


def model_lines(cfg: Config) -> list[str]:
    from dcn import export
    pointer = _pointer(export.models_root(cfg), "train")
    if not pointer:
        return ["model: none yet"]
    metadata = export.load_metadata(pointer["path"])
    metrics = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in sorted(metadata.get("metrics", {}).items()))
    return [f"model          {metadata['version']}   {metrics}   ({pointer['path']})"]


def evaluation_lines(cfg: Config) -> list[str]:
    import json
    from evaluation import report as evaluation_report
    pointer = _pointer(outputs.evaluation_root(cfg), "evaluate")
    if not pointer:
        return ["evaluation: none yet"]
    doc = json.loads(storage.read_text(f"{pointer['path']}/metrics.json"))
    return ([f"evaluation     {pointer['run_id']}   ({pointer['path']})"]
            + evaluation_report.metrics_table(doc).splitlines()
            + evaluation_report.gap_lines(doc)
            + evaluation_report.calibration_lines(doc)[:2])


def registry_lines(cfg: Config) -> list[str]:
    from dcn import registry
    served = registry.served_version(cfg) if registry.has_store(cfg) else None
    lines = [f"served model   {served.version} (registered version {served.number}, rows as of "
             f"{served.as_of})" if served else "served model: none yet (./spark-submit.sh promote)"]
    pointer = _pointer(outputs.promotions_root(cfg), "promote")
    if pointer:
        d = pointer["summary"]
        lines.append(f"  last decision {d['decided_at']}: {d['action']} {d['version']} "
                     f"{'promoted' if d['promoted'] else 'refused'}: " + "; ".join(d["reasons"]))
    return lines


SECTIONS = [news_vectors_lines, features_lines, model_lines, evaluation_lines, registry_lines]


def show(cfg: Config) -> None:
    for section in SECTIONS:
        print("\n".join(section(cfg)))


def main(argv: list[str] | None = None) -> int:
    return run_main("Show the current outputs under paths.work.", lambda cfg, _a: show(cfg), argv)


if __name__ == "__main__":
    sys.exit(main())
