"""The evaluation run's outputs: the metrics document (metrics.json), the gap the DCN closes
between the best baseline and the oracle, and the files written beside it (report.md and the
plots, evaluation/report.py)."""
from __future__ import annotations

import json
import math

from common import outputs, storage
from common.config import Config
from evaluation import report
from evaluation.aggregate import FRESH_HOURS, EvaluationPartial
from evaluation.inputs import Inputs
from evaluation.report import finite as _finite
from evaluation.scorers import BASELINES

OUTPUT_FILES = ("metrics.json", "prediction.txt", "report.md", "metrics.png", "reliability.png")
GAP_METRICS = ("auc", "ndcg@10")


def current_evaluation(cfg: Config) -> dict:
    """The pointer of the latest published evaluation run."""
    return storage.current_run(outputs.evaluation_root(cfg), "evaluate")


def gap_closed(scores: dict, metric: str) -> dict | None:
    """Where dcn sits between the best baseline (0) and the oracle (1) on `metric`; None
    without an oracle or when no baseline is below it."""
    baselines = {b: scores[b][metric] for b in BASELINES if _finite(scores[b][metric])}
    if "oracle" not in scores or not baselines:
        return None
    best = max(baselines, key=baselines.get)
    dcn, oracle = scores["dcn"][metric], scores["oracle"][metric]
    span = oracle - baselines[best]
    value = (dcn - baselines[best]) / span if _finite(span) and span > 0 and _finite(dcn) else None
    return {"best_baseline": best, "best_baseline_value": baselines[best], "dcn": dcn,
            "oracle": oracle, "gap_closed": value}


def metrics_document(run_id: str, inputs: Inputs, cfg: Config, merged: EvaluationPartial,
                     seconds: dict) -> dict:
    scores = {s: merged.scorer_metrics(s) for s in inputs.scorers}
    dcn = scores["dcn"]
    return {
        "run_id": run_id,
        "model_version": inputs.model_version,
        "model_folder": inputs.model_folder,
        "features_run_id": inputs.features_run_id,
        "features_path": inputs.features_path,
        "dev": inputs.dev_folder,
        "ground_truth": inputs.truth_uri,
        "scorers": scores,
        "impressions": {
            "listed": merged.impressions_listed,
            "counted": dcn["impressions"],
            "skipped_single_class": dcn["skipped_impressions"],
            "without_rows": merged.impressions_without_rows,
        },
        "candidates": {
            "listed": merged.candidates_listed,
            "scored": merged.rows,
            "without_vector": merged.candidates_listed - merged.rows,
            "feature_rows": inputs.feature_rows,
        },
        "gap_closed": {m: gap_closed(scores, m) for m in GAP_METRICS},
        "calibration": {**merged.calibration_summary(), "log_loss": dcn["log_loss"]},
        "segments": merged.segment_metrics(),
        "model_inputs": dict(inputs.widths),
        "prediction_file": {"scorer": cfg["evaluate.prediction_scorer"],
                            "lines": merged.impressions_listed},
        "settings": {"seed": cfg["evaluate.seed"], "auc_bins": cfg["evaluate.auc_bins"],
                     "batch_size": cfg["evaluate.batch_size"],
                     "calibration_bins": merged.calibration.bins, "fresh_hours": FRESH_HOURS},
        "seconds": seconds,
    }


def json_safe(value):
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_outputs(out: str, doc: dict) -> None:
    storage.write_text(f"{out}/metrics.json",
                       json.dumps(json_safe(doc), indent=2, sort_keys=True))
    storage.write_text(f"{out}/report.md", report.report_markdown(doc))
    storage.write_bytes(f"{out}/metrics.png", report.metrics_plot_png(doc))
    storage.write_bytes(f"{out}/reliability.png", report.reliability_plot_png(doc))
