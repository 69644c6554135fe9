"""The cascade's landmark users (dcn/retrieval.py), chosen when a model is exported: a seeded
sample of `retrieval.landmark_users` users of the user state as of the training rows' as-of
moment, saved as the model's user sides beside it (retrieval.npz)."""
from __future__ import annotations

import datetime as dt
import logging

from dcn.retrieval import LandmarkRetrieval, scorer_digest

log = logging.getLogger("dcn.train.landmarks")   # under the training log's handler


def retrieval_for_export(cfg, model, as_of: str | None) -> LandmarkRetrieval | None:
    """The retrieval of a freshly trained model; None (and a warning saying why) when the
    model has no factorized scorer or there is no user state as of `as_of`: the model is then
    served by the exact modes only."""
    from common.errors import RunNotFound
    from dcn.scoring import NotFactorizable, make_scorer
    from features.arrays import sample_profiles, state_and_pool

    try:
        scorer = make_scorer(model, "factorized")
        if not as_of:
            raise RunNotFound("the training rows record no as-of moment")
        state_uri, _ = state_and_pool(cfg, dt.datetime.fromisoformat(as_of))
    except (NotFactorizable, RunNotFound) as err:
        log.warning("no cascade retrieval for this model (score.mode cascade unavailable): %s", err)
        return None
    users = sample_profiles(state_uri, cfg["retrieval.landmark_users"], cfg["retrieval.seed"])
    return LandmarkRetrieval(scorer.user_side(users["vectors"], users["dense"]),
                             cfg["retrieval.landmark_news"], cfg["retrieval.ridge"],
                             cfg["retrieval.seed"], scorer_digest(scorer))
