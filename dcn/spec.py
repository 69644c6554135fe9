"""The DCN's construction arguments: validated and made canonical (`dcn_spec`, a plain
JSON-serialisable dict that model metadata records), the inputs a spec needs besides the two
vectors, and its forward-pass cost."""
from __future__ import annotations

import numbers
from typing import Optional, Sequence

from common.columns import CATEGORY, NEWS_DENSE, PAIR_DENSE, SUBCATEGORY, USER_DENSE
from dcn.cross import CROSS_KINDS, is_int
from dcn.widths import side_widths, spec_widths


# The side features a model can take, in the order x0 holds them (see the module docstring).
SIDE_FEATURES = ("user_stats", "news_stats", "category", "dot", "topic")



STRUCTURES = ("stacked", "parallel")



def _floats(name: str, values, width: int | None = None) -> list[float]:
    values = [float(v) for v in (values or [])]
    if width is not None and len(values) != width:
        raise ValueError(f"build_dcn: {name} must have {width} entries, got {len(values)}")
    return values



def _dense_statistics(feature: str, prefix: str, features, mean, std) -> tuple[list, list]:
    """The canonical (mean, std) of a dense input: checked when `feature` is on, [] when off."""
    if feature not in features:
        return [], []
    mean = _floats(f"{prefix}_mean", mean)
    std = _floats(f"{prefix}_std", std, len(mean))
    if not mean:
        raise ValueError(f"build_dcn: {feature} needs {prefix}_mean and {prefix}_std")
    return mean, std



def dcn_spec(
    user_dim: int,
    news_dim: int,
    *,
    cross_layers: int = 3,
    cross_kind: str = "vector",
    cross_rank: Optional[int] = 0,
    deep_units: Sequence[int] = (256, 128),
    dropout: float = 0.0,
    structure: str = "stacked",
    seed: int = 0,
    features: Sequence[str] = (),
    user_dense_mean: Sequence[float] = (),
    user_dense_std: Sequence[float] = (),
    news_dense_mean: Sequence[float] = (),
    news_dense_std: Sequence[float] = (),
    pair_dense_mean: Sequence[float] = (),
    pair_dense_std: Sequence[float] = (),
    category_buckets: int = 1024,
    category_dim: int = 8,
    l2: float = 0.0,
) -> dict:
    """Validates :func:`build_dcn`'s arguments and returns them as a canonical plain dict.

    Canonical form (what :func:`model_spec` recovers from a model): ``deep_units`` is a list
    of ints, ``cross_rank`` an int (0 = full), ``dropout`` a float; arguments that do not
    change the model are reset to their defaults -- ``cross_kind``/``cross_rank`` when
    ``cross_layers == 0``, ``dropout`` when ``deep_units`` is empty, and ``structure``
    (to ``"stacked"``) unless both the cross network and the deep network are present.
    The dict is JSON/YAML serialisable; keep it next to a saved model if convenient.
    ``features`` is sorted into SIDE_FEATURES order; the dense statistics and the category
    settings are reset to their defaults when the feature that uses them is off.
    """
    for name, value in (("user_dim", user_dim), ("news_dim", news_dim)):
        if not is_int(value) or value <= 0:
            raise ValueError(f"build_dcn: {name} must be a positive integer, got {value!r}")
    if not is_int(cross_layers) or cross_layers < 0:
        raise ValueError(f"build_dcn: cross_layers must be an integer >= 0, got {cross_layers!r}")
    if cross_kind not in CROSS_KINDS:
        raise ValueError(f"build_dcn: cross_kind must be one of {CROSS_KINDS}, got {cross_kind!r}")
    if cross_rank is None:
        cross_rank = 0
    if not is_int(cross_rank) or cross_rank < 0:
        raise ValueError(f"build_dcn: cross_rank must be None or an integer >= 0, got {cross_rank!r}")
    if isinstance(features, str) or not all(f in SIDE_FEATURES for f in features):
        raise ValueError(f"build_dcn: features must be a list of {SIDE_FEATURES}, got {features!r}")
    features = [f for f in SIDE_FEATURES if f in features]
    if "dot" in features and user_dim != news_dim:
        raise ValueError(f"build_dcn: the dot feature needs vectors of one width, got "
                         f"user_dim {user_dim} and news_dim {news_dim}")
    user_dense_mean, user_dense_std = _dense_statistics(
        "user_stats", "user_dense", features, user_dense_mean, user_dense_std)
    news_dense_mean, news_dense_std = _dense_statistics(
        "news_stats", "news_dense", features, news_dense_mean, news_dense_std)
    pair_dense_mean, pair_dense_std = _dense_statistics(
        "topic", "pair_dense", features, pair_dense_mean, pair_dense_std)
    if "category" in features:
        if not is_int(category_buckets) or category_buckets < 2:
            raise ValueError(f"build_dcn: category_buckets must be an integer >= 2, got {category_buckets!r}")
        if not is_int(category_dim) or category_dim < 1:
            raise ValueError(f"build_dcn: category_dim must be a positive integer, got {category_dim!r}")
    else:
        category_buckets, category_dim = 1024, 8
    if not isinstance(l2, numbers.Real) or isinstance(l2, bool) or l2 < 0:
        raise ValueError(f"build_dcn: l2 must be a number >= 0, got {l2!r}")
    d = side_widths(user_dim, news_dim, features, len(user_dense_mean), len(news_dense_mean),
                    category_dim, len(pair_dense_mean))
    d = sum(d)
    if cross_kind == "vector" and cross_rank:
        raise ValueError(
            f"build_dcn: cross_rank applies to cross_kind='matrix' only, got cross_rank={cross_rank} "
            "with cross_kind='vector'"
        )
    if cross_rank >= d:
        raise ValueError(
            f"build_dcn: cross_rank={cross_rank} must be smaller than the input width "
            f"d = {d} (use cross_rank=0 for a full matrix)"
        )
    if isinstance(deep_units, (str, bytes)) or not isinstance(deep_units, Sequence):
        raise ValueError(f"build_dcn: deep_units must be a sequence of positive integers, got {deep_units!r}")
    if not all(is_int(u) and u > 0 for u in deep_units):
        raise ValueError(f"build_dcn: deep_units must all be positive integers, got {list(deep_units)!r}")
    if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"build_dcn: dropout must be a number in [0, 1), got {dropout!r}")
    if structure not in STRUCTURES:
        raise ValueError(f"build_dcn: structure must be one of {STRUCTURES}, got {structure!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"build_dcn: seed must be an integer >= 0, got {seed!r}")

    deep_units = [int(u) for u in deep_units]
    if cross_layers == 0:
        cross_kind, cross_rank = "vector", 0
    if not deep_units:
        dropout = 0.0
    if cross_layers == 0 or not deep_units:
        structure = "stacked"
    return {
        "user_dim": int(user_dim),
        "news_dim": int(news_dim),
        "cross_layers": int(cross_layers),
        "cross_kind": cross_kind,
        "cross_rank": int(cross_rank),
        "deep_units": deep_units,
        "dropout": float(dropout),
        "structure": structure,
        "seed": int(seed),
        "features": features,
        "user_dense_mean": user_dense_mean,
        "user_dense_std": user_dense_std,
        "news_dense_mean": news_dense_mean,
        "news_dense_std": news_dense_std,
        "pair_dense_mean": pair_dense_mean,
        "pair_dense_std": pair_dense_std,
        "category_buckets": int(category_buckets),
        "category_dim": int(category_dim),
        "l2": float(l2),
    }



def input_columns(spec: dict) -> dict:
    """The model's feature-row inputs besides the two vectors: name -> width (0: an int
    scalar). What the trainer streams and the evaluator and scorer feed."""
    extra = {}
    if "user_stats" in spec["features"]:
        extra[USER_DENSE] = len(spec["user_dense_mean"])
    if "news_stats" in spec["features"]:
        extra[NEWS_DENSE] = len(spec["news_dense_mean"])
    if "category" in spec["features"]:
        extra[CATEGORY] = 0
        extra[SUBCATEGORY] = 0
    if "topic" in spec["features"]:
        extra[PAIR_DENSE] = len(spec["pair_dense_mean"])
    return extra



def count_flops_per_example(spec: dict) -> int:
    """Forward-pass FLOPs of one example for a :func:`build_dcn` spec (a dict of its arguments).

    Convention: only multiply-adds of matrix and vector products are counted, at 2 FLOPs
    each: a Dense layer ``in -> out`` costs ``2 * in * out``; a cross layer costs
    ``2 * d`` (vector form, the dot product ``x_l . w``), ``2 * d * d`` (full ``W x_l``) or
    ``4 * d * r`` (``V x_l`` then ``U (.)``).  Elementwise work -- bias adds, the Hadamard
    product with ``x0``, residual adds, ReLU, dropout, concatenation -- is not counted (it is
    O(d) per layer and memory-bound).  Equivalently: 2 x the number of non-bias weights.
    """
    spec = dcn_spec(**spec)
    d = sum(spec_widths(spec))
    if spec["cross_kind"] == "vector":
        per_cross = 2 * d
    elif spec["cross_rank"]:
        per_cross = 4 * d * spec["cross_rank"]
    else:
        per_cross = 2 * d * d
    flops = spec["cross_layers"] * per_cross
    deep_in = d  # the cross network keeps width d
    for units in spec["deep_units"]:
        flops += 2 * deep_in * units
        deep_in = units
    width = d + deep_in if spec["structure"] == "parallel" else deep_in
    return flops + 2 * width  # the logit Dense(1)
