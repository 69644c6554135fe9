"""The sample sizes the generator knows, by name."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    users: int
    news: int
    train_impressions: int
    dev_impressions: int


SCALES = {
    "tiny": Scale(users=200, news=400, train_impressions=500, dev_impressions=250),
    # a few thousand train impressions: what a new user's first trial holds
    "few": Scale(users=1_500, news=2_500, train_impressions=4_000, dev_impressions=2_000),
    "small": Scale(users=5_000, news=8_000, train_impressions=16_000, dev_impressions=7_000),
    "mind-small": Scale(users=50_000, news=54_000, train_impressions=157_000,
                        dev_impressions=73_000),
}
