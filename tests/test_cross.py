"""Tests of the cross layer (dcn/cross.py) in its three forms: tiny inputs with weights set by
hand and expected outputs written out as literal numbers (arithmetic in the comments), then
re-checked against independent numpy formulas on random data; its configuration round trip."""

import keras
import numpy as np
import pytest

from dcn.cross import Cross
from tests.builders import np_cross


X0 = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 2.0]], dtype=np.float32)


def set_cross(layer, x0, **arrays):
    """Builds ``layer`` on ``x0`` and assigns its weights by name (names must match exactly)."""
    if not layer.built:
        layer(x0)
    by_name = {v.name: v for v in layer.weights}
    assert set(by_name) == set(arrays), f"layer weights are {sorted(by_name)}"
    for name, value in arrays.items():
        by_name[name].assign(np.asarray(value, dtype=np.float32))
    return layer


def run(layer, x0, x=None):
    return keras.ops.convert_to_numpy(layer(x0) if x is None else layer(x0, x))


def test_vector_cross_by_hand():
    layer = set_cross(Cross(kind="vector"), X0, w=[0.5, -1.0, 2.0], b=[0.1, 0.2, 0.3])
    # row 1: x.w = 0.5*1 - 1*2 + 2*3 = 4.5;  x0*4.5 + b + x0 = [1,2,3]*5.5 + b
    #        = [5.5+0.1, 11+0.2, 16.5+0.3] = [5.6, 11.2, 16.8]
    # row 2: x.w = -0.5 + 0 + 4 = 3.5;       [-1,0,2]*4.5 + b = [-4.5+0.1, 0+0.2, 9+0.3]
    expected = np.array([[5.6, 11.2, 16.8], [-4.4, 0.2, 9.3]])
    out = run(layer, X0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out, np_cross("vector", layer.weight_arrays(), X0, X0), rtol=1e-6)


def test_full_matrix_cross_by_hand():
    # W[i, j]: weight from input feature j to output feature i (not symmetric, so the
    # orientation matters: W.T would give row 1 = [-2, 2, 5] for W x).
    W = [[1.0, 2.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]
    layer = set_cross(Cross(kind="matrix"), X0, W=W, b=[0.0, 1.0, -1.0])
    # row 1: W x = [1+4+0, 0+0+3, -1+0+3] = [5, 3, 2]; +b = [5, 4, 1];
    #        x0 * . = [5, 8, 3]; + x0 = [6, 10, 6]
    # row 2: W x = [-1+0+0, 0+0+2, 1+0+2] = [-1, 2, 3]; +b = [-1, 3, 2];
    #        x0 * . = [1, 0, 4]; + x0 = [0, 0, 6]
    expected = np.array([[6.0, 10.0, 6.0], [0.0, 0.0, 6.0]])
    out = run(layer, X0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out, np_cross("full", layer.weight_arrays(), X0, X0), rtol=1e-6)


def test_low_rank_cross_by_hand():
    U = [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]  # [d=3, r=2]
    V = [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # [r=2, d=3]
    layer = set_cross(Cross(kind="matrix", rank=2), X0, U=U, V=V, b=[0.5, 0.0, 0.0])
    # row 1: V x = [1+2, 3] = [3, 3]; U(Vx) = [3, 3, 3-3] = [3, 3, 0]; +b = [3.5, 3, 0];
    #        x0 * . = [3.5, 6, 0]; + x0 = [4.5, 8, 3]
    # row 2: V x = [-1+0, 2] = [-1, 2]; U(Vx) = [-1, 2, -3]; +b = [-0.5, 2, -3];
    #        x0 * . = [0.5, 0, -6]; + x0 = [-0.5, 0, -4]
    # (The swapped reading x @ U @ V would give U-part [4, 4, -1] for row 1.)
    expected = np.array([[4.5, 8.0, 3.0], [-0.5, 0.0, -4.0]])
    out = run(layer, X0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(out, np_cross("low_rank", layer.weight_arrays(), X0, X0), rtol=1e-6)


def test_two_stacked_vector_layers_by_hand():
    first = set_cross(Cross(kind="vector"), X0, w=[0.5, -1.0, 2.0], b=[0.1, 0.2, 0.3])
    second = set_cross(Cross(kind="vector"), X0, w=[1.0, 0.0, 0.0], b=[0.0, 0.0, 0.0])
    x1 = run(first, X0)  # [[5.6, 11.2, 16.8], [-4.4, 0.2, 9.3]] (test above)
    x2 = run(second, X0, x1)
    # row 1: x1.w2 = 5.6;  x0*5.6 + x1 = [5.6+5.6, 11.2+11.2, 16.8+16.8] = [11.2, 22.4, 33.6]
    # row 2: x1.w2 = -4.4; x0*(-4.4) + x1 = [4.4-4.4, 0+0.2, -8.8+9.3] = [0, 0.2, 0.5]
    expected = np.array([[11.2, 22.4, 33.6], [0.0, 0.2, 0.5]])
    np.testing.assert_allclose(x2, expected, rtol=1e-5, atol=1e-5)
    w1, w2 = first.weight_arrays(), second.weight_arrays()
    np.testing.assert_allclose(
        x2, np_cross("vector", w2, X0, np_cross("vector", w1, X0, X0)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "kind, rank, form", [("vector", None, "vector"), ("matrix", 0, "full"), ("matrix", 2, "low_rank")]
)
def test_two_stacked_layers_match_numpy_on_random_data(kind, rank, form):
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((5, 6)).astype(np.float32)
    first = Cross(kind=kind, rank=rank, bias_initializer=keras.initializers.RandomNormal(seed=3),
                  kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    second = Cross(kind=kind, rank=rank, bias_initializer=keras.initializers.RandomNormal(seed=4),
                   kernel_initializer=keras.initializers.GlorotUniform(seed=2))
    out = run(second, x0, run(first, x0))
    assert first.form == form
    expected = np_cross(form, second.weight_arrays(), x0, np_cross(form, first.weight_arrays(), x0, x0))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_low_rank_equals_full_matrix_with_W_equal_U_V():
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((4, 5)).astype(np.float32)
    low = Cross(kind="matrix", rank=2, kernel_initializer=keras.initializers.GlorotUniform(seed=5))
    low(x0)
    w = low.weight_arrays()
    full = set_cross(Cross(kind="matrix"), x0, W=w["U"] @ w["V"], b=w["b"])
    np.testing.assert_allclose(run(low, x0), run(full, x0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kind, rank, shapes",
    [
        ("vector", None, {"w": (4,), "b": (4,)}),
        ("vector", 0, {"w": (4,), "b": (4,)}),
        ("matrix", None, {"W": (4, 4), "b": (4,)}),
        ("matrix", 0, {"W": (4, 4), "b": (4,)}),
        ("matrix", 3, {"U": (4, 3), "V": (3, 4), "b": (4,)}),
    ],
)
def test_weight_names_and_shapes(kind, rank, shapes):
    layer = Cross(kind=kind, rank=rank)
    layer(np.zeros((2, 4), np.float32))
    assert {v.name: tuple(v.shape) for v in layer.trainable_weights} == shapes
    assert not np.any(layer.weight_arrays()["b"])  # zeros by default


def test_low_rank_factors_are_initialised_differently():
    layer = Cross(kind="matrix", rank=2, kernel_initializer=keras.initializers.GlorotUniform(seed=7))
    layer(np.zeros((1, 6), np.float32))
    w = layer.weight_arrays()
    # Same seed for U and V would make V's first row equal U's first column's values.
    assert not np.allclose(w["U"].ravel()[:6], w["V"].ravel()[:6])
    again = Cross(kind="matrix", rank=2, kernel_initializer=keras.initializers.GlorotUniform(seed=7))
    again(np.zeros((1, 6), np.float32))
    np.testing.assert_array_equal(again.weight_arrays()["V"], w["V"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "diagonal"}, "kind must be one of"),
        ({"kind": "matrix", "rank": -1}, "rank must be"),
        ({"kind": "matrix", "rank": 1.5}, "rank must be"),
        ({"kind": "matrix", "rank": True}, "rank must be"),
        ({"kind": "vector", "rank": 2}, "rank applies to kind='matrix' only"),
    ],
)
def test_cross_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Cross(**kwargs)


@pytest.mark.parametrize("rank", [3, 4])
def test_cross_rejects_rank_not_below_width(rank):
    with pytest.raises(ValueError, match=rf"rank={rank} for width d=3"):
        Cross(kind="matrix", rank=rank)(X0)


def test_cross_rejects_width_mismatch():
    with pytest.raises(ValueError, match="x0 width 3 and x width 4"):
        Cross(kind="vector")(X0, np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("kind, rank", [("vector", 0), ("matrix", 0), ("matrix", 2)])
def test_cross_config_round_trip(kind, rank):
    layer = Cross(kind=kind, rank=rank, kernel_initializer=keras.initializers.GlorotUniform(seed=9),
                  kernel_regularizer=keras.regularizers.L2(1e-4), name="c")
    config = layer.get_config()
    assert config["kind"] == kind and config["rank"] == rank
    assert config["kernel_initializer"]["config"]["seed"] == 9
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, Cross)
    assert restored.get_config() == config
