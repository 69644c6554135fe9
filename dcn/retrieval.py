"""The cascade's retrieval stage: a low-rank approximation of the DCN's own logit matrix, cheap
enough to rank the whole pool for every user, and the short lists it picks (numpy only).

Write Z for the exact logits of users (rows) against the pool's news (columns). Choose L_u
*landmark users* (saved with the model at export, dcn/landmarks.py) and L_n *landmark news*
(a seeded sample of the day's pool). With R = Z[landmark users, :] [L_u, P] and
A = [Z[landmark users, landmark news], 1] [L_u, L_n + 1], every news item's column is regressed
on the landmark news' columns (ridge):

    beta = (A^T A + lambda I)^-1 A^T R                          [L_n + 1, P], once per pool
    r(u, n) = [Z(u, landmark news), 1] . beta[:, n]             L_n + 1 multiply-adds per pair

(a Nystrom / CUR approximation: Z ~ C A^+ R). Nothing is trained: both factors are the DCN's
exact logits, so the approximation holds for news and users the model never saw, as long as
the logit matrix is close to rank L_n. A scoring task pays, besides the pairs' inner products,
L_u x P exact logits once per pool (beta) and L_n exact logits per user (its landmark row).
lambda is `ridge` times the mean of diag(A^T A).
"""
from __future__ import annotations

import hashlib
import io

import numpy as np

# The landmarks beside an exported model (dcn/export.py).
RETRIEVAL_FILE = "retrieval.npz"


def arrays_digest(arrays: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        value = np.asarray(arrays[key])
        digest.update(key.encode())
        digest.update(str(value.dtype).encode() + str(value.shape).encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def scorer_digest(scorer) -> str:
    """A digest of an exact scorer's weights (the factorized scorer's arrays): the model a
    retrieval's landmarks were chosen for, checked when both are loaded for a cascade."""
    return arrays_digest(scorer.to_arrays())


class PoolIndex:
    """A pool ready for retrieval: its landmark news (indices into the pool) and beta."""

    def __init__(self, landmark_news: np.ndarray, beta: np.ndarray):
        self.landmark_news = landmark_news
        self.beta = beta.astype(np.float32)          # [L_n + 1, P]


class LandmarkRetrieval:
    """The retrieval score of the module docstring, for one model (`teacher`: its digest)."""

    ARRAYS_FORMAT = 2

    def __init__(self, landmark_users: np.ndarray, landmark_news: int, ridge: float, seed: int,
                 teacher: str):
        self.landmark_users = np.asarray(landmark_users, np.float32)   # user sides [L_u, du']
        self.landmark_news = int(landmark_news)
        self.ridge, self.seed, self.teacher = float(ridge), int(seed), teacher

    def width(self, n_news: int) -> int:
        """Multiply-adds per (user, news) pair on a pool of `n_news`."""
        return min(self.landmark_news, n_news) + 1

    def index_pool(self, scorer, news, batch_users: int) -> PoolIndex:
        """beta for the pool `news` (the scorer's prepared news side), the landmark users'
        exact logits computed `batch_users` at a time."""
        n_news = len(news)
        rng = np.random.default_rng(self.seed)
        chosen = np.sort(rng.choice(n_news, min(self.landmark_news, n_news), replace=False))
        users = self.landmark_users
        exact = np.concatenate([scorer.logits(users[start:start + batch_users], news)
                                for start in range(0, len(users), batch_users)]).astype(np.float64)
        design = np.concatenate([exact[:, chosen], np.ones((len(users), 1))], axis=1)
        gram = design.T @ design
        penalty = self.ridge * max(float(np.mean(np.diag(gram))), 1e-12)
        beta = np.linalg.solve(gram + penalty * np.eye(len(gram)), design.T @ exact)
        return PoolIndex(chosen, beta)

    def user_embeddings(self, scorer, users: np.ndarray, news, index: PoolIndex) -> np.ndarray:
        """[Z(u, landmark news), 1] for each user side of `users` [B, L_n + 1]."""
        lists = np.broadcast_to(index.landmark_news, (len(users), len(index.landmark_news)))
        exact = scorer.short_list_logits(users, news, lists)
        return np.concatenate([exact, np.ones((len(users), 1), np.float32)], axis=1)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, format=np.array(self.ARRAYS_FORMAT), landmark_users=self.landmark_users,
                 landmark_news=np.array(self.landmark_news), ridge=np.array(self.ridge),
                 seed=np.array(self.seed), teacher=np.array(self.teacher))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LandmarkRetrieval":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            if int(arrays["format"]) != cls.ARRAYS_FORMAT:
                raise ValueError(f"retrieval arrays of format {int(arrays['format'])}, expected "
                                 f"{cls.ARRAYS_FORMAT}: retrain the model")
            return cls(arrays["landmark_users"], int(arrays["landmark_news"]),
                       float(arrays["ridge"]), int(arrays["seed"]), str(arrays["teacher"]))


def short_lists(user_embeddings: np.ndarray, beta: np.ndarray, size: int,
                excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each user's `size` best news by the retrieval score `user_embeddings @ beta`, the
    excluded pairs (the user's clicked news) never among them: (indices [B, m] into the pool,
    m = min(size, P), in ascending pool order so that the exact stage breaks ties as the exact
    modes do; valid [B, m], false where a user has fewer than m eligible news)."""
    scores = user_embeddings @ beta
    if excluded is not None:
        scores[excluded] = -np.inf
    n_news = scores.shape[1]
    if size >= n_news:
        lists = np.broadcast_to(np.arange(n_news), scores.shape).copy()
    else:
        lists = np.sort(np.argpartition(-scores, size - 1, axis=1)[:, :size], axis=1)
    valid = np.isfinite(np.take_along_axis(scores, lists, axis=1))
    return lists, valid
