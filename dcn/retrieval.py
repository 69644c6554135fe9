"""The cascade's retrieval stage: a two-tower score distilled from the DCN (dcn/distill.py),
cheap enough to rank the whole pool for every user, and the short lists it picks (numpy only).

The towers read the same sides as the exact scorer (dcn/scoring.py `user_side`, `news_side`):
a user side u' = [u, user_dense] (u = user_vec, width dv) and a news side n' = [n, news_dense,
category embeddings] with, when the model has the `topic` feature, the news item's topic
vector t appended. With two small ReLU networks f (user) and g (news, plus a scalar bias
head c) the score is

    r(u', n') = f(u') . g(n') + u . (alpha n + beta t) + c(n'),

the first term a learned interaction, the second the DCN's own pair features (the dot product
of the two vectors and the topic affinity) with learned weights. As one inner product,

    r = E_u . E_n,   E_u = [f(u'), u, 1],   E_n = [g(n'), alpha n + beta t, c(n')],

so a task embeds its pool once ([P, r + dv + 1]) and its users per batch, and ranks the pool
with one matrix product: r + dv + 1 multiply-adds per pair, against the DCN's
H1 * H2 (the deep layers' widths) for an exact logit.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np

# The tower beside an exported model (dcn/export.py) and the digest of the model's exact
# scorer it was distilled from.
RETRIEVAL_FILE = "retrieval.npz"


def _mlp(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Dense layers with ReLU between them (none after the last)."""
    for i, (kernel, bias) in enumerate(layers):
        x = x @ kernel + bias
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def scorer_digest(scorer) -> str:
    """A digest of an exact scorer's weights: the teacher a tower was distilled from, checked
    when both are loaded for a cascade. The factorized scorer's arrays, or the Keras model's
    weights for the plain scorer."""
    if hasattr(scorer, "to_arrays"):
        return arrays_digest(scorer.to_arrays())
    return arrays_digest({f"weight_{i}": w for i, w in enumerate(scorer.model.get_weights())})


def arrays_digest(arrays: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        value = np.asarray(arrays[key])
        digest.update(key.encode())
        digest.update(str(value.dtype).encode() + str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


class RetrievalTower:
    """The distilled two-tower score; see the module docstring."""

    ARRAYS_FORMAT = 1

    def __init__(self, user_layers, news_layers, bias_layer, alpha: float, beta: float,
                 widths: dict, teacher: str, fit: dict | None = None):
        self.user_layers = [(np.asarray(k, np.float32), np.asarray(b, np.float32)) for k, b in user_layers]
        self.news_layers = [(np.asarray(k, np.float32), np.asarray(b, np.float32)) for k, b in news_layers]
        self.bias_layer = tuple(np.asarray(a, np.float32) for a in bias_layer)
        self.alpha, self.beta = float(alpha), float(beta)
        self.widths = {k: int(v) for k, v in widths.items()}   # dv, du, dn, topic (0 or dv)
        self.teacher = teacher
        self.fit = dict(fit or {})

    @property
    def width(self) -> int:
        """Multiply-adds per (user, news) pair: the embeddings' width."""
        return self.user_layers[-1][0].shape[1] + self.widths["dv"] + 1

    def user_embedding(self, users: np.ndarray) -> np.ndarray:
        """E_u [B, width] of user sides [B, du']."""
        users = np.asarray(users, np.float32)
        learned = _mlp(users, self.user_layers)
        return np.concatenate([learned, users[:, :self.widths["dv"]],
                               np.ones((len(users), 1), np.float32)], axis=1)

    def _news_terms(self, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(g(n') [P, r], c(n') [P, 1]) of news sides without topic vectors."""
        hidden = _mlp(body, self.news_layers[:-1])
        hidden = np.maximum(hidden, 0.0) if len(self.news_layers) > 1 else hidden
        learned = hidden @ self.news_layers[-1][0] + self.news_layers[-1][1]
        return learned, hidden @ self.bias_layer[0] + self.bias_layer[1]

    def news_embedding(self, news: np.ndarray) -> np.ndarray:
        """E_n [P, width] of news sides [P, dn' (+ dv with the topic vector)]."""
        news = np.asarray(news, np.float32)
        dv, dn = self.widths["dv"], self.widths["dn"]
        learned, bias = self._news_terms(news[:, :dn])
        pair = self.alpha * news[:, :dv]
        if self.widths["topic"]:
            if news.shape[1] < dn + dv:
                raise ValueError("the retrieval tower needs the news side's topic vectors")
            pair = pair + self.beta * news[:, dn:dn + dv]
        return np.concatenate([learned, pair, bias], axis=1).astype(np.float32)

    def pair_scores(self, users: np.ndarray, news: np.ndarray,
                    topic_affinity: np.ndarray | None = None) -> np.ndarray:
        """r of the pairs (users[i], news[i]) ([R]), for rows that carry each pair's topic
        affinity u . t (`topic_affinity` [R], as feature rows do) instead of topic vectors."""
        users = np.asarray(users, np.float32)
        news = np.asarray(news, np.float32)
        dv, dn = self.widths["dv"], self.widths["dn"]
        learned, bias = self._news_terms(news[:, :dn])
        user = self.user_embedding(users)
        r = learned.shape[1]
        score = np.einsum("ij,ij->i", user[:, :r], learned) + bias[:, 0] \
            + self.alpha * np.einsum("ij,ij->i", users[:, :dv], news[:, :dv])
        if self.widths["topic"]:
            score = score + self.beta * np.asarray(topic_affinity, np.float32).reshape(-1)
        return score

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"format": np.array(self.ARRAYS_FORMAT), "alpha": np.array(self.alpha),
                  "beta": np.array(self.beta), "teacher": np.array(self.teacher),
                  "user_layers": np.array(len(self.user_layers)),
                  "news_layers": np.array(len(self.news_layers)),
                  "bias_kernel": self.bias_layer[0], "bias_bias": self.bias_layer[1]}
        for key, value in self.widths.items():
            arrays[f"width_{key}"] = np.array(value)
        for key, value in self.fit.items():
            arrays[f"fit_{key}"] = np.array(value)
        for side, layers in (("user", self.user_layers), ("news", self.news_layers)):
            for i, (kernel, bias) in enumerate(layers):
                arrays[f"{side}_kernel_{i}"], arrays[f"{side}_bias_{i}"] = kernel, bias
        return arrays

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **self.to_arrays())
        return buffer.getvalue()

    @classmethod
    def from_arrays(cls, arrays) -> "RetrievalTower":
        if int(arrays["format"]) != cls.ARRAYS_FORMAT:
            raise ValueError(f"retrieval tower arrays of format {int(arrays['format'])}, "
                             f"expected {cls.ARRAYS_FORMAT}")
        layers = {side: [(arrays[f"{side}_kernel_{i}"], arrays[f"{side}_bias_{i}"])
                         for i in range(int(arrays[f"{side}_layers"]))] for side in ("user", "news")}
        widths = {key[len("width_"):]: int(arrays[key]) for key in arrays if key.startswith("width_")}
        fit = {key[len("fit_"):]: arrays[key].item() for key in arrays if key.startswith("fit_")}
        return cls(layers["user"], layers["news"], (arrays["bias_kernel"], arrays["bias_bias"]),
                   float(arrays["alpha"]), float(arrays["beta"]), widths, str(arrays["teacher"]), fit)

    @classmethod
    def from_bytes(cls, data: bytes) -> "RetrievalTower":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls.from_arrays({key: arrays[key] for key in arrays.files})


def short_lists(user_embeddings: np.ndarray, news_embeddings: np.ndarray, size: int,
                excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each user's `size` best news by the retrieval score, the excluded pairs (the user's
    clicked news) never among them: (indices [B, m] into the pool, m = min(size, P), in
    ascending pool order so that the exact stage breaks ties as the exact modes do; valid
    [B, m], false where a user has fewer than m eligible news)."""
    scores = user_embeddings @ news_embeddings.T
    if excluded is not None:
        scores[excluded] = -np.inf
    n_news = scores.shape[1]
    if size >= n_news:
        lists = np.broadcast_to(np.arange(n_news), scores.shape).copy()
    else:
        lists = np.sort(np.argpartition(-scores, size - 1, axis=1)[:, :size], axis=1)
    valid = np.isfinite(np.take_along_axis(scores, lists, axis=1))
    return lists, valid
