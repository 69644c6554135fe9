"""The allowed values of every setting that has a range, a set of choices or a relation to
another, checked once, when the configuration loads (common/config.py).

conf/default.yaml fixes each key's type; this table fixes what values of that type make
sense. A value outside them is rejected by `load_config` with the key and the value, before
any Spark session or training process starts, instead of deep inside a task (a division by
zero, a Java stack from an executor). Checks that need the data (a scorer name that depends
on the inputs, a table identifier against the metastore) stay with the job.
"""
from __future__ import annotations

from typing import Any, Callable

from common.names import identifier_problem

Rule = Callable[[Any], str | None]     # returns what is wrong, or None


def positive(value) -> str | None:
    return None if value > 0 else "must be positive"


def at_least(low) -> Rule:
    def check(value):
        return None if value >= low else ("must be 0 or more" if low == 0 else f"must be at least {low}")
    return check


def one_of(*choices) -> Rule:
    def check(value):
        return None if value in choices else f"must be one of {list(choices)}"
    return check


def within(low, high, high_open: bool = False) -> Rule:
    def check(value):
        ok = low <= value < high if high_open else low <= value <= high
        return None if ok else f"must be in [{low}, {high}{')' if high_open else ']'}"
    return check


def subset_of(*choices) -> Rule:
    def rule(value):
        if not isinstance(value, list) or any(v not in choices for v in value):
            return f"must be a list of {', '.join(choices)}"
        return None
    return rule


def non_empty(value) -> str | None:
    return None if str(value).strip() else "must not be empty"


def positive_integers(value) -> str | None:
    ok = all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in value)
    return None if ok else "must be positive integers"


RULES: dict[str, Rule] = {
    "paths.keep_runs": at_least(1),
    "spark.shuffle_partitions": at_least(0),
    "spark.metastore": one_of("embedded", "external"),
    "mind.max_rejected_share": within(0, 1),
    "daily.max_news_without_vector_share": within(0, 1),
    "embed.encoder": one_of("use", "e5-small", "minilm", "hashing", "precomputed"),
    "embed.text": one_of("title", "title_abstract", "title_category"),
    "embed.postprocess": one_of("project", "center", "pca", "whiten"),
    "embed.threads_per_task": at_least(0),
    "embed.hashing_dim": positive,
    "embed.precomputed_dim": at_least(0),
    "embed.projection_dim": at_least(0),
    "embed.batch_size": positive,
    "embed.partitions": positive,
    "features.npratio": at_least(0),
    "features.min_row_groups": at_least(1),
    "features.row_group_mb": positive,
    "features.files": positive,
    "features.state_partition_mb": positive,
    "features.candidate_window_hours": at_least(0),
    "features.user_clicks": one_of("history_and_clicks", "history"),
    "features.dev_days": at_least(1),
    "features.validation_hours": at_least(0),
    "features.category_buckets": at_least(2),
    "features.popularity_window_hours": positive,
    "features.ctr_prior": within(0, 1),
    "features.ctr_prior_impressions": positive,
    "model.cross_layers": at_least(0),
    "model.cross_kind": one_of("vector", "matrix"),
    "model.cross_rank": at_least(0),
    "model.deep_units": positive_integers,
    "model.dropout": within(0, 1, high_open=True),
    "model.structure": one_of("stacked", "parallel"),
    "model.seed": at_least(0),
    "model.features": subset_of("user_stats", "news_stats", "category", "dot", "topic"),
    "model.category_dim": positive,
    "train.l2": at_least(0),
    "train.patience": at_least(0),
    **{f"train.{key}": positive for key in (
        "batch_size", "epochs", "learning_rate", "reader_threads", "checkpoint_every_steps",
        "keep_checkpoints", "keep_versions", "spark_num_proc", "spark_start_timeout_s")},
    **{f"train.{key}": at_least(0) for key in (
        "warmup_steps", "shuffle_buffer", "cache_in_memory_mb", "steps_per_epoch",
        "threads_per_rank", "validation_rows")},
    "score.k": positive,
    "score.database": identifier_problem,
    "score.table": identifier_problem,
    "score.mode": one_of("auto", "factorized", "plain", "cascade"),
    "score.retrieve": positive,
    "evaluate.recall_users": at_least(0),
    "retrieval.landmark_users": positive,
    "retrieval.landmark_news": positive,
    "retrieval.ridge": at_least(0),
    "score.user_batch_size": positive,
    "score.memory_budget_mb": positive,
    "score.cold_users": one_of("model", "popularity", "skip"),
    "score.partitions": positive,
    "score.max_staleness_hours": positive,
    "score.threads_per_task": at_least(0),
    "train.log_every_steps": at_least(0),
    "daily.volume_days": positive,
    "daily.min_volume_ratio": within(0, 1),
    "registry.model_name": non_empty,
    "registry.experiment": non_empty,
    "promote.max_auc_drop": within(0, 1),
}

# Relations between keys: (keys involved, what is wrong when the check fails, check).
RELATIONS: list[tuple[tuple[str, ...], str, Callable[..., bool]]] = [
    (("model.cross_layers", "model.deep_units"),
     "model.cross_layers is 0 and model.deep_units is empty: the model would have no layer",
     lambda layers, units: layers > 0 or bool(units)),
    (("embed.encoder", "embed.precomputed_path"),
     "embed.encoder is 'precomputed' but embed.precomputed_path is empty",
     lambda encoder, path: encoder != "precomputed" or bool(path)),
    (("embed.encoder", "embed.precomputed_dim"),
     "embed.encoder is 'precomputed': set embed.precomputed_dim to the width of the vectors",
     lambda encoder, dim: encoder != "precomputed" or dim > 0),
]


def violations(get: Callable[[str], Any]) -> list[str]:
    """Every rule and relation the configuration breaks, as messages naming key and value."""
    problems = []
    for key, rule in RULES.items():
        value = get(key)
        wrong = rule(value)
        if wrong:
            problems.append(f"{key} {wrong}, got {value!r}")
    for keys, message, holds in RELATIONS:
        if not holds(*(get(key) for key in keys)):
            problems.append(message)
    return problems
