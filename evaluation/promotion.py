"""The promotion gate: a candidate model is served only if, on rows nobody chose it on, it
is not worse than the served model (by more than `promote.max_auc_drop` of per-impression
AUC) and better than every baseline.

The rows are the dev rows of the candidate's own build_features run: the last
`features.dev_days` days before its as-of in a daily log (the dev folder with MIND folders).
Training picks its epoch on the `valid` rows, so dev rows are held out from every choice.
The served model and the baselines are scored on the same rows. README.md, "Model registry
and promotion", is the specification.
"""
from __future__ import annotations

import dataclasses

from pyspark.sql import SparkSession

from common import outputs, storage
from common.config import Config
from common.dates import parse_moment
from common.errors import UserInputError
from dcn import metrics as M
from dcn.export import load_metadata, model_folder
from evaluation.aggregate import collect_metrics
from evaluation.inputs import inputs_for, listed_candidates
from evaluation.scorers import BASELINES, per_impression, scored_rows

METRIC = "auc"


def held_out_rows(cfg: Config, candidate_folder: str) -> dict:
    """The commit marker of the build_features run the candidate was trained on."""
    features = load_metadata(candidate_folder).get("features") or {}
    if not features.get("as_of") or not features.get("run_id"):
        raise UserInputError(f"model {candidate_folder} records no features run: retrain it")
    root = outputs.as_of_root(cfg, parse_moment(features["as_of"], "as_of"), outputs.ROWS)
    try:
        return storage.committed_run(root, features["run_id"], "build_features")
    except storage.RunNotFound as err:
        raise UserInputError(f"cannot judge {candidate_folder} on its held-out rows: {err}") from None


def model_metrics(spark: SparkSession, cfg: Config, folder: str, rows: dict) -> dict:
    """{scorer: MIND metrics} of the model at `folder` ("dcn") and the baselines on the dev
    rows of the build_features run `rows`."""
    inputs = dataclasses.replace(inputs_for(spark, cfg, folder, rows), truth_uri=None)
    impressions, positions = listed_candidates(spark, inputs.features_path)
    table = per_impression(scored_rows(spark, cfg, inputs, positions, None), impressions,
                           inputs.row_scorers)
    merged = collect_metrics(table, inputs.scorers, cfg["evaluate.auc_bins"])
    return {s: {k: v for k, v in merged.scorer_metrics(s).items() if k in M.METRIC_NAMES}
            for s in inputs.scorers}


def figures(spark: SparkSession, cfg: Config, candidate: str, served: str | None) -> dict:
    """The gate's figures: the candidate's, the served model's (None when nothing is served)
    and the best baseline's AUC, all on the candidate's held-out rows."""
    candidate_folder = model_folder(cfg, candidate)
    rows = held_out_rows(cfg, candidate_folder)
    found = model_metrics(spark, cfg, candidate_folder, rows)
    baselines = {name: found[name][METRIC] for name in BASELINES}
    best = max(baselines, key=baselines.get)
    result = {"rows": rows["path"], "features_run_id": rows["run_id"],
              "impressions": found["dcn"].get("impressions"),
              "candidate_auc": found["dcn"][METRIC], "baselines_auc": baselines,
              "best_baseline": best, "best_baseline_auc": baselines[best], "served_auc": None}
    if served is not None:
        try:
            served_folder = model_folder(cfg, served)
        except storage.RunNotFound as err:
            raise UserInputError(f"the served model's export is gone: {err}") from None
        result["served_auc"] = model_metrics(spark, cfg, served_folder, rows)["dcn"][METRIC]
    return result


def verdict(figures: dict, max_auc_drop: float) -> tuple[bool, list[str]]:
    """(promote?, the reasons): the candidate's AUC must be >= the served AUC - max_auc_drop
    (when a model is served) and > the best baseline's AUC."""
    reasons, ok = [], True
    candidate, best = figures["candidate_auc"], figures["best_baseline_auc"]
    if candidate > best:
        reasons.append(f"AUC {candidate:.4f} > best baseline {figures['best_baseline']} {best:.4f}")
    else:
        ok = False
        reasons.append(f"AUC {candidate:.4f} <= best baseline {figures['best_baseline']} "
                       f"{best:.4f}")
    served = figures.get("served_auc")
    if served is None:
        reasons.append("no model served yet")
    elif candidate >= served - max_auc_drop:
        reasons.append(f"AUC {candidate:.4f} >= served {served:.4f} - {max_auc_drop}")
    else:
        ok = False
        reasons.append(f"AUC {candidate:.4f} < served {served:.4f} - {max_auc_drop}")
    return ok, reasons
