"""Widths of the DCN's input x0 from a model spec, without Keras (the scoring driver checks
its memory budget with them before any task runs)."""
from __future__ import annotations


def side_widths(user_dim: int, news_dim: int, features, user_dense: int, news_dense: int,
                category_dim: int, pair_dense: int = 0) -> tuple[int, int, int]:
    """Widths of x0's three parts: (user side du', news side dn', pair)."""
    user = user_dim + (user_dense if "user_stats" in features else 0)
    news = (news_dim + (news_dense if "news_stats" in features else 0)
            + (2 * category_dim if "category" in features else 0))
    pair = (1 if "dot" in features else 0) + (pair_dense if "topic" in features else 0)
    return user, news, pair


def spec_widths(spec: dict) -> tuple[int, int, int]:
    """The three widths of a model spec (a spec recorded before side features existed has
    none of their keys: its x0 is the two vectors)."""
    return side_widths(spec["user_dim"], spec["news_dim"], spec.get("features", ()),
                       len(spec.get("user_dense_mean", ())), len(spec.get("news_dense_mean", ())),
                       spec.get("category_dim", 0), len(spec.get("pair_dense_mean", ())))
