"""Scoring users against a candidate matrix: the plain model call, the exact factorized form,
and exact top-k selection.

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

from dcn.model import (CROSS_LAYER_PREFIX, DEEP_LAYER_PREFIX, LOGIT_LAYER, model_spec)


class NotFactorizable(ValueError):
    """The model's form has no exact factorized scoring (matrix cross layers)."""


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


class FactorizedScorer:
    """Exact logits of every (user, news) pair of a batch, for DCN models with vector cross
    layers (or none), in numpy. See the module docstring for the algebra."""

    def __init__(self, model):
        spec = model_spec(model)
        if spec["cross_layers"] and spec["cross_kind"] != "vector":
            raise NotFactorizable(f"cross_kind {spec['cross_kind']!r} has no factorized form")
        self.du, self.dn = spec["user_dim"], spec["news_dim"]
        self.structure = spec["structure"]
        d = self.du + self.dn
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

    def _cross_scalar(self, users: np.ndarray, news: np.ndarray) -> np.ndarray:
        """a_L for every pair, [B, P]."""
        pu = users @ self.cross_w[:self.du]                                      # [B, L]
        qn = news @ self.cross_w[self.du:]                                       # [P, L]
        a = np.ones((len(users), len(news)), dtype=np.float32)
        for layer, cw in enumerate(self.cross_cw):
            a = a * (1.0 + pu[:, layer, None] + qn[None, :, layer]) + np.float32(cw)
        return a

    def _split_dot(self, users, news, kernel, a=None, const=0.0):
        """`x @ kernel` for every pair where x = x0 * a + c (a=None: x = x0): [B, P, out]."""
        ku = (users @ kernel[:self.du].astype(np.float32))[:, None, :]
        kn = (news @ kernel[self.du:].astype(np.float32))[None, :, :]
        base = ku + kn
        if a is not None:
            base = base * a[:, :, None]
        return base + np.asarray(const, dtype=np.float32)

    def _deep_rest(self, h: np.ndarray) -> np.ndarray:
        for kernel, bias in self.deep[1:]:
            h = _relu(h @ kernel.astype(np.float32) + bias.astype(np.float32))
        return h

    def logits(self, users: np.ndarray, news: np.ndarray) -> np.ndarray:
        """Logits [B, P] of every pair of `users` [B, du] and `news` [P, dn]."""
        users = np.asarray(users, dtype=np.float32)
        news = np.asarray(news, dtype=np.float32)
        has_cross = self.cross_w.shape[1] > 0
        a = self._cross_scalar(users, news) if has_cross else None
        w, b = self.logit_kernel, float(self.logit_bias[0])
        d = self.du + self.dn
        if self.structure == "parallel":
            cross_part = self._split_dot(users, news, w[:d], a, self.cross_c @ w[:d])[..., 0]
            kernel, bias = self.deep[0]
            h = self._deep_rest(_relu(self._split_dot(users, news, kernel, None, bias)))
            return cross_part + (h @ w[d:].astype(np.float32))[..., 0] + b
        if not self.deep:                                  # pure cross (or logistic regression)
            const = self.cross_c @ w if has_cross else 0.0
            return self._split_dot(users, news, w, a, const)[..., 0] + b
        kernel, bias = self.deep[0]
        const = (self.cross_c @ kernel if has_cross else 0.0) + bias
        h = self._deep_rest(_relu(self._split_dot(users, news, kernel, a, const)))
        return (h @ w.astype(np.float32))[..., 0] + b


class PlainScorer:
    """Logits of every (user, news) pair through the Keras model itself, in chunks of pairs."""

    def __init__(self, model, max_pairs: int = 65536):
        import tensorflow as tf
        self.model = model
        self.max_pairs = max_pairs
        self._call = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)

    def logits(self, users: np.ndarray, news: np.ndarray) -> np.ndarray:
        from common.columns import NEWS_VEC, USER_VEC
        users = np.asarray(users, dtype=np.float32)
        news = np.asarray(news, dtype=np.float32)
        n_users, n_news = len(users), len(news)
        out = np.empty(n_users * n_news, dtype=np.float32)
        rows_per_chunk = max(1, self.max_pairs // max(n_news, 1))
        for start in range(0, n_users, rows_per_chunk):
            block = users[start:start + rows_per_chunk]
            inputs = {USER_VEC: np.repeat(block, n_news, axis=0),
                      NEWS_VEC: np.tile(news, (len(block), 1))}
            out[start * n_news:(start + len(block)) * n_news] = np.asarray(self._call(inputs))[:, 0]
        return out.reshape(n_users, n_news)


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


def top_k(scores: np.ndarray, k: int, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top k of each row of `scores` [B, P], best first; ties go to the lower column
    index. `excluded` [B, P] (bool) removes pairs. Returns (indices [B, k'], valid [B, k'])
    where k' = min(k, P) and `valid` is false past a row's last eligible column.

    Partial selection (argpartition) picks candidates in O(P); only the k chosen are sorted.
    """
    scores = np.asarray(scores, dtype=np.float64).copy()
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if excluded is not None:
        scores[excluded] = -np.inf
    indices = np.empty((n_rows, k), dtype=np.int64)
    valid = np.empty((n_rows, k), dtype=bool)
    for row in range(n_rows):
        s = scores[row]
        chosen = np.argpartition(-s, k - 1)[:k] if k < n_cols else np.arange(n_cols)
        kth = s[chosen].min()
        above = np.flatnonzero(s > kth)
        tied = np.flatnonzero(s == kth)[:k - len(above)]
        picked = np.concatenate([above, tied])
        order = np.lexsort((picked, -s[picked]))
        indices[row] = picked[order]
        valid[row] = np.isfinite(s[indices[row]])
    return indices, valid
