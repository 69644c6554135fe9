"""The post-processing of encoder vectors (features/vector_transform.py) on tiny inputs whose
results are computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from features import vector_transform as T


def settings(kind: str, dim: int = 0, normalize: bool = False) -> T.Settings:
    return T.Settings(kind, dim, 17, normalize)


def fitted(kind: str, x: np.ndarray, dim: int = 0, batches: int = 1) -> T.Fit:
    n, total, gram = T.partial_moments(np.array_split(x, batches))
    return T.fit_from_moments(settings(kind, dim), n, total, gram)


# mean 0, covariance diag(2, 0.5): the principal directions are the axes
CROSS = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def test_center_subtracts_the_catalogue_mean():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    fit = fitted("center", x)
    np.testing.assert_allclose(fit.mean, [2.0, 3.0])
    np.testing.assert_allclose(T.apply(x, settings("center"), fit), [[-1, -1], [1, 1]])
    np.testing.assert_allclose(T.apply(np.array([[2.0, 5.0]]), settings("center"), fit), [[0, 2]])


def test_pca_keeps_the_leading_direction():
    fit = fitted("pca", CROSS, dim=1)
    np.testing.assert_allclose(T.apply(CROSS, settings("pca", 1), fit).ravel(), [2, -2, 0, 0],
                               atol=1e-6)


def test_whitening_scales_every_direction_to_unit_variance():
    fit = fitted("whiten", CROSS)
    y = T.apply(CROSS, settings("whiten"), fit)
    # y = x / sqrt(lambda): 2 / sqrt(2) and 1 / sqrt(0.5) are both sqrt(2)
    np.testing.assert_allclose(np.abs(y).max(axis=0), [np.sqrt(2), np.sqrt(2)], rtol=1e-5)
    np.testing.assert_allclose(y.T @ y / len(y), np.eye(2), atol=1e-5)


def test_whitening_a_random_catalogue_gives_identity_covariance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 6)) @ rng.standard_normal((6, 6)) + 5.0
    fit = fitted("whiten", x, dim=4)
    y = T.apply(x, settings("whiten", 4), fit)
    assert y.shape == (2000, 4)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(4), atol=1e-3)


def test_moments_summed_over_tasks_give_the_same_fit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((101, 5))
    whole, split = fitted("whiten", x, 3), fitted("whiten", x, 3, batches=7)
    np.testing.assert_allclose(whole.mean, split.mean, rtol=1e-6)
    np.testing.assert_allclose(whole.matrix, split.matrix, rtol=1e-4, atol=1e-6)


def test_fit_round_trips_and_its_digest_names_it():
    rng = np.random.default_rng(2)
    fit = fitted("pca", rng.standard_normal((50, 4)), 2)
    again = T.Fit.from_bytes(fit.to_bytes())
    assert again.digest() == fit.digest() and again.rows == 50 and again.kind == "pca"
    np.testing.assert_array_equal(again.matrix, fit.matrix)
    other = fitted("pca", rng.standard_normal((50, 4)), 2)
    assert other.digest() != fit.digest()


def test_project_is_unfitted_and_normalizes():
    x = np.array([[3.0, 4.0, 0.0]])
    y = T.apply(x, settings("project", normalize=True), None)
    np.testing.assert_allclose(y, [[0.6, 0.8, 0.0]], rtol=1e-6)
    assert T.apply(x, settings("project", 2), None).shape == (1, 2)


def test_a_fitted_kind_without_its_fit_is_refused():
    with pytest.raises(ValueError, match="needs its fit"):
        T.apply(CROSS, settings("whiten"), None)
    with pytest.raises(ValueError, match="at most 2"):
        fitted("whiten", CROSS, dim=3)


def test_vectors_of_another_fit_are_refused_by_the_lineage_check():
    from dcn.export import check_lineage

    identity = {"encoder": "e5-small", "postprocess": "whiten", "dim": 128, "id": "abc",
                "fit": "f1"}
    check_lineage({"version": "v1", "news_vectors": identity}, dict(identity), "rows")
    with pytest.raises(ValueError, match="fit: model 'f1', features 'f2'"):
        check_lineage({"version": "v1", "news_vectors": identity}, dict(identity, fit="f2"),
                      "rows")
