"""What scoring day D reads: the user state and candidate pool as of D 00:00 UTC (checked for
staleness), the pool as numpy arrays, and the checks that the model fits them."""
from __future__ import annotations

import datetime as dt

from common import outputs, storage
from common.config import Config
from common.errors import UserInputError
from dcn import export, registry
from features import behavior_log as log


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
