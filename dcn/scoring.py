"""Scoring users against a candidate matrix: the plain model call and the exact factorized
form (their working memory and the top-k selection: dcn/batching.py).

Both scorers take a batch of users and the pool as their *sides*: `user_side(user_vec,
user_dense)` and `news_side(news_vec, news_dense, category, subcategory)` build them from the
columns (what the model's side features need), and `logits(users, news)` scores every pair.

Factorized scoring (vector cross form, DCN). With x0 = [u; n] and the layer
`x_{l+1} = x0 * (x_l . w_l) + b_l + x_l`, every layer's output has the form
`x_l = x0 * a_l + c_l` with a per-pair scalar `a_l` and a constant vector `c_l`
(a_0 = 1, c_0 = 0), because

    x_l . w_l = a_l (x0 . w_l) + c_l . w_l,    x0 . w_l = u . w_l[:du] + n . w_l[du:]
    a_{l+1} = a_l (1 + u . w_l[:du] + n . w_l[du:]) + c_l . w_l,    c_{l+1} = c_l + b_l.

So a batch of B users and P news needs `U @ Wu` [B, L] and `N @ Wn` [P, L] once, then a few
scalar operations per pair and layer. The first dense layer on x_L (stacked) splits the same way:
`x_L @ K = a_L * (u @ K[:du] + n @ K[du:]) + c_L @ K`, one broadcast sum of a [B, H] and a
[P, H] matrix; on x0 (parallel, or no cross layers) it is `u @ K[:du] + n @ K[du:]`. Only the
deep layers after the first (if any) run per pair. The matrix cross form (DCN-V2) has
`x0 * (W x_l)`, an element-wise product that does not split: it is scored with the plain call.
"""
from __future__ import annotations

import numpy as np

from dcn.batching import factorized_memory, plain_memory

# dcn.model (Keras, TensorFlow) is imported only where a Keras model is read: a factorized
# scorer restored from its arrays (`FactorizedScorer.from_arrays`) runs on numpy alone, so a
# scoring task does not pay TensorFlow's import.


class NotFactorizable(ValueError):
    """The model's form has no exact factorized scoring (matrix cross layers)."""


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _side_settings(spec: dict) -> dict:
    """What turns a user's or a news item's columns into its side of x0 (numpy arrays)."""
    return {"features": list(spec["features"]),
            "user_dense_mean": np.asarray(spec["user_dense_mean"], np.float32),
            "user_dense_std": np.asarray(spec["user_dense_std"], np.float32),
            "news_dense_mean": np.asarray(spec["news_dense_mean"], np.float32),
            "news_dense_std": np.asarray(spec["news_dense_std"], np.float32),
            "pair_dense_mean": np.asarray(spec.get("pair_dense_mean", ()), np.float32),
            "pair_dense_std": np.asarray(spec.get("pair_dense_std", ()), np.float32)}


class _Pairs:
    """How the user terms and the news terms of a batch meet: every user with every news
    ([B, P]: ranking the pool), or `aligned`, user r with news r ([R]: rows that are pairs
    already, such as the evaluation's dev rows). The kernel's arithmetic is the same."""

    def __init__(self, aligned: bool):
        self.aligned = aligned

    def shape(self, n_users: int, n_news: int) -> tuple[int, ...]:
        if self.aligned and n_users != n_news:
            raise ValueError(f"aligned pairs need as many users as news, got {n_users} and {n_news}")
        return (n_users,) if self.aligned else (n_users, n_news)

    def join(self, user_terms: np.ndarray, news_terms: np.ndarray) -> np.ndarray:
        """user_terms [B, ...] + news_terms [P, ...] for every pair."""
        if self.aligned:
            return user_terms + news_terms
        return user_terms[:, None] + news_terms[None, :]

    def dot(self, user_rows: np.ndarray, news_rows: np.ndarray) -> np.ndarray:
        """The dot product of every pair's two rows."""
        if self.aligned:
            return np.einsum("ij,ij->i", user_rows, news_rows)
        return user_rows @ news_rows.T


ALL_PAIRS, ALIGNED = _Pairs(aligned=False), _Pairs(aligned=True)


class _ShortLists(_Pairs):
    """User r with the news `lists[r, j]` of the pool ([B, m]: each user's own short list,
    the cascade's exact stage). The news terms are computed once for the whole pool and
    gathered, so a short list costs the per-pair arithmetic only."""

    def __init__(self, lists: np.ndarray):
        super().__init__(aligned=False)
        self.lists = lists

    def shape(self, n_users: int, n_news: int) -> tuple[int, ...]:
        return self.lists.shape

    def join(self, user_terms: np.ndarray, news_terms: np.ndarray) -> np.ndarray:
        return user_terms[:, None] + news_terms[self.lists]

    def dot(self, user_rows: np.ndarray, news_rows: np.ndarray) -> np.ndarray:
        return np.einsum("bd,bmd->bm", user_rows, news_rows[self.lists])


class PreparedNews:
    """A news-side matrix with its projections on the scorer's weights kept once computed:
    a scoring task prepares the pool once and scores every batch of users against it."""

    def __init__(self, rows: np.ndarray):
        self.rows = np.asarray(rows, dtype=np.float32)
        self._terms: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def project(self, key: str, compute) -> np.ndarray:
        if key not in self._terms:
            self._terms[key] = compute(self.rows)
        return self._terms[key]


class _Sides:
    """Builds the user side and the news side of x0 from their columns, as build_dcn does:
    [user_vec, standardized user_dense] and [news_vec, standardized news_dense, category and
    subcategory embeddings], followed, with the `topic` feature, by the news' topic_vec (not
    part of x0: the pair feature user_vec . topic_vec is made from it) when it is given;
    rows that carry that pair feature already (pair_dense) pass it to `pair_logits`."""

    def _init_sides(self, spec: dict, embeddings: dict[str, np.ndarray]) -> None:
        self.side = _side_settings(spec)
        self.vec_dims = (spec["user_dim"], spec["news_dim"])
        self.embeddings = embeddings

    def user_side(self, user_vec, user_dense=None) -> np.ndarray:
        parts = [np.asarray(user_vec, np.float32)]
        if "user_stats" in self.side["features"]:
            parts.append((np.asarray(user_dense, np.float32) - self.side["user_dense_mean"])
                         / self.side["user_dense_std"])
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def news_side(self, news_vec, news_dense=None, category=None, subcategory=None,
                  topic_vec=None) -> np.ndarray:
        parts = [np.asarray(news_vec, np.float32)]
        if "news_stats" in self.side["features"]:
            parts.append((np.asarray(news_dense, np.float32) - self.side["news_dense_mean"])
                         / self.side["news_dense_std"])
        if "category" in self.side["features"]:
            parts.append(self.embeddings["category"][np.asarray(category, np.int64)])
            parts.append(self.embeddings["subcategory"][np.asarray(subcategory, np.int64)])
        if "topic" in self.side["features"] and topic_vec is not None:
            parts.append(np.asarray(topic_vec, np.float32))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


class FactorizedScorer(_Sides):
    """Exact logits of every (user, news) pair of a batch, for DCN models with vector cross
    layers (or none), in numpy. See the module docstring for the algebra; side features keep
    it: x0 = [user side (du'), news side (dn'), pair], where each pair feature is a scalar
    s_k per pair, a dot product of user_vec with a news-side vector (`dot`: news_vec,
    `topic`: topic_vec, standardized), one [B, P] matrix product each. So x0 . w = u'.w_u +
    n'.w_n + sum_k s_k w_k, and a first dense layer's pre-activation gains the broadcast terms
    s_k * K[du' + dn' + k]."""

    def __init__(self, model):
        from dcn.model import (CATEGORY_LAYER, CROSS_LAYER_PREFIX, DEEP_LAYER_PREFIX, LOGIT_LAYER, SUBCATEGORY_LAYER, model_spec)
        from dcn.widths import spec_widths
        spec = model_spec(model)
        if spec["cross_layers"] and spec["cross_kind"] != "vector":
            raise NotFactorizable(f"cross_kind {spec['cross_kind']!r} has no factorized form")
        self.du, self.dn, self.pair = spec_widths(spec)
        embeddings = {}
        if "category" in spec["features"]:
            for key, layer in (("category", CATEGORY_LAYER), ("subcategory", SUBCATEGORY_LAYER)):
                embeddings[key] = np.asarray(model.get_layer(layer).get_weights()[0], np.float32)
        self._init_sides(spec, embeddings)
        self.structure = spec["structure"]
        d = self.du + self.dn + self.pair
        weights = lambda name: [np.asarray(w, dtype=np.float64) for w in model.get_layer(name).get_weights()]  # noqa: E731
        cross = [model.get_layer(f"{CROSS_LAYER_PREFIX}{i}").weight_arrays()
                 for i in range(spec["cross_layers"])]
        self.cross_w = np.stack([c["w"] for c in cross], axis=1).astype(np.float32) if cross \
            else np.zeros((d, 0), np.float32)                                   # [d, L]
        c = np.zeros(d)
        self.cross_cw = []                                                       # c_l . w_l
        for layer in cross:
            self.cross_cw.append(float(c @ layer["w"]))
            c = c + layer["b"]
        self.cross_c = c                                                         # c_L
        self.deep = [weights(f"{DEEP_LAYER_PREFIX}{k}") for k in range(len(spec["deep_units"]))]
        self.logit_kernel, self.logit_bias = weights(LOGIT_LAYER)

    ARRAYS_FORMAT = 2

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything `logits` needs, as numpy arrays (saved beside an exported model)."""
        arrays = {"format": np.array(self.ARRAYS_FORMAT), "du": np.array(self.du),
                  "dn": np.array(self.dn), "pair": np.array(self.pair),
                  "vec_dims": np.asarray(self.vec_dims), "structure": np.array(self.structure),
                  "features": np.array(",".join(self.side["features"])),
                  "cross_w": self.cross_w, "cross_cw": np.asarray(self.cross_cw, np.float64),
                  "cross_c": self.cross_c, "logit_kernel": self.logit_kernel,
                  "logit_bias": self.logit_bias, "deep_layers": np.array(len(self.deep))}
        for key in ("user_dense_mean", "user_dense_std", "news_dense_mean", "news_dense_std",
                    "pair_dense_mean", "pair_dense_std"):
            arrays[key] = self.side[key]
        for key, table in self.embeddings.items():
            arrays[f"embedding_{key}"] = table
        for k, (kernel, bias) in enumerate(self.deep):
            arrays[f"deep_kernel_{k}"], arrays[f"deep_bias_{k}"] = kernel, bias
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "FactorizedScorer":
        """The scorer `to_arrays` saved, without Keras or TensorFlow."""
        if int(arrays["format"]) != cls.ARRAYS_FORMAT:
            raise ValueError(f"factorized scorer arrays of format {int(arrays['format'])}, "
                             f"expected {cls.ARRAYS_FORMAT}")
        scorer = cls.__new__(cls)
        scorer.du, scorer.dn, scorer.pair = (int(arrays[k]) for k in ("du", "dn", "pair"))
        features = [f for f in str(arrays["features"]).split(",") if f]
        spec = {"features": features, "user_dim": int(arrays["vec_dims"][0]),
                "news_dim": int(arrays["vec_dims"][1]),
                **{k: arrays[k] for k in ("user_dense_mean", "user_dense_std",
                                          "news_dense_mean", "news_dense_std",
                                          "pair_dense_mean", "pair_dense_std")}}
        scorer._init_sides(spec, {k: np.asarray(arrays[f"embedding_{k}"], np.float32)
                                  for k in ("category", "subcategory")
                                  if f"embedding_{k}" in arrays})
        scorer.structure = str(arrays["structure"])
        scorer.cross_w = np.asarray(arrays["cross_w"], np.float32)
        scorer.cross_cw = [float(x) for x in arrays["cross_cw"]]
        scorer.cross_c = np.asarray(arrays["cross_c"], np.float64)
        scorer.deep = [(np.asarray(arrays[f"deep_kernel_{k}"]), np.asarray(arrays[f"deep_bias_{k}"]))
                       for k in range(int(arrays["deep_layers"]))]
        scorer.logit_kernel = np.asarray(arrays["logit_kernel"])
        scorer.logit_bias = np.asarray(arrays["logit_bias"])
        return scorer

    def _pair_scalars(self, users: np.ndarray, news: np.ndarray, pairs: _Pairs,
                      pair_dense=None) -> list[np.ndarray]:
        """The pair features s_k for every pair, each [B, P] (aligned: [R]), in x0's order;
        the topic affinity from the news side's topic_vec, or given (`pair_dense`, aligned)."""
        user_vec = users[:, :self.vec_dims[0]]
        scalars = []
        if "dot" in self.side["features"]:
            scalars.append(pairs.dot(user_vec, news.project(
                "news_vec", lambda rows: np.ascontiguousarray(rows[:, :self.vec_dims[1]]))))
        if "topic" in self.side["features"]:
            if pair_dense is not None:
                topic = np.asarray(pair_dense, np.float32)[:, 0]
            elif news.rows.shape[1] > self.dn:
                topic = pairs.dot(user_vec, news.project(
                    "topic_vec", lambda rows: np.ascontiguousarray(rows[:, self.dn:])))
            else:
                raise ValueError("the topic feature needs the news side's topic_vec or the "
                                 "pairs' pair_dense")
            scalars.append((topic - self.side["pair_dense_mean"][0]) / self.side["pair_dense_std"][0])
        return scalars

    def _cross_scalar(self, users: np.ndarray, news: np.ndarray, scalars,
                      pairs: _Pairs) -> np.ndarray:
        """a_L for every pair, [B, P] (aligned: [R])."""
        pu = users @ self.cross_w[:self.du]                                      # [B, L]
        qn = news.project("cross", lambda rows: rows[:, :self.dn]
                          @ self.cross_w[self.du:self.du + self.dn])             # [P, L]
        a = np.ones(pairs.shape(len(users), len(news)), dtype=np.float32)
        for layer, cw in enumerate(self.cross_cw):
            scale = pairs.join(1.0 + pu[:, layer], qn[:, layer])
            for k, s in enumerate(scalars):
                scale += s * self.cross_w[self.du + self.dn + k, layer]
            a = a * scale + np.float32(cw)
        return a

    def _split_dot(self, users, news: PreparedNews, key: str, kernel, scalars, pairs: _Pairs,
                   a=None, const=0.0):
        """`x @ kernel` for every pair where x = x0 * a + c (a=None: x = x0): [B, P, out]
        (aligned: [R, out]). One such array, updated in place (the largest of a batch).
        `key` names the kernel for the news side's kept projections."""
        ku = users @ kernel[:self.du].astype(np.float32)
        kn = news.project(key, lambda rows: rows[:, :self.dn]
                          @ kernel[self.du:self.du + self.dn].astype(np.float32))
        base = pairs.join(ku, kn)
        for k, s in enumerate(scalars):
            base += s[..., None] * kernel[self.du + self.dn + k].astype(np.float32)
        if a is not None:
            base *= a[..., None]
        base += np.asarray(const, dtype=np.float32)
        return base

    def _deep_rest(self, h: np.ndarray) -> np.ndarray:
        for kernel, bias in self.deep[1:]:
            h = h @ kernel.astype(np.float32)
            h += bias.astype(np.float32)
            h = _relu(h)
        return h

    def memory(self, n_news: int) -> tuple[int, int]:
        """(bytes that do not depend on the batch, bytes per (user, news) pair of a batch)."""
        return factorized_memory(self.dn, [k.shape[1] for k, _ in self.deep],
                                 self.cross_w.shape[1], n_news)

    def logits(self, users: np.ndarray, news: np.ndarray) -> np.ndarray:
        """Logits [B, P] of every pair of `users` [B, du'] and `news` [P, dn'] (the sides
        `user_side` and `news_side` build; without side features, the two vectors)."""
        return self._logits(users, news, ALL_PAIRS)

    def pair_logits(self, users: np.ndarray, news: np.ndarray, pair_dense=None) -> np.ndarray:
        """Logits [R] of the pairs (users[r], news[r]), sides as for `logits`; `pair_dense`
        [R, kp]: the rows' own topic affinity, when the news side has no topic_vec."""
        return self._logits(users, news, ALIGNED, pair_dense)

    def prepare_news(self, news) -> PreparedNews:
        """The news side (`news_side`'s matrix) ready to be scored against many batches."""
        return news if isinstance(news, PreparedNews) else PreparedNews(news)

    def short_list_logits(self, users: np.ndarray, news, lists: np.ndarray) -> np.ndarray:
        """Logits [B, m] of user r with the news `lists[r, j]` (indices into `news`, the whole
        pool's side, best prepared once with `prepare_news`): the same arithmetic as
        `logits`, on each user's short list only."""
        return self._logits(users, news, _ShortLists(np.asarray(lists, dtype=np.int64)))

    def _logits(self, users, news, pairs: _Pairs, pair_dense=None) -> np.ndarray:
        users = np.asarray(users, dtype=np.float32)
        news = self.prepare_news(news)
        s = self._pair_scalars(users, news, pairs, pair_dense)
        has_cross = self.cross_w.shape[1] > 0
        a = self._cross_scalar(users, news, s, pairs) if has_cross else None
        w, b = self.logit_kernel, float(self.logit_bias[0])
        d = self.du + self.dn + self.pair
        if self.structure == "parallel":
            cross_part = self._split_dot(users, news, "logit_cross", w[:d], s, pairs, a,
                                         self.cross_c @ w[:d])[..., 0]
            kernel, bias = self.deep[0]
            h = self._deep_rest(_relu(self._split_dot(users, news, "deep_0", kernel, s, pairs,
                                                      None, bias)))
            return cross_part + (h @ w[d:].astype(np.float32))[..., 0] + b
        if not self.deep:                                  # pure cross (or logistic regression)
            const = self.cross_c @ w if has_cross else 0.0
            return self._split_dot(users, news, "logit", w, s, pairs, a, const)[..., 0] + b
        kernel, bias = self.deep[0]
        const = (self.cross_c @ kernel if has_cross else 0.0) + bias
        h = self._deep_rest(_relu(self._split_dot(users, news, "deep_0", kernel, s, pairs, a, const)))
        return (h @ w.astype(np.float32))[..., 0] + b


class PlainScorer:
    """Logits of every (user, news) pair through the Keras model itself, in chunks of pairs.
    Its sides are the model's own input columns (dicts of arrays)."""

    def __init__(self, model, max_pairs: int = 65536):
        import tensorflow as tf
        from dcn.model import model_spec
        from dcn.widths import spec_widths
        self.model = model
        self.max_pairs = max_pairs
        spec = model_spec(model)
        self.features = spec["features"]
        self._width = 2 * sum(spec_widths(spec)) + sum(spec["deep_units"])
        self._call = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)

    def user_side(self, user_vec, user_dense=None) -> dict:
        from common.columns import USER_DENSE, USER_VEC
        side = {USER_VEC: np.asarray(user_vec, np.float32)}
        if "user_stats" in self.features:
            side[USER_DENSE] = np.asarray(user_dense, np.float32)
        return side

    def news_side(self, news_vec, news_dense=None, category=None, subcategory=None,
                  topic_vec=None) -> dict:
        from common.columns import CATEGORY, NEWS_DENSE, NEWS_VEC, SUBCATEGORY, TOPIC_VEC
        side = {NEWS_VEC: np.asarray(news_vec, np.float32)}
        if "topic" in self.features and topic_vec is not None:
            side[TOPIC_VEC] = np.asarray(topic_vec, np.float32)
        if "news_stats" in self.features:
            side[NEWS_DENSE] = np.asarray(news_dense, np.float32)
        if "category" in self.features:
            side[CATEGORY] = np.asarray(category, np.int32)
            side[SUBCATEGORY] = np.asarray(subcategory, np.int32)
        return side

    @staticmethod
    def _as_sides(users, news) -> tuple[dict, dict]:
        from common.columns import NEWS_VEC, USER_VEC
        if not isinstance(users, dict):
            users = {USER_VEC: np.asarray(users, np.float32)}
        if not isinstance(news, dict):
            news = {NEWS_VEC: np.asarray(news, np.float32)}
        return users, news

    def _model_logits(self, inputs: dict) -> np.ndarray:
        """The model's logits of a chunk of pairs' input columns."""
        from common.columns import PAIR_DENSE, TOPIC_VEC, USER_VEC
        if TOPIC_VEC in inputs:      # the pair feature, as build_features computes it
            topic = inputs.pop(TOPIC_VEC)
            inputs[PAIR_DENSE] = np.sum(inputs[USER_VEC].astype(np.float64) * topic, axis=1,
                                        keepdims=True).astype(np.float32)
        return np.asarray(self._call(inputs))[:, 0]

    def logits(self, users, news) -> np.ndarray:
        from common.columns import NEWS_VEC, USER_VEC
        users, news = self._as_sides(users, news)
        n_users, n_news = len(users[USER_VEC]), len(news[NEWS_VEC])
        out = np.empty(n_users * n_news, dtype=np.float32)
        rows_per_chunk = max(1, self.max_pairs // max(n_news, 1))
        for start in range(0, n_users, rows_per_chunk):
            stop = min(n_users, start + rows_per_chunk)
            inputs = {k: np.repeat(v[start:stop], n_news, axis=0) for k, v in users.items()}
            inputs.update({k: np.tile(v, (stop - start,) + (1,) * (v.ndim - 1))
                           for k, v in news.items()})
            out[start * n_news:stop * n_news] = self._model_logits(inputs)
        return out.reshape(n_users, n_news)

    def pair_logits(self, users, news, pair_dense=None) -> np.ndarray:
        """Logits [R] of the pairs (users[r], news[r]); `pair_dense` as FactorizedScorer's."""
        from common.columns import PAIR_DENSE, USER_VEC
        users, news = self._as_sides(users, news)
        rows = len(users[USER_VEC])
        out = np.empty(rows, dtype=np.float32)
        for start in range(0, rows, self.max_pairs):
            chunk = slice(start, start + self.max_pairs)
            inputs = {k: v[chunk] for side in (users, news) for k, v in side.items()}
            if pair_dense is not None:
                inputs[PAIR_DENSE] = np.asarray(pair_dense[chunk], np.float32)
            out[chunk] = self._model_logits(inputs)
        return out

    def prepare_news(self, news):
        """The news side as it is: the model call has nothing to keep between batches."""
        return news

    def memory(self, n_news: int) -> tuple[int, int]:
        return plain_memory(self._width, self.max_pairs)


def make_scorer(model, mode: str = "auto"):
    """`factorized`, `plain`, or `auto` (factorized where the model's form allows it)."""
    if mode not in ("auto", "factorized", "plain"):
        raise ValueError(f"scoring mode must be auto, factorized or plain, got {mode!r}")
    if mode == "plain":
        return PlainScorer(model)
    try:
        return FactorizedScorer(model)
    except NotFactorizable:
        if mode == "factorized":
            raise
        return PlainScorer(model)
