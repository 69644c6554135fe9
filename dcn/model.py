"""The Deep & Cross Network (DCN / DCN-V2) click model over (user vector, news vector) pairs.

Public API
----------
* :class:`Cross` -- one cross layer, in the vector (DCN), full-matrix or low-rank-matrix
  (DCN-V2) form.
* :func:`build_dcn` -- the functional Keras model: inputs ``user_vec`` and ``news_vec`` and
  the configured side features, output the click *logit*, shape ``[batch, 1]``.
* :class:`Standardize` -- the fixed ``(x - mean) / std`` of the dense side features.
* :func:`dcn_spec` -- the validated, canonical construction arguments (a plain,
  JSON-serialisable dict); ``build_dcn(**dcn_spec(...))`` builds the model.
* :func:`model_spec` -- recovers that canonical dict from a built or loaded model.
* :func:`check_input_width` -- a clear error when the data's vector widths differ from the model's.
* :func:`count_flops_per_example` -- forward-pass FLOPs per example of a spec.

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

import numbers
from typing import Any, Optional, Sequence

import keras
import numpy as np
from keras import ops

from dcn.widths import side_widths, spec_widths  # noqa: F401  (re-exported)
from common.columns import (CATEGORY, NEWS_DENSE, NEWS_VEC, PAIR_DENSE, SUBCATEGORY, USER_DENSE,
                            USER_VEC)

CROSS_KINDS = ("vector", "matrix")
# The side features a model can take, in the order x0 holds them (see the module docstring).
SIDE_FEATURES = ("user_stats", "news_stats", "category", "dot", "topic")
USER_DENSE_LAYER, NEWS_DENSE_LAYER, PAIR_DENSE_LAYER = "user_dense_std", "news_dense_std", "pair_dense_std"
CATEGORY_LAYER, SUBCATEGORY_LAYER = "category_emb", "subcategory_emb"
DOT_LAYER = "dot"
STRUCTURES = ("stacked", "parallel")

# Layer names of the model built by build_dcn (other code may look them up).
X0_LAYER = "x0"
CROSS_LAYER_PREFIX = "cross_"
DEEP_LAYER_PREFIX = "deep_"
DROPOUT_LAYER_PREFIX = "deep_dropout_"
PARALLEL_CONCAT_LAYER = "cross_deep"
LOGIT_LAYER = "logit"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _normalize_rank(rank: Any) -> int:
    """``None`` or ``0`` -> 0 (full matrix); a positive int -> itself; anything else -> error."""
    if rank is None:
        return 0
    if not _is_int(rank) or rank < 0:
        raise ValueError(
            f"Cross: rank must be None, 0 (full matrix) or a positive integer (low rank), got {rank!r}"
        )
    return int(rank)


def _derived_initializer(initializer: keras.initializers.Initializer, offset: int):
    """A fresh copy of ``initializer``; an integer seed is shifted by ``offset``.

    Keras 3 seeded initializers return the same values on every call, so the two factors of
    a low-rank layer must not share one initializer object (U and V would be correlated).
    """
    config = initializer.get_config()
    if _is_int(config.get("seed")):
        config["seed"] = int(config["seed"]) + offset
    return initializer.__class__.from_config(config)


@keras.saving.register_keras_serializable(package="dcn")
class Cross(keras.layers.Layer):
    """One layer of a cross network: explicit, bounded-degree feature crosses.

    ``call(x0, x)`` takes the network's input ``x0`` and the previous cross layer's output
    ``x = x_l`` (``x`` defaults to ``x0`` for the first layer), both [batch, d], and returns
    ``x_{l+1}`` [batch, d].  ``*`` / ``⊙`` is the elementwise product; vectors are columns
    (the papers' notation); the batched form on row vectors ``X`` is given in brackets.

    ``kind="vector"`` (DCN, Wang et al. 2017, https://arxiv.org/abs/1708.05123)::

        x_{l+1} = x0 * (x_l . w) + b + x_l        [X0 * (X_l @ w[:, None]) + b + X_l]

    with weights ``w`` [d] and ``b`` [d]; ``x_l . w`` is one scalar per example.

    ``kind="matrix"``, ``rank`` None or 0 (DCN-V2, Wang et al. 2021,
    https://arxiv.org/abs/2008.13535)::

        x_{l+1} = x0 ⊙ (W x_l + b) + x_l          [X0 * (X_l @ W.T + b) + X_l]

    with ``W`` [d, d], ``W[i, j]`` the weight from input feature j to output feature i (the
    transpose of a Keras Dense kernel), and ``b`` [d].

    ``kind="matrix"``, ``rank = r`` with ``0 < r < d`` (DCN-V2's low-rank form), ``W = U V``::

        x_{l+1} = x0 ⊙ (U (V x_l) + b) + x_l      [X0 * (X_l @ V.T @ U.T + b) + X_l]

    with ``U`` [d, r], ``V`` [r, d], ``b`` [d].  (The DCN-V2 paper writes ``U (V^T x_l)``
    with a d x r ``V``; our ``V`` is that matrix transposed.  The paper's mixture of
    low-rank experts is not implemented.)

    Args:
      kind: ``"vector"`` or ``"matrix"``.
      rank: ``None``/``0`` for a full matrix, ``r > 0`` for low rank (matrix kind only;
        must be smaller than the input width d, checked when the layer is built).
      kernel_initializer: for ``w``, ``W``, ``U`` and ``V`` (default Glorot uniform).  ``V``
        gets a copy whose integer seed is shifted by one, so ``U`` and ``V`` differ.  Keras
        computes fans from shape ``[rows, cols]`` as ``(fan_in, fan_out)``; Glorot
        (symmetric in the two fans) is unaffected by our transposed orientation.
      bias_initializer: for ``b`` (default zeros).
      kernel_regularizer, bias_regularizer: optional Keras regularizers.
      **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        kind: str = "vector",
        rank: Optional[int] = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kind not in CROSS_KINDS:
            raise ValueError(f"Cross: kind must be one of {CROSS_KINDS}, got {kind!r}")
        rank = _normalize_rank(rank)
        if kind == "vector" and rank:
            raise ValueError(
                f"Cross: rank applies to kind='matrix' only; kind='vector' got rank={rank}"
            )
        self.kind = kind
        self.rank = rank
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)

    @property
    def form(self) -> str:
        """``"vector"``, ``"full"`` or ``"low_rank"``."""
        if self.kind == "vector":
            return "vector"
        return "low_rank" if self.rank else "full"

    def build(self, x0_shape, x_shape=None):
        d = x0_shape[-1]
        if d is None:
            raise ValueError("Cross: the last dimension of x0 must be known")
        d = int(d)
        if x_shape is not None and x_shape[-1] != d:
            raise ValueError(
                f"Cross: x0 and x must have the same width, got x0 width {d} and x width {x_shape[-1]}"
            )
        if self.rank and self.rank >= d:
            raise ValueError(
                f"Cross: low rank must be smaller than the input width, got rank={self.rank} "
                f"for width d={d} (use rank=0 for a full matrix)"
            )

        def kernel(name, shape, offset):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=_derived_initializer(self.kernel_initializer, offset),
                regularizer=self.kernel_regularizer,
                trainable=True,
            )

        if self.form == "vector":
            self.w = kernel("w", (d,), 0)
        elif self.form == "full":
            self.W = kernel("W", (d, d), 0)
        else:
            self.U = kernel("U", (d, self.rank), 0)
            self.V = kernel("V", (self.rank, d), 1)
        self.b = self.add_weight(
            name="b",
            shape=(d,),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            trainable=True,
        )

    def call(self, x0, x=None):
        if x is None:
            x = x0
        if x0.shape[-1] != x.shape[-1]:
            raise ValueError(
                f"Cross: x0 and x must have the same width, got x0 width {x0.shape[-1]} "
                f"and x width {x.shape[-1]}"
            )
        if self.form == "vector":
            scale = ops.matmul(x, ops.expand_dims(self.w, -1))  # [batch, 1] = x_l . w
            return x0 * scale + self.b + x
        if self.form == "full":
            projected = ops.matmul(x, ops.transpose(self.W))  # (W x_l) per row
        else:
            projected = ops.matmul(ops.matmul(x, ops.transpose(self.V)), ops.transpose(self.U))
        return x0 * (projected + self.b) + x

    def compute_output_shape(self, x0_shape, x_shape=None):
        return tuple(x0_shape)

    def weight_arrays(self) -> dict:
        """The layer's weights as numpy arrays keyed by name (``w``/``W``/``U``/``V`` and ``b``)."""
        return {v.name: keras.ops.convert_to_numpy(v) for v in self.weights}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kind": self.kind,
                "rank": self.rank,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config


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


def _floats(name: str, values, width: int | None = None) -> list[float]:
    values = [float(v) for v in (values or [])]
    if width is not None and len(values) != width:
        raise ValueError(f"build_dcn: {name} must have {width} entries, got {len(values)}")
    return values


def _dense_statistics(feature: str, prefix: str, features, mean, std) -> tuple[list, list]:
    """The canonical (mean, std) of a dense input: checked when `feature` is on, [] when off."""
    if feature not in features:
        return [], []
    mean = _floats(f"{prefix}_mean", mean)
    std = _floats(f"{prefix}_std", std, len(mean))
    if not mean:
        raise ValueError(f"build_dcn: {feature} needs {prefix}_mean and {prefix}_std")
    return mean, std


def dcn_spec(
    user_dim: int,
    news_dim: int,
    *,
    cross_layers: int = 3,
    cross_kind: str = "vector",
    cross_rank: Optional[int] = 0,
    deep_units: Sequence[int] = (256, 128),
    dropout: float = 0.0,
    structure: str = "stacked",
    seed: int = 0,
    features: Sequence[str] = (),
    user_dense_mean: Sequence[float] = (),
    user_dense_std: Sequence[float] = (),
    news_dense_mean: Sequence[float] = (),
    news_dense_std: Sequence[float] = (),
    pair_dense_mean: Sequence[float] = (),
    pair_dense_std: Sequence[float] = (),
    category_buckets: int = 1024,
    category_dim: int = 8,
    l2: float = 0.0,
) -> dict:
    """Validates :func:`build_dcn`'s arguments and returns them as a canonical plain dict.

    Canonical form (what :func:`model_spec` recovers from a model): ``deep_units`` is a list
    of ints, ``cross_rank`` an int (0 = full), ``dropout`` a float; arguments that do not
    change the model are reset to their defaults -- ``cross_kind``/``cross_rank`` when
    ``cross_layers == 0``, ``dropout`` when ``deep_units`` is empty, and ``structure``
    (to ``"stacked"``) unless both the cross network and the deep network are present.
    The dict is JSON/YAML serialisable; keep it next to a saved model if convenient.
    ``features`` is sorted into SIDE_FEATURES order; the dense statistics and the category
    settings are reset to their defaults when the feature that uses them is off.
    """
    for name, value in (("user_dim", user_dim), ("news_dim", news_dim)):
        if not _is_int(value) or value <= 0:
            raise ValueError(f"build_dcn: {name} must be a positive integer, got {value!r}")
    if not _is_int(cross_layers) or cross_layers < 0:
        raise ValueError(f"build_dcn: cross_layers must be an integer >= 0, got {cross_layers!r}")
    if cross_kind not in CROSS_KINDS:
        raise ValueError(f"build_dcn: cross_kind must be one of {CROSS_KINDS}, got {cross_kind!r}")
    if cross_rank is None:
        cross_rank = 0
    if not _is_int(cross_rank) or cross_rank < 0:
        raise ValueError(f"build_dcn: cross_rank must be None or an integer >= 0, got {cross_rank!r}")
    if isinstance(features, str) or not all(f in SIDE_FEATURES for f in features):
        raise ValueError(f"build_dcn: features must be a list of {SIDE_FEATURES}, got {features!r}")
    features = [f for f in SIDE_FEATURES if f in features]
    if "dot" in features and user_dim != news_dim:
        raise ValueError(f"build_dcn: the dot feature needs vectors of one width, got "
                         f"user_dim {user_dim} and news_dim {news_dim}")
    user_dense_mean, user_dense_std = _dense_statistics(
        "user_stats", "user_dense", features, user_dense_mean, user_dense_std)
    news_dense_mean, news_dense_std = _dense_statistics(
        "news_stats", "news_dense", features, news_dense_mean, news_dense_std)
    pair_dense_mean, pair_dense_std = _dense_statistics(
        "topic", "pair_dense", features, pair_dense_mean, pair_dense_std)
    if "category" in features:
        if not _is_int(category_buckets) or category_buckets < 2:
            raise ValueError(f"build_dcn: category_buckets must be an integer >= 2, got {category_buckets!r}")
        if not _is_int(category_dim) or category_dim < 1:
            raise ValueError(f"build_dcn: category_dim must be a positive integer, got {category_dim!r}")
    else:
        category_buckets, category_dim = 1024, 8
    if not isinstance(l2, numbers.Real) or isinstance(l2, bool) or l2 < 0:
        raise ValueError(f"build_dcn: l2 must be a number >= 0, got {l2!r}")
    d = side_widths(user_dim, news_dim, features, len(user_dense_mean), len(news_dense_mean),
                    category_dim, len(pair_dense_mean))
    d = sum(d)
    if cross_kind == "vector" and cross_rank:
        raise ValueError(
            f"build_dcn: cross_rank applies to cross_kind='matrix' only, got cross_rank={cross_rank} "
            "with cross_kind='vector'"
        )
    if cross_rank >= d:
        raise ValueError(
            f"build_dcn: cross_rank={cross_rank} must be smaller than the input width "
            f"d = {d} (use cross_rank=0 for a full matrix)"
        )
    if isinstance(deep_units, (str, bytes)) or not isinstance(deep_units, Sequence):
        raise ValueError(f"build_dcn: deep_units must be a sequence of positive integers, got {deep_units!r}")
    if not all(_is_int(u) and u > 0 for u in deep_units):
        raise ValueError(f"build_dcn: deep_units must all be positive integers, got {list(deep_units)!r}")
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"build_dcn: dropout must be a number in [0, 1), got {dropout!r}")
    if structure not in STRUCTURES:
        raise ValueError(f"build_dcn: structure must be one of {STRUCTURES}, got {structure!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"build_dcn: seed must be an integer >= 0, got {seed!r}")

    deep_units = [int(u) for u in deep_units]
    if cross_layers == 0:
        cross_kind, cross_rank = "vector", 0
    if not deep_units:
        dropout = 0.0
    if cross_layers == 0 or not deep_units:
        structure = "stacked"
    return {
        "user_dim": int(user_dim),
        "news_dim": int(news_dim),
        "cross_layers": int(cross_layers),
        "cross_kind": cross_kind,
        "cross_rank": int(cross_rank),
        "deep_units": deep_units,
        "dropout": float(dropout),
        "structure": structure,
        "seed": int(seed),
        "features": features,
        "user_dense_mean": user_dense_mean,
        "user_dense_std": user_dense_std,
        "news_dense_mean": news_dense_mean,
        "news_dense_std": news_dense_std,
        "pair_dense_mean": pair_dense_mean,
        "pair_dense_std": pair_dense_std,
        "category_buckets": int(category_buckets),
        "category_dim": int(category_dim),
        "l2": float(l2),
    }


def input_columns(spec: dict) -> dict:
    """The model's feature-row inputs besides the two vectors: name -> width (0: an int
    scalar). What the trainer streams and the evaluator and scorer feed."""
    extra = {}
    if "user_stats" in spec["features"]:
        extra[USER_DENSE] = len(spec["user_dense_mean"])
    if "news_stats" in spec["features"]:
        extra[NEWS_DENSE] = len(spec["news_dense_mean"])
    if "category" in spec["features"]:
        extra[CATEGORY] = 0
        extra[SUBCATEGORY] = 0
    if "topic" in spec["features"]:
        extra[PAIR_DENSE] = len(spec["pair_dense_mean"])
    return extra


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
        seed=int(seed) if _is_int(seed) else 0,
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


def count_flops_per_example(spec: dict) -> int:
    """Forward-pass FLOPs of one example for a :func:`build_dcn` spec (a dict of its arguments).

    Convention: only multiply-adds of matrix and vector products are counted, at 2 FLOPs
    each: a Dense layer ``in -> out`` costs ``2 * in * out``; a cross layer costs
    ``2 * d`` (vector form, the dot product ``x_l . w``), ``2 * d * d`` (full ``W x_l``) or
    ``4 * d * r`` (``V x_l`` then ``U (.)``).  Elementwise work -- bias adds, the Hadamard
    product with ``x0``, residual adds, ReLU, dropout, concatenation -- is not counted (it is
    O(d) per layer and memory-bound).  Equivalently: 2 x the number of non-bias weights.
    """
    spec = dcn_spec(**spec)
    d = sum(spec_widths(spec))
    if spec["cross_kind"] == "vector":
        per_cross = 2 * d
    elif spec["cross_rank"]:
        per_cross = 4 * d * spec["cross_rank"]
    else:
        per_cross = 2 * d * d
    flops = spec["cross_layers"] * per_cross
    deep_in = d  # the cross network keeps width d
    for units in spec["deep_units"]:
        flops += 2 * deep_in * units
        deep_in = units
    width = d + deep_in if spec["structure"] == "parallel" else deep_in
    return flops + 2 * width  # the logit Dense(1)
