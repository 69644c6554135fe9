"""Tests of dcn/model.py and dcn/spec.py: the model builder against an independent numpy
forward pass, the canonical spec and its recovery from a model, the save/load round trip, and
the FLOP count. The cross layer's own tests are in tests/test_cross.py."""

import math

import keras
import numpy as np
import pytest

from dcn.cross import Cross
from dcn.model import build_dcn, check_input_width, model_spec
from dcn.spec import count_flops_per_example, dcn_spec
from tests.builders import np_cross


# ---- independent numpy formulas (papers' column-vector notation, applied row by row) ----


def np_forward(model, spec, user, news):
    """The whole DCN forward pass in numpy, reading the weights by layer name."""
    x0 = np.concatenate([user, news], axis=1).astype(np.float64)
    form = "vector" if spec["cross_kind"] == "vector" else ("low_rank" if spec["cross_rank"] else "full")

    def cross(x):
        for i in range(spec["cross_layers"]):
            x = np_cross(form, model.get_layer(f"cross_{i}").weight_arrays(), x0, x)
        return x

    def deep(h):
        for k in range(len(spec["deep_units"])):
            kernel, bias = model.get_layer(f"deep_{k}").get_weights()
            h = np.maximum(h @ kernel + bias, 0.0)
        return h

    if spec["structure"] == "parallel":
        top = np.concatenate([cross(x0), deep(x0)], axis=1)
    else:
        top = deep(cross(x0))
    kernel, bias = model.get_layer("logit").get_weights()
    return top @ kernel + bias


def random_inputs(spec, batch, seed):
    rng = np.random.default_rng(seed)
    return {
        "user_vec": rng.standard_normal((batch, spec["user_dim"])).astype(np.float32),
        "news_vec": rng.standard_normal((batch, spec["news_dim"])).astype(np.float32),
    }


# ---- Cross: hand-computed values ----


# ---- build_dcn ----


def _param_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize(
    "kwargs, n_vars, n_params, logit_in",
    [
        # d = 3 + 5 = 8. cross vector: 2 x (w 8 + b 8) = 32; deep: 8*8+8 = 72, 8*4+4 = 36;
        # logit (stacked) 4+1 = 5  ->  145 parameters in 4 + 4 + 2 = 10 variables.
        (dict(cross_layers=2, deep_units=(8, 4)), 10, 145, 4),
        # parallel: same cross and deep; logit over concat(cross 8, deep 4) = 12+1 = 13 -> 153.
        (dict(cross_layers=2, deep_units=(8, 4), structure="parallel"), 10, 153, 12),
        # full matrix: 2 x (64 + 8) = 144; deep 72 + 36; logit 5 -> 257.
        (dict(cross_layers=2, cross_kind="matrix", deep_units=(8, 4)), 10, 257, 4),
        # low rank r=2: U 16 + V 16 + b 8 = 40 per layer; 1 layer; deep (4,): 8*4+4 = 36;
        # parallel logit: 8 + 4 + 1 = 13  -> 89.
        (dict(cross_layers=1, cross_kind="matrix", cross_rank=2, deep_units=(4,), structure="parallel"), 7, 89, 12),
        # pure deep: 72 + 36 + 5 = 113 (structure is irrelevant without a cross network).
        (dict(cross_layers=0, deep_units=(8, 4)), 6, 113, 4),
        (dict(cross_layers=0, deep_units=(8, 4), structure="parallel"), 6, 113, 4),
        # pure cross: 3 x 16 + logit 8+1 = 57.
        (dict(cross_layers=3, deep_units=()), 8, 57, 8),
        (dict(cross_layers=3, deep_units=(), structure="parallel"), 8, 57, 8),
        # neither: logistic regression on x0, 9 parameters.
        (dict(cross_layers=0, deep_units=()), 2, 9, 8),
    ],
)
def test_build_dcn_shapes_and_weight_counts(kwargs, n_vars, n_params, logit_in):
    model = build_dcn(3, 5, **kwargs)
    spec = dcn_spec(3, 5, **kwargs)
    assert len(model.trainable_weights) == n_vars
    assert _param_count(model) == n_params
    assert model.get_layer("logit").get_weights()[0].shape == (logit_in, 1)
    inputs = random_inputs(spec, batch=7, seed=0)
    out = keras.ops.convert_to_numpy(model(inputs))
    assert out.shape == (7, 1)
    np.testing.assert_allclose(out, np_forward(model, spec, inputs["user_vec"], inputs["news_vec"]),
                               rtol=1e-4, atol=1e-5)


def test_build_dcn_defaults_and_layer_names():
    model = build_dcn(4, 6)
    names = [layer.name for layer in model.layers]
    for name in ["user_vec", "news_vec", "x0", "cross_0", "cross_1", "cross_2", "deep_0", "deep_1", "logit"]:
        assert name in names
    assert "cross_3" not in names and "deep_2" not in names and "cross_deep" not in names
    assert [model.get_layer(f"deep_{k}").units for k in range(2)] == [256, 128]
    assert model.get_layer("logit").get_config()["activation"] == "linear"
    assert model.get_layer("deep_0").get_config()["activation"] == "relu"
    out = model({"user_vec": np.ones((2, 4), np.float32), "news_vec": np.ones((2, 6), np.float32)})
    assert tuple(out.shape) == (2, 1)


def test_dropout_layers_only_in_training():
    model = build_dcn(3, 3, cross_layers=1, deep_units=(64, 32), dropout=0.5, structure="parallel")
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [
        "deep_dropout_0", "deep_dropout_1"]
    spec = model_spec(model)
    inputs = random_inputs(spec, batch=16, seed=1)
    inference = keras.ops.convert_to_numpy(model(inputs, training=False))
    np.testing.assert_allclose(inference, np_forward(model, spec, inputs["user_vec"], inputs["news_vec"]),
                               rtol=1e-4, atol=1e-5)
    training = keras.ops.convert_to_numpy(model(inputs, training=True))
    assert not np.allclose(training, inference)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in build_dcn(3, 3, dropout=0.0).layers)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(user_dim=0), "user_dim must be a positive integer"),
        (dict(news_dim=2.5), "news_dim must be a positive integer"),
        (dict(cross_layers=-1), "cross_layers must be an integer >= 0"),
        (dict(cross_kind="diag"), "cross_kind must be one of"),
        (dict(cross_kind="matrix", cross_rank=-2), "cross_rank must be"),
        (dict(cross_kind="matrix", cross_rank=8), r"cross_rank=8 must be smaller than the input width d = 8"),
        (dict(cross_kind="vector", cross_rank=2), "cross_rank applies to cross_kind='matrix' only"),
        (dict(deep_units=(8, 0)), "deep_units must all be positive integers"),
        (dict(deep_units=8), "deep_units must be a sequence"),
        (dict(dropout=1.0), r"dropout must be a number in \[0, 1\)"),
        (dict(dropout=-0.1), r"dropout must be a number in \[0, 1\)"),
        (dict(structure="serial"), "structure must be one of"),
        (dict(seed=-1), "seed must be an integer >= 0"),
    ],
)
def test_build_dcn_rejects_bad_arguments(kwargs, message):
    args = dict(user_dim=4, news_dim=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_dcn(**args)


def test_initialisation_is_deterministic_given_the_seed():
    kwargs = dict(cross_layers=2, cross_kind="matrix", cross_rank=2, deep_units=(8,), structure="parallel")
    a, b, c = build_dcn(4, 4, seed=3, **kwargs), build_dcn(4, 4, seed=3, **kwargs), build_dcn(4, 4, seed=4, **kwargs)
    for va, vb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(va, vb)
    kernels = [w for w in a.get_weights() if w.ndim == 2]
    kernels_c = [w for w in c.get_weights() if w.ndim == 2]
    assert all(not np.allclose(ka, kc) for ka, kc in zip(kernels, kernels_c))
    # Different layers get different seeds: the two cross layers' U differ.
    assert not np.allclose(a.get_layer("cross_0").weight_arrays()["U"], a.get_layer("cross_1").weight_arrays()["U"])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(cross_layers=1, cross_kind="matrix", cross_rank=3, deep_units=[16], dropout=0.25, structure="parallel", seed=11),
        dict(cross_layers=2, cross_kind="matrix", deep_units=(), seed=5),
        dict(cross_layers=0, cross_kind="matrix", cross_rank=3, deep_units=(8,), structure="parallel"),
    ],
)
def test_model_spec_recovers_canonical_spec(kwargs):
    spec = dcn_spec(6, 2, **kwargs)
    model = build_dcn(6, 2, **kwargs)
    assert model_spec(model) == spec
    rebuilt = build_dcn(**model_spec(model))
    for va, vb in zip(model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(va, vb)


def test_dcn_spec_canonicalises_irrelevant_arguments():
    spec = dcn_spec(2, 2, cross_layers=0, cross_kind="matrix", cross_rank=1, deep_units=(3,), structure="parallel")
    assert (spec["cross_kind"], spec["cross_rank"], spec["structure"]) == ("vector", 0, "stacked")
    assert dcn_spec(2, 2, deep_units=(), dropout=0.3)["dropout"] == 0.0
    assert dcn_spec(2, 2, cross_kind="matrix", cross_rank=None)["cross_rank"] == 0
    assert dcn_spec(2, 2, deep_units=(4, 2))["deep_units"] == [4, 2]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(cross_kind="vector", structure="stacked", deep_units=(8, 4)),
        dict(cross_kind="matrix", structure="parallel", deep_units=(8,), dropout=0.1),
        dict(cross_kind="matrix", cross_rank=2, structure="stacked", deep_units=(8,)),
        dict(cross_kind="vector", structure="parallel", deep_units=(8,)),
    ],
)
def test_save_load_round_trip(tmp_path, kwargs):
    model = build_dcn(5, 3, cross_layers=2, seed=1, **kwargs)
    # Perturb the weights so the check does not rely on zero biases.
    rng = np.random.default_rng(0)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    inputs = random_inputs(model_spec(model), batch=32, seed=2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(inputs)), keras.ops.convert_to_numpy(model(inputs)), atol=1e-6
    )
    assert isinstance(loaded.get_layer("cross_1"), Cross)
    assert loaded.get_layer("cross_1").get_config() == model.get_layer("cross_1").get_config()
    assert model_spec(loaded) == model_spec(model)


def test_check_input_width():
    model = build_dcn(128, 96, cross_layers=1, deep_units=(4,))
    check_input_width(model, 128, 96)  # no error
    with pytest.raises(ValueError) as err:
        check_input_width(model, 64, 96)
    assert str(err.value) == (
        "model expects user_vec width 128 and news_vec width 96, "
        "but the data has user_vec width 64 and news_vec width 96"
    )
    with pytest.raises(ValueError, match="news_vec width 96, but the data has user_vec width 128 and news_vec width 97"):
        check_input_width(model, 128, 97)


def test_check_input_width_rejects_foreign_model():
    inp = keras.Input(shape=(3,), name="x")
    with pytest.raises(ValueError, match="no inputs named 'user_vec' and 'news_vec'"):
        check_input_width(keras.Model(inp, keras.layers.Dense(1)(inp)), 3, 3)


# ---- FLOPs ----


def test_count_flops_by_hand():
    base = dict(user_dim=2, news_dim=2, cross_layers=2, deep_units=(3,))  # d = 4
    # vector, stacked: cross 2 x (2*4) = 16; deep 2*4*3 = 24; logit 2*3 = 6  -> 46
    assert count_flops_per_example(dict(base, cross_kind="vector")) == 46
    # full, stacked: cross 2 x (2*4*4) = 64; deep 24; logit 6  -> 94
    assert count_flops_per_example(dict(base, cross_kind="matrix")) == 94
    # low rank r=1, parallel: cross 2 x (2*4*1 + 2*1*4) = 32; deep 24; logit 2*(4+3) = 14 -> 70
    assert count_flops_per_example(dict(base, cross_kind="matrix", cross_rank=1, structure="parallel")) == 70
    # pure deep: 24 + 6 = 30; pure cross (vector): 16 + logit 2*4 = 24
    assert count_flops_per_example(dict(base, cross_layers=0)) == 30
    assert count_flops_per_example(dict(base, deep_units=())) == 24


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(cross_kind="matrix", structure="parallel", deep_units=(16, 8, 4)),
        dict(cross_kind="matrix", cross_rank=3, cross_layers=4),
        dict(cross_layers=0, deep_units=()),
    ],
)
def test_count_flops_is_twice_the_non_bias_weights(kwargs):
    spec = dcn_spec(12, 20, **kwargs)
    model = build_dcn(**spec)
    multiply_adds = sum(int(np.prod(v.shape)) for v in model.trainable_weights if v.name not in ("b", "bias"))
    assert count_flops_per_example(spec) == 2 * multiply_adds


# ---- learnability ----


@pytest.mark.parametrize(
    "kwargs, learnable",
    [
        (dict(cross_layers=2, cross_kind="matrix", deep_units=()), True),  # pure cross
        (dict(cross_layers=2, cross_kind="vector", deep_units=(32, 16)), True),  # default stacked
        (dict(cross_layers=1, cross_kind="matrix", cross_rank=4, deep_units=(16,), structure="parallel"), True),
        (dict(cross_layers=0, deep_units=()), False),  # control: linear logit cannot fit sign(u.n)
    ],
)
def test_learns_sign_of_dot_product(kwargs, learnable):
    rng = np.random.default_rng(0)

    def data(n):
        u = rng.standard_normal((n, 8)).astype(np.float32)
        v = rng.standard_normal((n, 8)).astype(np.float32)
        return {"user_vec": u, "news_vec": v}, ((u * v).sum(axis=1, keepdims=True) > 0).astype(np.float32)

    test_x, test_y = data(1024)  # held out; every training step draws a fresh batch
    keras.utils.set_random_seed(0)
    model = build_dcn(8, 8, seed=0, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    initial = model.evaluate(test_x, test_y, batch_size=1024, verbose=0)
    for _ in range(300):
        model.train_on_batch(*data(256))
    final = model.evaluate(test_x, test_y, batch_size=1024, verbose=0)
    if learnable:
        assert final < 0.6 * initial and final < 0.6 * math.log(2), (initial, final)
    else:
        assert final > 0.6 and final > 0.6 * initial, (initial, final)


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size must be positive, got 0"),
    ("train.epochs=-1", "train.epochs must be positive"),
    ("model.cross_layers=-1", "model.cross_layers must be 0 or more, got -1"),
    ("model.dropout=1.5", r"model.dropout must be in \[0, 1\)"),
    ("model.deep_units=[0]", "model.deep_units must be positive integers"),
])
def test_bad_training_settings_are_rejected_when_the_config_loads(override, message):
    from common.config import load_config
    from common.errors import ConfigError

    load_config()
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


# ------------------------------------------------------------------ side features

SIDE = dict(features=["user_stats", "news_stats", "category", "dot"],
            user_dense_mean=[1.0, 2.0], user_dense_std=[1.0, 4.0],
            news_dense_mean=[0.0, 0.0, 0.0, 0.5], news_dense_std=[1.0, 1.0, 2.0, 0.5],
            category_buckets=5, category_dim=2)


def test_logistic_regression_on_the_side_features_by_hand():
    """No cross or deep layer: logit = w . x0 + b with x0 = [u, (ud - m)/s, n, (nd - m)/s,
    E_cat[c], E_sub[s], u . n], each weight set by hand."""
    from dcn.model import build_dcn
    model = build_dcn(2, 2, cross_layers=0, deep_units=[], **SIDE)
    emb = np.arange(10, dtype=np.float32).reshape(5, 2) / 10
    model.get_layer("category_emb").set_weights([emb])
    model.get_layer("subcategory_emb").set_weights([-emb])
    w = np.arange(1, 16, dtype=np.float32)[:, None] / 10      # d = 2+2 + 2+4+2+2 + 1 = 15
    model.get_layer("logit").set_weights([w, np.array([0.5], np.float32)])
    u, ud = np.array([[1.0, 2.0]]), np.array([[2.0, 6.0]])
    n, nd = np.array([[3.0, -1.0]]), np.array([[1.0, 2.0, 4.0, 1.5]])
    x0 = np.concatenate([u, [[1.0, 1.0]], n, [[1.0, 2.0, 2.0, 2.0]], emb[[3]], -emb[[1]],
                         [[1.0 * 3.0 + 2.0 * -1.0]]], axis=1)
    expected = float(x0 @ w + 0.5)
    got = model({"user_vec": u.astype("f"), "news_vec": n.astype("f"),
                 "user_dense": ud.astype("f"), "news_dense": nd.astype("f"),
                 "category": np.array([3], "i"), "subcategory": np.array([1], "i")})
    assert float(np.asarray(got)[0, 0]) == pytest.approx(expected, rel=1e-6)


def test_side_feature_model_round_trips(tmp_path):
    from dcn.model import build_dcn, model_spec
    from dcn.spec import input_columns
    model = build_dcn(4, 4, deep_units=[8], l2=1e-4, **SIDE)
    spec = model_spec(model)
    assert spec["features"] == SIDE["features"] and spec["l2"] == pytest.approx(1e-4)
    assert input_columns(spec) == {"user_dense": 2, "news_dense": 4, "category": 0, "subcategory": 0}
    assert len(model.losses) > 0
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert model_spec(loaded) == spec
    rng = np.random.default_rng(0)
    batch = {"user_vec": rng.normal(size=(3, 4)).astype("f"), "news_vec": rng.normal(size=(3, 4)).astype("f"),
             "user_dense": rng.normal(size=(3, 2)).astype("f"), "news_dense": rng.normal(size=(3, 4)).astype("f"),
             "category": np.array([0, 1, 4], "i"), "subcategory": np.array([2, 2, 3], "i")}
    np.testing.assert_allclose(np.asarray(loaded(batch)), np.asarray(model(batch)), rtol=1e-6)


def test_dot_needs_equal_widths_and_stats_need_their_statistics():
    from dcn.model import build_dcn
    with pytest.raises(ValueError, match="dot feature needs vectors of one width"):
        build_dcn(4, 6, features=["dot"])
    with pytest.raises(ValueError, match="news_stats needs news_dense_mean"):
        build_dcn(4, 4, features=["news_stats"])
    with pytest.raises(ValueError, match="features must be a list"):
        build_dcn(4, 4, features=["popularity"])
