"""promote: the gate between training and serving. Moves the registry's alias `served` (what
score and daily use) to a candidate that passes the gate, or back to the previous version.

    ./spark-submit.sh promote [--version V | --as-of T] [--config FILE] [--set key=value ...]
    ./spark-submit.sh promote --version V --force      serve V without the gate
    ./spark-submit.sh promote --rollback               serve the previously served version

The candidate is `--version V` (an export's version, as in the table's model_version;
registered first if it was exported before the registry existed), else
the newest registered version (trained on the rows as of T with `--as-of T`). The gate
(evaluation/promotion.py) scores it, the served model and the baselines on the candidate's
held-out dev rows. Every decision, with its figures, is a tag of the candidate's registered
version and a run under paths.work/promotions/ (its summary is the decision). README.md,
"Model registry and promotion", is the specification.
"""
from __future__ import annotations

import datetime as dt
import sys

from pyspark.sql import SparkSession

from common import outputs, storage
from common.cli import run_main
from common.config import Config
from common.dates import optional_moment
from common.errors import UserInputError
from common.spark import get_spark
from dcn.export import load_metadata, model_folder
from dcn.registry import Registry
from evaluation import promotion


def run(cfg: Config, version: str | None = None, as_of: dt.datetime | None = None,
        force: bool = False, rollback: bool = False, spark: SparkSession | None = None) -> dict:
    registry = Registry(cfg)
    before = registry.served()
    if rollback:
        if version or as_of or force:
            raise UserInputError("--rollback takes no --version, --as-of or --force")
        after = registry.roll_back()
        decision = {"action": "rollback", "promoted": True, "version": after.version,
                    "reasons": [f"rolled back from {before.version if before else None}"]}
        return _publish(cfg, registry, after, before, decision)
    if force and not version:
        raise UserInputError("--force serves the version it names: give --version V")
    if version and registry.find(version) is None:
        _register_export(cfg, registry, version)
    candidate = registry.candidate(version, outputs.as_of_key(as_of) if as_of else None)
    decision = {"action": "force" if force else "gate", "version": candidate.version}
    if before is not None and before.number == candidate.number:
        decision.update(promoted=False, reasons=[f"{candidate.version} is already served"])
        return _publish(cfg, registry, candidate, before, decision)
    if force:
        decision.update(promoted=True, reasons=["forced: no gate"])
    else:
        figures = promotion.figures(spark or get_spark(cfg, "promote"), cfg, candidate.version,
                                    before.version if before else None)
        promoted, reasons = promotion.verdict(figures, cfg["promote.max_auc_drop"])
        decision.update(promoted=promoted, reasons=reasons, figures=figures,
                        max_auc_drop=cfg["promote.max_auc_drop"])
    if decision["promoted"]:
        registry.serve(candidate)
    return _publish(cfg, registry, candidate, before, decision)


def _register_export(cfg: Config, registry: Registry, version: str) -> None:
    """An export the registry does not know (made before it existed) becomes a version."""
    try:
        folder = model_folder(cfg, version)
    except storage.RunNotFound as err:
        raise UserInputError(str(err)) from None
    registry.record_training(version, folder, load_metadata(folder), None)


def _publish(cfg: Config, registry: Registry, subject, before, decision: dict) -> dict:
    """Record the decision on the version it is about and as a promotions run; returns it."""
    served = registry.served()
    decision = dict(decision, registered_version=subject.number, as_of=subject.as_of,
                    served_before=before.version if before else None,
                    served=served.version if served else None,
                    served_history=registry.history(), registry=registry.uri,
                    decided_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    registry.tag_decision(subject, decision)
    root = outputs.promotions_root(cfg)
    run_id = storage.start_run(root)
    storage.publish_run(root, run_id, decision, keep_runs=cfg["paths.keep_runs"])
    return dict(decision, run_id=run_id)


def _job(cfg: Config, args) -> dict:
    decision = run(cfg, args.version, optional_moment(args.as_of, "--as-of"), args.force,
                   args.rollback)
    print(f"promote ({decision['action']}): {decision['version']} "
          f"{'promoted' if decision['promoted'] else 'refused'}; served: "
          f"{decision['served'] or 'nothing yet'}; " + "; ".join(decision["reasons"]))
    return decision


def arguments(parser) -> None:
    parser.add_argument("--version", help="the candidate (default: the newest registered)")
    parser.add_argument("--as-of", help="the newest version trained on the rows as of this "
                                        "moment")
    parser.add_argument("--force", action="store_true",
                        help="serve --version without the gate (for people, not schedules)")
    parser.add_argument("--rollback", action="store_true",
                        help="serve the version served before the current one")


def main(argv: list[str] | None = None) -> int:
    return run_main("Serve a candidate model if it passes the gate, or roll back.", _job, argv,
                    extra_arguments=arguments)


if __name__ == "__main__":
    sys.exit(main())
