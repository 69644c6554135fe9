"""Distilling the retrieval tower (dcn/retrieval.py) from a trained DCN.

The teacher is the model's exact scorer; the students are the two towers. They learn on the
task they serve: a sample of users (the user state as of the training data's as-of moment)
against a sample of that moment's candidate pool, every user against every sampled news. For
each user the loss compares the two rankings of the news as softmax distributions,

    loss = - sum_j p_j log q_j + lambda * mean_j ((s_j - mean s) - (z_j - mean z))^2,
    p = softmax(z / tau),  q = softmax(s / tau),

with z the DCN's logits and s the towers' scores: the cross-entropy puts the weight on each
user's top news, which a short list must keep; the squared error on the centered scores keeps
the rest of the order in shape. Both ignore everything that depends on the user alone, which
cannot change a user's ranking.
"""
from __future__ import annotations

import logging

import numpy as np

from dcn.retrieval import RetrievalTower

log = logging.getLogger("dcn.train.distill")   # under the training log's handler


def teacher_logits(scorer, users: np.ndarray, news, batch: int = 64) -> np.ndarray:
    """The exact scorer's logits [N, P] of every sampled user against every sampled news."""
    news = scorer.prepare_news(news)
    return np.concatenate([scorer.logits(users[start:start + batch], news)
                           for start in range(0, len(users), batch)], axis=0)


def distill(scorer, users: np.ndarray, news: np.ndarray, settings: dict, teacher: str) -> RetrievalTower:
    """A RetrievalTower fitted to `scorer`'s logits of `users` [N, du'] against `news`
    [P, dn' (+ dv)] (the scorer's sides). `settings`: dim, hidden, epochs, batch_users,
    learning_rate, temperature, mse_weight, seed. `teacher`: the scorer's digest."""
    import tensorflow as tf

    dv, du = scorer.vec_dims[0], scorer.du
    dn = scorer.dn
    has_topic = "topic" in scorer.side["features"]
    if has_topic and news.shape[1] < dn + dv:
        raise ValueError("distilling a tower for a model with the topic feature needs the "
                         "news' topic vectors")
    targets = teacher_logits(scorer, users, news).astype(np.float32)
    rng = np.random.default_rng(settings["seed"])
    tf.random.set_seed(settings["seed"])
    dim, hidden = settings["dim"], settings["hidden"]

    def dense(n_in, n_out):
        limit = np.sqrt(6.0 / (n_in + n_out))
        return [tf.Variable(rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32)),
                tf.Variable(np.zeros(n_out, np.float32))]

    user_hidden, user_out = dense(du, hidden), dense(hidden, dim)
    news_hidden, news_out, bias_out = dense(dn, hidden), dense(hidden, dim), dense(hidden, 1)
    pair = tf.Variable(np.array([1.0, 1.0 if has_topic else 0.0], np.float32))
    variables = [*user_hidden, *user_out, *news_hidden, *news_out, *bias_out, pair]

    users_t = tf.constant(users, tf.float32)
    news_t = tf.constant(news[:, :dn], tf.float32)
    user_vec = users_t[:, :dv]
    news_vec = news_t[:, :dv]
    topic = tf.constant(news[:, dn:dn + dv], tf.float32) if has_topic else tf.zeros_like(news_vec)
    tau, mse_weight = settings["temperature"], settings["mse_weight"]
    optimizer = tf.keras.optimizers.Adam(settings["learning_rate"])

    def scores(rows):
        u = tf.gather(users_t, rows)
        fu = tf.nn.relu(u @ user_hidden[0] + user_hidden[1]) @ user_out[0] + user_out[1]
        hn = tf.nn.relu(news_t @ news_hidden[0] + news_hidden[1])
        gn = hn @ news_out[0] + news_out[1]
        cn = hn @ bias_out[0] + bias_out[1]
        pair_news = pair[0] * news_vec + pair[1] * topic
        return fu @ tf.transpose(gn) + tf.gather(user_vec, rows) @ tf.transpose(pair_news) \
            + tf.transpose(cn)

    @tf.function
    def step(rows):
        z = tf.gather(targets, rows)
        with tf.GradientTape() as tape:
            s = scores(rows)
            p = tf.nn.softmax(z / tau, axis=1)
            cross_entropy = -tf.reduce_mean(tf.reduce_sum(p * tf.nn.log_softmax(s / tau, axis=1), axis=1))
            centered = (s - tf.reduce_mean(s, axis=1, keepdims=True)) \
                - (z - tf.reduce_mean(z, axis=1, keepdims=True))
            loss = cross_entropy + mse_weight * tf.reduce_mean(tf.square(centered))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    batch = min(settings["batch_users"], len(users))
    loss = float("nan")
    for _ in range(settings["epochs"]):
        order = rng.permutation(len(users))
        for start in range(0, len(order) - batch + 1, batch):
            loss = float(step(tf.constant(order[start:start + batch])))
    log.info("retrieval tower: %d users x %d news, %d epochs, final loss %.4f",
             len(users), len(news), settings["epochs"], loss)
    value = lambda v: v.numpy()  # noqa: E731
    return RetrievalTower(
        [(value(user_hidden[0]), value(user_hidden[1])), (value(user_out[0]), value(user_out[1]))],
        [(value(news_hidden[0]), value(news_hidden[1])), (value(news_out[0]), value(news_out[1]))],
        (value(bias_out[0]), value(bias_out[1])), float(pair[0].numpy()), float(pair[1].numpy()),
        {"dv": dv, "du": du, "dn": dn, "topic": dv if has_topic else 0}, teacher,
        {"users": len(users), "news": len(news), "epochs": settings["epochs"], "loss": loss})


def settings_of(cfg) -> dict:
    return {key: cfg[f"retrieval.{key}"] for key in (
        "users", "news", "dim", "hidden", "epochs", "batch_users", "learning_rate",
        "temperature", "mse_weight", "seed")}


def tower_for_export(cfg, model, as_of: str | None) -> RetrievalTower | None:
    """The retrieval tower of a freshly trained model, distilled on the user state and the
    candidate pool as of the training data's as-of moment; None (and a warning saying why)
    when the model has no factorized scorer or that state or pool is missing: the model is
    then served by the exact modes only."""
    import datetime as dt

    from common.errors import RunNotFound
    from dcn.retrieval import scorer_digest
    from dcn.scoring import NotFactorizable, make_scorer
    from features.arrays import load_pool, sample_profiles, state_and_pool

    try:
        scorer = make_scorer(model, "factorized")
    except NotFactorizable as err:
        log.warning("no retrieval tower (score.mode cascade unavailable): %s", err)
        return None
    settings = settings_of(cfg)
    try:
        if not as_of:
            raise RunNotFound("the training rows record no as-of moment")
        state_uri, pool_uri = state_and_pool(cfg, dt.datetime.fromisoformat(as_of))
    except RunNotFound as err:
        log.warning("no retrieval tower (score.mode cascade unavailable): %s", err)
        return None
    profiles = sample_profiles(state_uri, settings["users"], settings["seed"])
    pool = load_pool(pool_uri)
    rng = np.random.default_rng(settings["seed"])
    pick = np.arange(len(pool["ids"]))
    if len(pick) > settings["news"]:
        pick = np.sort(rng.choice(len(pick), settings["news"], replace=False))
    users = scorer.user_side(profiles["vectors"], profiles["dense"])
    news = scorer.news_side(pool["vectors"][pick], pool["dense"][pick], pool["category"][pick],
                            pool["subcategory"][pick], pool["topic"][pick])
    return distill(scorer, users, news, settings, scorer_digest(scorer))
