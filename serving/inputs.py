"""What scoring day D reads: the user state and candidate pool as of D 00:00 UTC (checked for
staleness), the pool as numpy arrays, and the checks that the model fits them."""
from __future__ import annotations

import datetime as dt

import numpy as np

from common import columns as C
from common import outputs, storage
from common.config import Config
from common.errors import UserInputError
from dcn import export, registry
from features import behavior_log as log
from features import side_features as side


def serving_inputs(cfg: Config, run_date: str) -> tuple[dict, dict]:
    """(state pointer, pool pointer) as of the run date's 00:00 UTC, checked for staleness."""
    as_of = outputs.day_start(dt.date.fromisoformat(run_date))
    how = (f"./spark-submit.sh daily --date {run_date} (or ./spark-submit.sh build_features "
           f"--as-of {run_date})")
    try:
        state = outputs.current_as_of(cfg, as_of, outputs.STATE, how)
        pool = outputs.current_as_of(cfg, as_of, outputs.POOL, how)
    except storage.RunNotFound as err:
        day = dt.date.fromisoformat(run_date)
        problem = log.is_daily(cfg) and log.too_far_past(cfg, day, log.log_days(cfg)[-1])
        raise UserInputError(f"cannot score {run_date}: {problem or err}") from None
    data_end = state["summary"].get("data_end")
    if not data_end:
        raise UserInputError(f"cannot score {run_date}: the log holds no impression before it")
    hours = (as_of - dt.datetime.fromisoformat(data_end)).total_seconds() / 3600
    if hours > cfg["score.max_staleness_hours"]:
        raise UserInputError(
            f"cannot score {run_date}: the log's last impression before it is at {data_end}, "
            f"{hours:.1f} hours earlier (score.max_staleness_hours is "
            f"{cfg['score.max_staleness_hours']}): the log is missing days")
    return state, pool


def serving_model(cfg: Config, state: dict, pool_pointer: dict) -> tuple[str, dict]:
    """(folder, metadata) of the model `score.model_version` (empty: the served one),
    checked against the state's vector width and news vectors and the pool's side-feature
    settings."""
    try:
        model_dir = export.model_folder(cfg, cfg["score.model_version"] or _served(cfg))
    except storage.RunNotFound as err:
        raise UserInputError(str(err)) from None
    metadata = export.load_metadata(model_dir)
    dim = state["summary"]["dim"]
    if (metadata["user_dim"], metadata["news_dim"]) != (dim, dim):
        raise UserInputError(
            f"model {metadata.get('version')} expects user_vec width {metadata['user_dim']} and "
            f"news_vec width {metadata['news_dim']}, but the state ({state['path']}) has "
            f"width {dim}: retrain, or score with a model trained on these features")
    try:
        export.check_lineage(metadata, state["summary"].get("news_vectors"), state["path"])
        export.check_side_features(metadata, pool_pointer["summary"].get("side_features"),
                                   f"the candidate pool {pool_pointer['path']}")
    except ValueError as err:
        raise UserInputError(str(err)) from None
    return model_dir, metadata


def _served(cfg: Config) -> str:
    """The version the registry's alias `served` points at; never simply the newest export."""
    served = registry.served_version(cfg)
    if served is None:
        raise UserInputError(f"no model is served yet in the registry {registry.tracking_uri(cfg)}: "
                             "promote one with ./spark-submit.sh promote (or set "
                             "score.model_version)")
    return served.version


def load_pool(uri: str) -> dict:
    """The candidate pool as numpy arrays sorted by news id (bounded by the news shown in one
    window, not by users, so it is read on the driver and broadcast)."""
    import pyarrow.parquet as pq
    fs, path = storage.filesystem(uri)
    table = pq.read_table(path, filesystem=fs).sort_by(C.NEWS_ID)
    if table.num_rows == 0:
        raise UserInputError(f"the candidate pool {uri} is empty: nothing to recommend "
                             "(widen features.candidate_window_hours?)")
    vectors = np.stack(table.column(C.NEWS_VEC).to_numpy(zero_copy_only=False)).astype(np.float32)
    dense = np.stack(table.column(C.NEWS_DENSE).to_numpy(zero_copy_only=False)).astype(np.float32)
    return {"ids": np.asarray(table.column(C.NEWS_ID).to_pylist(), dtype=object),
            "vectors": vectors, "dense": dense,
            "category": table.column(C.CATEGORY).to_numpy().astype(np.int32),
            "subcategory": table.column(C.SUBCATEGORY).to_numpy().astype(np.int32),
            "topic": np.stack(table.column(C.TOPIC_VEC).to_numpy(zero_copy_only=False)).astype(np.float32),
            # the smoothed click rate as of the run date (side_features.NEWS_DENSE_NAMES)
            "ctr": dense[:, side.NEWS_DENSE_NAMES.index("smoothed_ctr")].astype(np.float64)}
