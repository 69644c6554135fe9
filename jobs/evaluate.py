"""evaluate: MIND's official metrics for the exported DCN and for baselines, on the dev rows;
prediction.txt, report.md and plots, published as one run under paths.work/evaluation/.

    ./spark-submit.sh evaluate [--as-of T] [--config FILE] [--set key=value ...]

The library is evaluation/ (inputs, scorers, aggregate, prediction, document, report); the
DCN is scored by the kernel that writes the recommendations table (serving/tasks.py).
README.md, "Evaluation", is the specification.
"""
from __future__ import annotations

import sys

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from common import outputs, storage
from common.cli import StageTimer, run_main
from common.config import Config
from common.dates import optional_moment
from common.spark import get_spark
from dcn import metrics as M
from evaluation import report
from evaluation.aggregate import collect_metrics
from evaluation.cascade_recall import cascade_recall
from evaluation.document import json_safe, metrics_document, write_outputs
from evaluation.inputs import check_truth_covers, listed_candidates, read_truth, resolve_inputs
from evaluation.prediction import write_prediction_file
from evaluation.scorers import per_impression, scored_rows


def evaluate(cfg: Config, spark: SparkSession | None = None, as_of=None) -> dict:
    """Score the dev rows, compute every scorer's metrics, write and publish a run.

    Returns the metrics document (also metrics.json) with `output`, the run folder.
    """
    spark = spark or get_spark(cfg, "evaluate")
    timer = StageTimer("evaluate")
    with timer.stage("check_inputs"):
        inputs = resolve_inputs(spark, cfg, as_of)
        truth = read_truth(spark, inputs.truth_uri) if inputs.truth_uri else None
        if truth is not None:
            dev_keys = spark.read.parquet(f"{inputs.features_path}/dev")
            check_truth_covers(dev_keys, truth, inputs.truth_uri)
    root = outputs.evaluation_root(cfg)
    run_id = storage.start_run(root)
    out = storage.run_dir(root, run_id)
    impressions, positions = listed_candidates(spark, inputs.features_path)
    rows = scored_rows(spark, cfg, inputs, positions, truth)
    table = per_impression(rows, impressions, inputs.row_scorers).persist(
        StorageLevel.MEMORY_AND_DISK)
    try:
        with timer.stage("score_and_metrics"):
            merged = collect_metrics(table, inputs.scorers, cfg["evaluate.auc_bins"])
        with timer.stage("prediction_file"):
            write_prediction_file(table, cfg["evaluate.prediction_scorer"], f"{out}/prediction.txt")
    finally:
        table.unpersist()
    if inputs.feature_rows is not None and merged.rows != inputs.feature_rows:
        print(f"warning: {inputs.feature_rows - merged.rows} dev feature rows are not candidates "
              f"of {inputs.dev_folder}/behaviors.tsv (features built from other dev data?)",
              file=sys.stderr)
    with timer.stage("cascade_recall"):
        cascade = cascade_recall(cfg, inputs.model_folder, inputs.as_of)
    doc = dict(metrics_document(run_id, inputs, cfg, merged, timer.seconds), cascade=cascade)
    with timer.stage("write_reports"):
        write_outputs(out, doc)
    doc["seconds"] = timer.seconds
    summary = {"model_version": inputs.model_version, "features_run_id": inputs.features_run_id,
               "metrics": {s: {k: v for k, v in m.items() if k in M.METRIC_NAMES}
                           for s, m in json_safe(doc["scorers"]).items()}}
    storage.publish_run(root, run_id, summary, keep_runs=cfg["paths.keep_runs"])
    return dict(doc, output=out)


def _job(cfg: Config, args) -> dict:
    doc = evaluate(cfg, as_of=optional_moment(args.as_of, "--as-of"))
    print(report.metrics_table(doc))
    print("\n".join(report.gap_lines(doc)))
    print("\n".join(report.calibration_lines(doc)[:2]))   # dcn: log loss, ECE, mean vs observed
    print("\n".join(report.cascade_lines(doc)))
    return {"run_id": doc["run_id"], "output": doc["output"], "model_version": doc["model_version"],
            "features_run_id": doc["features_run_id"], "impressions": doc["impressions"],
            "seconds": doc["seconds"]}


def main(argv: list[str] | None = None) -> int:
    return run_main("Evaluate the exported DCN and baselines on the dev rows (MIND metrics).",
                    _job, argv, extra_arguments=lambda p: p.add_argument(
                        "--as-of", help="evaluate the rows built as of this moment "
                                        "(default: the newest)"))


if __name__ == "__main__":
    sys.exit(main())
