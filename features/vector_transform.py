"""Post-processing that turns an encoder's vectors into an identity's vectors (`embed.postprocess`).

With x an encoder's vector (width d), k = `embed.projection_dim` (0: k = d), and, for the fitted
kinds, mu and Sigma = U diag(lambda) U^T the mean and covariance of the encoder's vectors over
the catalogue they were fitted on (eigenvalues in decreasing order):

- ``project``: y = x R, with R a seeded Gaussian (d x k) / sqrt(k) (Johnson-Lindenstrauss; no
  projection when k = d). Nothing is fitted.
- ``center``:  y = (x - mu) R. Sentence vectors of the BERT family share one dominant direction
  (they are anisotropic: any two titles have a high cosine); removing the mean restores the
  contrast cosine and dot products rely on.
- ``pca``:     y = (x - mu) U_k, the k leading principal directions.
- ``whiten``:  y = (x - mu) U_k diag(lambda_k + eps)^(-1/2), PCA whitening ("BERT-whitening"):
  the k leading directions, each scaled to unit variance; eps = 1e-6 lambda_1 keeps
  near-zero directions finite.

Then y / ||y|| when `embed.normalize`.

A fit (mu, and the matrix of ``pca`` and ``whiten``) is made once for a vectors identity, from the
encoder vectors of the first catalogue it embeds, and stored beside its partitions
(features/fresh_news.py). Every news embedded later gets that same transform, so a news's
vector never changes; the fit's digest is part of the identity, so vectors of two fits are
never mixed (dcn/export.check_lineage).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np

KINDS = ("project", "center", "pca", "whiten")
FITTED = ("center", "pca", "whiten")
# relative floor of the whitening's eigenvalues: a direction of no variance stays finite
EIGEN_FLOOR = 1e-6


@dataclass(frozen=True)
class Settings:
    """What shapes the transform besides the fit (from the configuration)."""
    kind: str
    projection_dim: int
    seed: int
    normalize: bool

    def output_dim(self, in_dim: int) -> int:
        return self.projection_dim or in_dim


@dataclass(frozen=True)
class Fit:
    """A fitted transform: y = (x - mean) @ matrix (matrix None: no matrix)."""
    kind: str
    mean: np.ndarray
    matrix: np.ndarray | None
    rows: int

    def digest(self) -> str:
        hasher = hashlib.sha256(self.kind.encode())
        hasher.update(np.ascontiguousarray(self.mean, dtype=np.float32).tobytes())
        if self.matrix is not None:
            hasher.update(np.ascontiguousarray(self.matrix, dtype=np.float32).tobytes())
        return hasher.hexdigest()[:12]

    def to_bytes(self) -> bytes:
        arrays = {"mean": self.mean.astype(np.float32), "rows": np.int64(self.rows),
                  "kind": np.array(self.kind)}
        if self.matrix is not None:
            arrays["matrix"] = self.matrix.astype(np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Fit":
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(kind=str(arrays["kind"]), mean=arrays["mean"],
                       matrix=arrays["matrix"] if "matrix" in arrays else None,
                       rows=int(arrays["rows"]))


@lru_cache(maxsize=4)
def projection_matrix(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    """A seeded Gaussian random projection (Johnson-Lindenstrauss): it keeps distances and
    cosines between vectors approximately, whatever the encoder."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((in_dim, out_dim)) / np.sqrt(out_dim)).astype(np.float32)


def partial_moments(batches: Iterator[np.ndarray]) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, sum of x, sum of x x^T) over the row batches, in float64: one Spark task's share of
    a fit, summed over tasks by :func:`fit_from_moments`."""
    n, total, gram = 0, None, None
    for batch in batches:
        batch = np.asarray(batch, dtype=np.float64)
        if not len(batch):
            continue
        if total is None:
            total, gram = np.zeros(batch.shape[1]), np.zeros((batch.shape[1],) * 2)
        n += len(batch)
        total += batch.sum(axis=0)
        gram += batch.T @ batch
    return n, total, gram


def fit_from_moments(settings: Settings, n: int, total: np.ndarray, gram: np.ndarray) -> Fit:
    """The fit of `settings.kind` from the summed moments of n vectors."""
    if settings.kind not in FITTED:
        raise ValueError(f"embed.postprocess {settings.kind!r} is not fitted")
    if n < 2:
        raise ValueError(f"cannot fit embed.postprocess={settings.kind} on {n} vector(s)")
    mean = total / n
    if settings.kind == "center":
        matrix = None
        in_dim = len(mean)
        if settings.projection_dim and settings.projection_dim != in_dim:
            matrix = projection_matrix(in_dim, settings.projection_dim, settings.seed)
        return Fit("center", mean.astype(np.float32), matrix, n)
    k = settings.output_dim(len(mean))
    if k > len(mean):
        raise ValueError(f"embed.projection_dim={k} is wider than the encoder's {len(mean)} "
                         f"dimensions: {settings.kind} can keep at most {len(mean)}")
    covariance = gram / n - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh((covariance + covariance.T) / 2)
    order = np.argsort(eigenvalues)[::-1][:k]
    values, vectors = np.maximum(eigenvalues[order], 0.0), eigenvectors[:, order]
    # a deterministic sign: each direction's largest component is positive
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(k)])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    if settings.kind == "whiten":
        vectors = vectors / np.sqrt(values + EIGEN_FLOOR * max(values[0], 1e-12))
    return Fit(settings.kind, mean.astype(np.float32), vectors.astype(np.float32), n)


def apply(vectors: np.ndarray, settings: Settings, fit: Fit | None) -> np.ndarray:
    """The identity's vectors from the encoder's (rows of `vectors`)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if settings.kind in FITTED:
        if fit is None or fit.kind != settings.kind:
            raise ValueError(f"embed.postprocess={settings.kind} needs its fit, got "
                             f"{None if fit is None else fit.kind}")
        if vectors.shape[1] != len(fit.mean):
            raise ValueError(f"vectors of width {vectors.shape[1]} given to a fit of width "
                             f"{len(fit.mean)}")
        vectors = vectors - fit.mean
        if fit.matrix is not None:
            vectors = vectors @ fit.matrix
    elif settings.projection_dim and settings.projection_dim != vectors.shape[1]:
        vectors = vectors @ projection_matrix(vectors.shape[1], settings.projection_dim,
                                              settings.seed)
    if settings.normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
    return vectors.astype(np.float32)
