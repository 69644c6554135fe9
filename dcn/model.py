"""The Deep & Cross Network (DCN / DCN-V2) click model over (user vector, news vector) pairs.

The functional Keras model (:func:`build_dcn`) from a canonical spec (dcn/spec.py), the cross
layer (dcn/cross.py), the fixed standardization of the dense side features
(:class:`Standardize`), and the spec recovered from a built or loaded model
(:func:`model_spec`).

Model graph (layer names in brackets)::

    side features (each optional, `features`):
      user_stats:  user_dense -> Standardize                       [user_dense_std]  width ku
      news_stats:  news_dense -> Standardize                       [news_dense_std]  width kn
      category:    category, subcategory -> Embedding(buckets, e)  [category_emb], [subcategory_emb]
      dot:         user_vec . news_vec (the cosine baseline)       [dot]             width 1
      topic:       pair_dense (user_vec . topic_vec) -> Standardize [pair_dense_std] width kp
    x0 = concat([user_vec, user_dense_std, news_vec, news_dense_std,
                 category_emb, subcategory_emb, dot, pair_dense_std])  [x0]  width d
    cross:  x_1 = cross_0(x0), x_{l+1} = cross_l(x0, x_l)          [cross_0 .. cross_{L-1}]
    deep:   h_{k+1} = relu(h_k @ K_k + c_k), then dropout          [deep_0 ..], [deep_dropout_0 ..]
    "stacked":  logit = Dense(1)(deep(cross(x0)))
    "parallel": logit = Dense(1)(concat([cross(x0), deep(x0)]))   [cross_deep]
    pure cross (deep_units=()):   logit = Dense(1)(cross(x0))      (structure irrelevant)
    pure deep  (cross_layers=0):  logit = Dense(1)(deep(x0))       (structure irrelevant)
    neither:                      logit = Dense(1)(x0)             (logistic regression)

The model takes a dict ``{"user_vec": [batch, du], "news_vec": [batch, dn]}`` (float32), plus
``user_dense`` [batch, ku], ``news_dense`` [batch, kn] (float32) and ``category``,
``subcategory`` [batch] (int32) when their features are on, and returns the logit (no
sigmoid): train with ``BinaryCrossentropy(from_logits=True)``. ``l2`` puts an L2 penalty on
every kernel and embedding (``model.losses``).

x0 is ordered user side, news side, pair: everything that depends on the user alone comes
first (width ``du' = du + ku``), then everything that depends on the news alone (``dn' = dn +
kn + 2e``), then the pair features ``dot`` and ``pair_dense`` (each a dot product of a user
vector with a news-side vector). Scoring relies on this split (dcn/scoring.py).

Weight orientation (for code that reads weights directly, e.g. factorised scoring)
---------------------------------------------------------------------------------
Without side features, ``x0 = [user_vec (indices 0..du-1), news_vec (indices du..d-1)]``; with
them, read ``du`` and ``dn`` below as the widths ``du'`` and ``dn'`` of the two sides.

* Cross layers use the **paper's column-vector orientation**, which is the *transpose* of a
  Keras ``Dense`` kernel: ``W[i, j]`` is the weight from input feature ``j`` to output
  feature ``i``; on a batch of row vectors ``X`` ([batch, d]) the layer computes
  ``X @ W.T``.  Low rank: ``U`` [d, r], ``V`` [r, d], ``W = U @ V``; on a batch
  ``X @ V.T @ U.T``.  So the user half of ``W x0`` is ``W[:, :du] @ u`` and the news half
  ``W[:, du:] @ n`` (low rank: ``V[:, :du] @ u`` and ``V[:, du:] @ n``, then ``U @ (...)``).
  Vector form: ``x0 . w = u . w[:du] + n . w[du:]``.
* ``Dense`` layers (``deep_*``, ``logit``) use Keras' orientation: ``kernel`` is
  [in, out] and ``y = x @ kernel + bias``; in the first deep layer (pure deep or
  "parallel") rows ``kernel[:du]`` multiply ``user_vec`` and ``kernel[du:]`` multiply
  ``news_vec``.  In "parallel", the ``logit`` kernel rows ``[:d]`` multiply the cross
  output and rows ``[d:]`` the deep output.
* :meth:`Cross.weight_arrays` returns a layer's weights as ``{"w"|"W"|"U"|"V", "b": ndarray}``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from common.columns import (CATEGORY, NEWS_DENSE, NEWS_VEC, PAIR_DENSE, SUBCATEGORY, USER_DENSE,
                            USER_VEC)
from dcn.cross import Cross, is_int
from dcn.spec import dcn_spec

USER_DENSE_LAYER, NEWS_DENSE_LAYER, PAIR_DENSE_LAYER = "user_dense_std", "news_dense_std", "pair_dense_std"
CATEGORY_LAYER, SUBCATEGORY_LAYER = "category_emb", "subcategory_emb"
DOT_LAYER = "dot"

# Layer names of the model built by build_dcn (other code may look them up).
X0_LAYER = "x0"
CROSS_LAYER_PREFIX = "cross_"
DEEP_LAYER_PREFIX = "deep_"
DROPOUT_LAYER_PREFIX = "deep_dropout_"
PARALLEL_CONCAT_LAYER = "cross_deep"
LOGIT_LAYER = "logit"


@keras.saving.register_keras_serializable(package="dcn")
class Standardize(keras.layers.Layer):
    """``(x - mean) / std`` with constants fixed at construction (the train rows' statistics,
    computed by build_features): the dense side features enter x0 on the scale of the vectors'
    entries instead of as raw log-counts."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) if v > 0 else 1.0 for v in std]

    def call(self, x):
        return (x - ops.convert_to_tensor(self.mean, dtype=x.dtype)) / ops.convert_to_tensor(
            self.std, dtype=x.dtype)

    def compute_output_shape(self, shape):
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def _layer_seed(seed: int, index: int) -> int:
    """A distinct, reproducible seed for the ``index``-th seeded layer of a model."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] % (2**31 - 1))


def build_dcn(user_dim: int, news_dim: int, **arguments) -> keras.Model:
    """Builds the (uncompiled) DCN click model; see the module docstring for the graph.

    Args (validated and made canonical by :func:`dcn_spec`):
      user_dim, news_dim: widths of the ``user_vec`` and ``news_vec`` inputs.
      cross_layers: number of :class:`Cross` layers (0: no cross network).
      cross_kind, cross_rank: the cross form (``Cross(kind, rank)``); rank 0 = full matrix.
      deep_units: widths of the ReLU ``Dense`` layers of the deep network (empty: none).
      dropout: rate of the ``Dropout`` after every deep layer (0: no Dropout layers).
      structure: ``"stacked"`` (cross output feeds the deep network) or ``"parallel"``
        (cross output and deep(x0) concatenated before the logit).
      seed: initial weights (and dropout masks) are a deterministic function of the seed
        and the architecture.  The ``logit`` kernel initializer carries ``seed`` itself
        (which is how :func:`model_spec` recovers it); every other layer gets its own seed
        derived from ``(seed, layer index)``.
      features: side features, a subset of SIDE_FEATURES.
      user_dense_mean/std, news_dense_mean/std: the dense features' standardization (their
        lengths are the inputs' widths).
      category_buckets, category_dim: the category embeddings' rows and width.
      l2: L2 penalty on every kernel and embedding.

    Returns:
      A functional ``keras.Model`` with inputs ``{"user_vec", "news_vec", ...}`` and output
      the logit [batch, 1].
    """
    spec = dcn_spec(user_dim, news_dim, **arguments)
    seed = spec["seed"]
    seed_index = iter(range(1, 1_000_000))
    regularizer = (lambda: keras.regularizers.L2(spec["l2"])) if spec["l2"] else (lambda: None)

    def glorot():
        return keras.initializers.GlorotUniform(seed=_layer_seed(seed, next(seed_index)))

    user_in = keras.Input(shape=(spec["user_dim"],), name=USER_VEC, dtype="float32")
    news_in = keras.Input(shape=(spec["news_dim"],), name=NEWS_VEC, dtype="float32")
    inputs = {USER_VEC: user_in, NEWS_VEC: news_in}
    user_side, news_side, pair = [user_in], [news_in], []
    features = spec["features"]
    if "user_stats" in features:
        dense = keras.Input(shape=(len(spec["user_dense_mean"]),), name=USER_DENSE, dtype="float32")
        inputs[USER_DENSE] = dense
        user_side.append(Standardize(spec["user_dense_mean"], spec["user_dense_std"],
                                     name=USER_DENSE_LAYER)(dense))
    if "news_stats" in features:
        dense = keras.Input(shape=(len(spec["news_dense_mean"]),), name=NEWS_DENSE, dtype="float32")
        inputs[NEWS_DENSE] = dense
        news_side.append(Standardize(spec["news_dense_mean"], spec["news_dense_std"],
                                     name=NEWS_DENSE_LAYER)(dense))
    if "category" in features:
        for column, layer in ((CATEGORY, CATEGORY_LAYER), (SUBCATEGORY, SUBCATEGORY_LAYER)):
            ids = keras.Input(shape=(), name=column, dtype="int32")
            inputs[column] = ids
            news_side.append(keras.layers.Embedding(
                spec["category_buckets"], spec["category_dim"], name=layer,
                embeddings_initializer=keras.initializers.RandomNormal(
                    stddev=0.05, seed=_layer_seed(seed, next(seed_index))),
                embeddings_regularizer=regularizer())(ids))
    if "dot" in features:
        pair.append(keras.layers.Dot(axes=1, name=DOT_LAYER)([user_in, news_in]))
    if "topic" in features:
        dense = keras.Input(shape=(len(spec["pair_dense_mean"]),), name=PAIR_DENSE, dtype="float32")
        inputs[PAIR_DENSE] = dense
        pair.append(Standardize(spec["pair_dense_mean"], spec["pair_dense_std"],
                                name=PAIR_DENSE_LAYER)(dense))
    x0 = keras.layers.Concatenate(axis=-1, name=X0_LAYER)(user_side + news_side + pair)

    def cross_net(x0_tensor):
        x = None
        for i in range(spec["cross_layers"]):
            layer = Cross(
                kind=spec["cross_kind"],
                rank=spec["cross_rank"],
                kernel_initializer=glorot(),
                kernel_regularizer=regularizer(),
                name=f"{CROSS_LAYER_PREFIX}{i}",
            )
            x = layer(x0_tensor) if x is None else layer(x0_tensor, x)
        return x0_tensor if x is None else x

    def deep_net(h):
        for k, units in enumerate(spec["deep_units"]):
            h = keras.layers.Dense(
                units, activation="relu", kernel_initializer=glorot(),
                kernel_regularizer=regularizer(), name=f"{DEEP_LAYER_PREFIX}{k}"
            )(h)
            if spec["dropout"] > 0:
                h = keras.layers.Dropout(
                    spec["dropout"],
                    seed=_layer_seed(seed, next(seed_index)),
                    name=f"{DROPOUT_LAYER_PREFIX}{k}",
                )(h)
        return h

    if spec["structure"] == "parallel":  # canonical spec: both branches present
        top = keras.layers.Concatenate(axis=-1, name=PARALLEL_CONCAT_LAYER)(
            [cross_net(x0), deep_net(x0)]
        )
    else:
        top = deep_net(cross_net(x0))
    logit = keras.layers.Dense(
        1, kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        kernel_regularizer=regularizer(), name=LOGIT_LAYER
    )(top)
    return keras.Model(inputs=inputs, outputs=logit, name="dcn")


def _input_widths(model: keras.Model) -> tuple[int, int]:
    try:
        return tuple(int(model.get_layer(name).output.shape[-1]) for name in (USER_VEC, NEWS_VEC))
    except ValueError as err:
        raise ValueError(
            f"model {model.name!r} has no inputs named {USER_VEC!r} and {NEWS_VEC!r}; "
            "was it built by dcn.model.build_dcn?"
        ) from err


def model_spec(model: keras.Model) -> dict:
    """Recovers the canonical :func:`dcn_spec` dict of a model built by :func:`build_dcn`.

    Works on a freshly built model and on one restored by ``keras.models.load_model``: the
    widths come from the inputs, the architecture from the layers' names and configs, and
    the seed from the ``logit`` layer's kernel initializer.  ``build_dcn(**model_spec(m))``
    rebuilds the same architecture with the same initial weights.
    """
    user_dim, news_dim = _input_widths(model)
    names = {layer.name: layer for layer in model.layers}

    def numbered(prefix):
        found = []
        while f"{prefix}{len(found)}" in names:
            found.append(names[f"{prefix}{len(found)}"])
        return found

    crosses = numbered(CROSS_LAYER_PREFIX)
    deeps = numbered(DEEP_LAYER_PREFIX)
    dropouts = numbered(DROPOUT_LAYER_PREFIX)
    if LOGIT_LAYER not in names:
        raise ValueError(f"model {model.name!r} has no {LOGIT_LAYER!r} layer; was it built by build_dcn?")
    logit_config = names[LOGIT_LAYER].get_config()
    seed = logit_config["kernel_initializer"]["config"].get("seed")
    regularizer = logit_config.get("kernel_regularizer") or {}
    l2 = float((regularizer.get("config") or {}).get("l2", 0.0)) if regularizer else 0.0
    side = {"features": [f for f, layer in (("user_stats", USER_DENSE_LAYER),
                                            ("news_stats", NEWS_DENSE_LAYER),
                                            ("category", CATEGORY_LAYER), ("dot", DOT_LAYER),
                                            ("topic", PAIR_DENSE_LAYER))
                         if layer in names]}
    for key, layer in (("user_dense", USER_DENSE_LAYER), ("news_dense", NEWS_DENSE_LAYER),
                       ("pair_dense", PAIR_DENSE_LAYER)):
        if layer in names:
            side[f"{key}_mean"], side[f"{key}_std"] = names[layer].mean, names[layer].std
    if CATEGORY_LAYER in names:
        side["category_buckets"] = int(names[CATEGORY_LAYER].input_dim)
        side["category_dim"] = int(names[CATEGORY_LAYER].output_dim)
    return dcn_spec(
        user_dim,
        news_dim,
        cross_layers=len(crosses),
        cross_kind=crosses[0].kind if crosses else "vector",
        cross_rank=crosses[0].rank if crosses else 0,
        deep_units=[layer.units for layer in deeps],
        dropout=float(dropouts[0].rate) if dropouts else 0.0,
        structure="parallel" if PARALLEL_CONCAT_LAYER in names else "stacked",
        seed=int(seed) if is_int(seed) else 0,
        l2=l2,
        **side,
    )


def check_input_width(model: keras.Model, user_dim: int, news_dim: int) -> None:
    """Raises ``ValueError`` if the data's ``user_vec``/``news_vec`` widths differ from the model's."""
    expected = _input_widths(model)
    if expected != (user_dim, news_dim):
        raise ValueError(
            f"model expects {USER_VEC} width {expected[0]} and {NEWS_VEC} width {expected[1]}, "
            f"but the data has {USER_VEC} width {user_dim} and {NEWS_VEC} width {news_dim}"
        )


