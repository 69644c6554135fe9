"""Factorized scoring equals the plain model call; top-k equals a brute-force sort."""
from __future__ import annotations

import numpy as np
import pytest

from dcn.model import build_dcn
from dcn.batching import top_k
from dcn.scoring import FactorizedScorer, NotFactorizable, PlainScorer, make_scorer


def randomize(model, seed):
    """Non-trivial weights everywhere (biases included), so every term of the algebra counts."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("cross_layers,deep_units,structure", [
    (3, (32, 16), "stacked"), (2, (24,), "stacked"), (3, (32, 16), "parallel"),
    (2, (), "stacked"), (0, (32, 16), "stacked"), (0, (), "stacked"), (1, (8, 8, 8), "parallel"),
])
def test_factorized_equals_plain(cross_layers, deep_units, structure):
    model = randomize(build_dcn(12, 20, cross_layers=cross_layers, deep_units=deep_units,
                                structure=structure, dropout=0.2, seed=1), seed=cross_layers)
    rng = np.random.default_rng(0)
    users, news = rng.normal(size=(7, 12)), rng.normal(size=(33, 20))
    plain = PlainScorer(model, max_pairs=50).logits(users, news)
    fact = FactorizedScorer(model).logits(users, news)
    assert fact.shape == (7, 33)
    np.testing.assert_allclose(fact, plain, rtol=1e-5, atol=1e-5)
    # and the plain scorer agrees with a direct call on one pair
    direct = model({"user_vec": users[3:4].astype(np.float32), "news_vec": news[5:6].astype(np.float32)})
    assert abs(float(direct[0, 0]) - plain[3, 5]) < 1e-5


def test_matrix_cross_is_not_factorizable():
    model = build_dcn(4, 4, cross_kind="matrix", deep_units=(8,))
    with pytest.raises(NotFactorizable):
        FactorizedScorer(model)
    assert isinstance(make_scorer(model, "auto"), PlainScorer)
    assert isinstance(make_scorer(build_dcn(4, 4, deep_units=(8,)), "auto"), FactorizedScorer)
    with pytest.raises(NotFactorizable):
        make_scorer(model, "factorized")


def brute_top_k(scores, k, excluded):
    result = []
    for row, mask in zip(scores, excluded):
        eligible = [(-s, j) for j, s in enumerate(row) if not mask[j]]
        result.append([j for _, j in sorted(eligible)[:k]])
    return result


def test_top_k_matches_brute_force_with_ties_and_exclusions():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, size=(200, 40)).astype(float)   # many ties
    excluded = rng.random((200, 40)) < 0.3
    excluded[0, :] = True                                         # nothing eligible
    excluded[1, :3], excluded[1, 3:] = False, True                # fewer eligible than k
    indices, valid = top_k(scores, 10, excluded)
    expected = brute_top_k(scores, 10, excluded)
    for row in range(200):
        assert [int(j) for j, v in zip(indices[row], valid[row]) if v] == expected[row]
    assert not valid[0].any() and valid[1].sum() == 3


def test_top_k_hand_example():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.3]])
    indices, valid = top_k(scores, 3, np.array([[False, False, False, False, True]]))
    assert indices.tolist() == [[1, 3, 2]] and valid.all()


@pytest.mark.slow
def test_scoring_stays_within_its_memory_budget():
    """The job's scoring function, in a fresh process, against a 10,000-news pool: the users
    per batch come from score.memory_budget_mb, and the peak resident memory the scoring adds
    stays within it (a fixed batch of 64 users would need about 0.9 GB here)."""
    from bench.score_memory_bench import measure
    result = measure(budget_mb=128, n_news=10_000, n_users=200, cap=64)
    assert result["rows"] == 200 * 10
    assert 1 <= result["users_per_batch"] < 64
    assert result["peak_extra_mb"] <= 128


def test_a_budget_too_small_for_the_pool_is_refused_on_the_driver():
    from common.errors import UserInputError
    from common.config import load_config
    from dcn.spec import dcn_spec
    from dcn.batching import spec_memory, users_per_batch
    from serving.tasks import check_memory_budget

    spec = dcn_spec(128, 128, cross_layers=3, deep_units=(256, 128))
    fixed, per_pair = spec_memory(spec, 10_000)
    assert users_per_batch((fixed, per_pair), 10_000, fixed + 3 * per_pair * 10_000, 64) == 3
    assert users_per_batch((fixed, per_pair), 10_000, 2 ** 40, 64) == 64
    cfg = load_config(overrides=["score.memory_budget_mb=8"])
    with pytest.raises(UserInputError, match="score.memory_budget_mb is 8 MB but scoring one "
                                             "user against 10000 candidates needs 30 MB"):
        check_memory_budget(cfg, {"model_spec": spec}, 10_000)


def test_the_exported_factorized_scorer_needs_no_tensorflow(tmp_path):
    """export_model saves the factorized scorer's arrays; restored in a fresh process they
    give the model's exact factorized logits, and TensorFlow is never imported."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from common.config import load_config
    from dcn import export

    cfg = load_config(overrides=[f"paths.work={tmp_path}"])
    model = build_dcn(6, 5, cross_layers=2, deep_units=(7, 3), seed=4)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    version = export.export_model(cfg, model, {"user_dim": 6, "news_dim": 5})
    folder = export.model_folder(cfg, version)
    users, news = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(9, 5)).astype(np.float32)
    np.save(tmp_path / "u.npy", users)
    np.save(tmp_path / "n.npy", news)
    code = ("import sys, json, numpy as np; from dcn import export; "
            f"s = export.load_factorized({folder!r}); "
            f"l = s.logits(np.load({str(tmp_path / 'u.npy')!r}), np.load({str(tmp_path / 'n.npy')!r})); "
            "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'logits': l.tolist()}))")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          check=True, timeout=120)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["tf"] is False
    np.testing.assert_array_equal(np.asarray(got["logits"], np.float32),
                                  FactorizedScorer(model).logits(users, news))
    matrix = build_dcn(4, 4, cross_layers=1, cross_kind="matrix", deep_units=(3,))
    plain_only = export.export_model(cfg, matrix, {"user_dim": 4, "news_dim": 4})
    assert export.load_factorized(export.model_folder(cfg, plain_only)) is None


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_factorized_scoring_with_side_features_equals_the_model(structure):
    """User-side and news-side features stay on their sides and u . v is the one pair term:
    the factorized logits equal the model's on every pair, and so do both scorers' logits of
    pairs given row by row (pair_logits)."""
    from dcn.model import build_dcn
    from dcn.scoring import FactorizedScorer, PlainScorer
    model = build_dcn(6, 6, deep_units=[8, 4], structure=structure, seed=2,
                      features=["user_stats", "news_stats", "category", "dot", "topic"],
                      user_dense_mean=[1.0, 2.0], user_dense_std=[1.0, 3.0],
                      pair_dense_mean=[0.2], pair_dense_std=[0.7],
                      news_dense_mean=[0.0, 1.0, 0.0, 0.1], news_dense_std=[1.0, 2.0, 3.0, 0.2],
                      category_buckets=7, category_dim=3)
    rng = np.random.default_rng(1)
    for variable in model.variables:      # non-zero biases and embeddings
        if "embeddings" in variable.path or variable.path.endswith(("/b", "/bias")):
            variable.assign(rng.normal(size=variable.shape).astype("f") * 0.3)
    uv, ud = rng.normal(size=(4, 6)), rng.normal(size=(4, 2))
    nv, nd = rng.normal(size=(5, 6)), rng.normal(size=(5, 4))
    cat, sub, topic = rng.integers(0, 7, 5), rng.integers(0, 7, 5), rng.normal(size=(5, 6))
    fact, plain = FactorizedScorer(model), PlainScorer(model)
    expected = plain.logits(plain.user_side(uv, ud), plain.news_side(nv, nd, cat, sub, topic))
    got = fact.logits(fact.user_side(uv, ud), fact.news_side(nv, nd, cat, sub, topic))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)   # float32 sums
    restored = FactorizedScorer.from_arrays(fact.to_arrays())
    np.testing.assert_array_equal(
        restored.logits(restored.user_side(uv, ud), restored.news_side(nv, nd, cat, sub, topic)),
        got)
    # Pairs given row by row (the evaluation's dev rows): the same kernel, the topic affinity
    # from the news' topic_vec or from the rows' own pair_dense (as build_features computes it).
    u, n = np.repeat(np.arange(4), 5), np.tile(np.arange(5), 4)
    pair_dense = np.sum(uv[u].astype(np.float32).astype(np.float64) * topic[n].astype(np.float32),
                        axis=1, keepdims=True)
    for scorer, full in ((fact, got), (plain, expected)):
        users = scorer.user_side(uv[u], ud[u])
        rows = scorer.pair_logits(users, scorer.news_side(nv[n], nd[n], cat[n], sub[n], topic[n]))
        np.testing.assert_allclose(rows, full.reshape(-1), rtol=1e-5, atol=1e-5)
        given = scorer.pair_logits(users, scorer.news_side(nv[n], nd[n], cat[n], sub[n]), pair_dense)
        np.testing.assert_allclose(given, full.reshape(-1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="topic feature needs"):
        fact.pair_logits(fact.user_side(uv[u], ud[u]), fact.news_side(nv[n], nd[n], cat[n], sub[n]))


def test_a_model_refuses_side_features_built_with_other_settings():
    from dcn.export import check_side_features
    built = {"category_buckets": 1024, "popularity_window_hours": 24}
    metadata = {"version": "v1", "model_spec": {"features": ["news_stats"]},
                "features": {"side_features": built}}
    check_side_features(metadata, dict(built), "the pool")
    with pytest.raises(ValueError, match="popularity_window_hours.: 48"):
        check_side_features(metadata, dict(built, popularity_window_hours=48), "the pool")
    vectors_only = dict(metadata, model_spec={"features": []})
    check_side_features(vectors_only, dict(built, popularity_window_hours=48), "the pool")
