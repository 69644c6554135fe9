"""The evaluation run's human-readable outputs from its metrics document (document.py):
report.md (metrics table, gap to the oracle, calibration, segments, counts), metrics.png and
reliability.png."""
from __future__ import annotations

import io
import math

import numpy as np


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


TABLE_COLUMNS = (("auc", "AUC"), ("mrr", "MRR"), ("ndcg@5", "nDCG@5"), ("ndcg@10", "nDCG@10"),
                 ("global_auc", "global AUC"), ("log_loss", "log loss"))


def _cell(value) -> str:
    return f"{value:.4f}" if finite(value) else "-"


def metrics_table(doc: dict) -> str:
    """Markdown table: one row per scorer, one column per metric."""
    lines = ["| scorer | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
             "| --- |" + " ---: |" * len(TABLE_COLUMNS)]
    for scorer, values in doc["scorers"].items():
        lines.append(f"| {scorer} | " + " | ".join(_cell(values.get(key)) for key, _ in TABLE_COLUMNS)
                     + " |")
    return "\n".join(lines)


def gap_lines(doc: dict) -> list[str]:
    lines = []
    for metric, gap in doc["gap_closed"].items():
        name = "impression AUC" if metric == "auc" else metric.replace("ndcg", "nDCG")
        if gap is None:
            lines.append(f"- {name}: no oracle (paths.ground_truth is empty), gap not computed")
        elif gap["gap_closed"] is None:
            lines.append(f"- {name}: the best baseline ({gap['best_baseline']}) is not below the "
                         "oracle, gap undefined")
        else:
            lines.append(f"- {name}: gap closed {gap['gap_closed']:.1%} = (dcn {gap['dcn']:.4f} - "
                         f"{gap['best_baseline']} {gap['best_baseline_value']:.4f}) / (oracle "
                         f"{gap['oracle']:.4f} - {gap['best_baseline']} "
                         f"{gap['best_baseline_value']:.4f})")
    return lines


def calibration_lines(doc: dict) -> list[str]:
    """The dcn probabilities' calibration: summary lines and the reliability table."""
    cal = doc["calibration"]
    lines = [f"- log loss {_cell(cal['log_loss'])}, expected calibration error (ECE, "
             f"{cal['groups']} equal-count groups) {_cell(cal['ece'])}",
             f"- mean predicted probability {_cell(cal['mean_predicted'])} against the observed "
             f"dev click rate {_cell(cal['observed_ctr'])} over {cal['rows']} rows",
             "",
             "| decile | rows | predicted range | mean predicted | observed |",
             "| ---: | ---: | --- | ---: | ---: |"]
    lines += [f"| {row['group']} | {row['n']} | [{row['low']:.4f}, {row['high']:.4f}) | "
              f"{_cell(row['mean_predicted'])} | {_cell(row['observed'])} |"
              for row in cal["deciles"]]
    return lines


def cascade_lines(doc: dict) -> list[str]:
    """The cascade's recall of the exact lists (evaluation/cascade_recall.py)."""
    cascade = doc.get("cascade") or {}
    if not cascade:
        return ["- cascade: not measured (evaluate.recall_users is 0)"]
    if not cascade.get("available"):
        return [f"- cascade: not measured: {cascade.get('reason')}"]
    return [f"- cascade recall@{cascade['k']}: {_cell(cascade['recall_at_k'])} (lowest user "
            f"{_cell(cascade['min_recall_at_k'])}), short list of {cascade['retrieve']} of "
            f"{cascade['pool']} news: recall@100 {_cell(cascade['short_list_recall_at_100'])}; "
            f"{cascade['users']} users of the state as of {cascade['as_of']}"]


def segment_title(dimension: str, doc: dict) -> str:
    hours = doc["settings"].get("fresh_hours", 24)
    return {"user": "users: cold (history_len 0) or warm",
            "history_len": "the impression's history_len",
            "news_age": f"candidates' age: fresh (< {hours:g} h) or older"}.get(dimension, dimension)


def segment_lines(doc: dict) -> list[str]:
    """One table per segment dimension: a row per (segment, scorer)."""
    lines = []
    for dimension, segments in doc["segments"].items():
        lines += [f"### By {segment_title(dimension, doc)}", "",
                  "| segment | scorer | impressions | " +
                  " | ".join(title for _, title in TABLE_COLUMNS[:4]) + " |",
                  "| --- | --- | ---: |" + " ---: |" * 4]
        for segment, scorers in segments.items():
            for scorer, values in scorers.items():
                lines.append(f"| {segment} | {scorer} | {values['impressions']} | " +
                             " | ".join(_cell(values.get(key)) for key, _ in TABLE_COLUMNS[:4])
                             + " |")
        lines.append("")
    return lines


def report_markdown(doc: dict) -> str:
    imp, cand = doc["impressions"], doc["candidates"]
    dcn = doc["scorers"]["dcn"]
    parts = [
        f"# Evaluation {doc['run_id']}",
        "",
        f"Model version `{doc['model_version']}` on the dev rows of features run "
        f"`{doc['features_run_id']}`.",
        "",
        metrics_table(doc),
        "",
        "## Where the DCN sits between the best baseline and the oracle",
        "",
        *gap_lines(doc),
        "",
        "## Calibration of the DCN probabilities",
        "",
        *calibration_lines(doc),
        "",
        "Deciles: the dev rows sorted by the DCN probability, cut into equal-count groups "
        f"(from a histogram of {doc['settings']['calibration_bins']} bins: equal up to one bin). "
        "ECE = sum over deciles of (rows / all rows) x |mean predicted - observed|. "
        "See reliability.png.",
        "",
        "## The cascade's lists against the exact lists",
        "",
        *cascade_lines(doc),
        "",
        "Recall@k: the share of a user's exact top k (the DCN over the whole candidate pool) "
        "that score.mode cascade also recommends; recall@100: the share of the exact top 100 "
        "in the cascade's short list (score.retrieve).",
        "",
        "## Metrics by segment",
        "",
        "Impressions: those counted (with a click and a non-click). By age, each impression's "
        "metrics are over its candidates of that age only; impressions left with a single "
        "class are skipped.",
        "",
        *segment_lines(doc),
        "## Counts",
        "",
        f"- impressions: {imp['listed']} listed, {imp['counted']} counted, "
        f"{imp['skipped_single_class']} skipped (a single class), {imp['without_rows']} without "
        "any candidate with a vector",
        f"- candidates: {cand['listed']} listed, {cand['scored']} scored, "
        f"{cand['without_vector']} without a vector (worst ranks in prediction.txt)",
        f"- global AUC error bound (histogram of {doc['settings']['auc_bins']} bins): dcn "
        f"{_cell(dcn.get('global_auc_error_bound'))}",
        f"- prediction.txt: {doc['prediction_file']['lines']} lines, ranks of "
        f"`{doc['prediction_file']['scorer']}`",
        "",
        "Per-impression metrics are means over counted impressions. Ties: AUC gives equal scores "
        "half credit; MRR, nDCG and prediction.txt rank the candidate listed first ahead. The "
        "popularity baseline (train clicks) does not break its ties. `ctr` is the news' "
        "smoothed click rate in the popularity window before the impression; `ctr_cosine` the "
        "mean of a candidate's ctr rank and cosine rank within the impression.",
        "",
    ]
    return "\n".join(parts)


def metrics_plot_png(doc: dict) -> bytes:
    """Grouped bars: one group per metric, one bar per scorer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [key for key, _ in TABLE_COLUMNS[:4]]
    scorers = list(doc["scorers"])
    figure = Figure(figsize=(9, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(len(scorers), 1)
    x = np.arange(len(keys))
    for i, scorer in enumerate(scorers):
        values = [doc["scorers"][scorer].get(k) for k in keys]
        axes.bar(x + (i - (len(scorers) - 1) / 2) * width,
                 [v if finite(v) else 0.0 for v in values], width, label=scorer)
    axes.set_xticks(x, [title for _, title in TABLE_COLUMNS[:4]])
    axes.set_ylim(0, 1)
    axes.set_ylabel("mean over impressions")
    axes.set_title(f"MIND dev metrics, model {doc['model_version']}")
    axes.legend(loc="upper left", ncols=min(len(scorers), 4), fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def reliability_plot_png(doc: dict) -> bytes:
    """Observed click rate against mean predicted probability per decile, with the diagonal
    (perfect calibration); the axes span the deciles' values, not all of [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cal = doc["calibration"]
    predicted = [row["mean_predicted"] for row in cal["deciles"]]
    observed = [row["observed"] for row in cal["deciles"]]
    top = max([*predicted, *observed, 1e-3]) * 1.1
    figure = Figure(figsize=(5.5, 5.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect calibration")
    axes.plot(predicted, observed, marker="o", label="dcn, by decile")
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed click rate")
    axes.set_title(f"Reliability, model {doc['model_version']}\nECE {_cell(cal['ece'])}, "
                   f"log loss {_cell(cal['log_loss'])}", fontsize="medium")
    axes.legend(loc="upper left", fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
