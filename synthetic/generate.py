"""Generating a sample: every part drawn from its own seeded stream, written to a staging
folder and published into place; the summary with the planted model's AUC ceiling."""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from synthetic.histories import make_histories
from synthetic.impressions import Split, assign_users, make_split
from synthetic.population import make_news, make_users
from synthetic.sampling import seeded_streams
from synthetic.scales import SCALES
from synthetic.timeline import DEV_START, TRAIN_START
from synthetic.titles import make_texts
from synthetic.writer import publish, write_split


def _check_target(out_dir: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a folder")


def planted_auc(split: Split) -> float:
    """Mean per-impression AUC of the planted probability against the labels: the ceiling a
    model can reach on this sample (impressions where every candidate is clicked are
    skipped, as an AUC is undefined there)."""
    n = len(split.user)
    owner = np.repeat(np.arange(n), np.diff(split.offsets))
    # Sort by impression, then probability (0.5 * p < 1 keeps impressions apart).
    order = np.argsort(owner + 0.5 * split.probability)
    rank = np.empty(order.size, dtype=np.float64)
    rank[order] = np.arange(order.size) - split.offsets[owner[order]] + 1
    positives = np.bincount(owner, weights=split.label, minlength=n)
    negatives = np.diff(split.offsets) - positives
    rank_sum = np.bincount(owner, weights=rank * split.label, minlength=n)
    valid = (positives > 0) & (negatives > 0)
    auc = (rank_sum[valid] - positives[valid] * (positives[valid] + 1) / 2) / (
        positives[valid] * negatives[valid])
    return float(auc.mean())


def _split_summary(split: Split, history_offsets: np.ndarray, written: set) -> dict:
    history_len = np.diff(history_offsets)[split.user]
    return {
        "impressions": int(len(split.user)),
        "users": int(np.unique(split.user).size),
        "news": len(written),
        "candidates": int(split.candidates.size),
        "candidates_mean": round(float(split.candidates.size / len(split.user)), 2),
        "positive_share": round(float(split.label.mean()), 4),
        "clicks_mean": round(float(split.label.sum() / len(split.user)), 3),
        "history_mean": round(float(history_len.mean()), 2),
        "empty_history_share": round(float((history_len == 0).mean()), 4),
        "planted_auc": round(planted_auc(split), 4),
    }


def generate(scale: str, out_dir: str, seed: int = 0) -> dict:
    """Write a sample of the given scale to out_dir (see the package docstring); returns a
    summary: users, news, impressions per split, candidates, positive share, history length."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    _check_target(out_dir)
    size = SCALES[scale]
    rngs = seeded_streams(seed)
    news = make_news(size.news, rngs["news"])
    users = make_users(size.users, rngs["users"])
    history_offsets, history_news = make_histories(users, news, rngs["history"])
    train_owners, dev_owners = assign_users(size.users, size.train_impressions,
                                            size.dev_impressions, rngs["assign"])
    train = make_split("train", train_owners, TRAIN_START, (DEV_START - TRAIN_START).days,
                       users, news, rngs["train"])
    dev = make_split("dev", dev_owners, DEV_START, 1, users, news, rngs["dev"])
    news_lines = make_texts(news, rngs["text"])

    parent, name = os.path.split(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        os.makedirs(os.path.join(staging, "ground_truth"))
        written = {}
        for split, folder in ((train, "MINDsmall_train"), (dev, "MINDsmall_dev")):
            written[split.name] = write_split(
                os.path.join(staging, folder),
                os.path.join(staging, "ground_truth", f"{split.name}.tsv"),
                split, users, news, history_offsets, history_news, news_lines)
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    return {
        "scale": scale,
        "seed": seed,
        "users": int(np.unique(np.concatenate([train.user, dev.user])).size),
        "news": len(written["train"] | written["dev"]),
        "dev_news_not_in_train": len(written["dev"] - written["train"]),
        "train": _split_summary(train, history_offsets, written["train"]),
        "dev": _split_summary(dev, history_offsets, written["dev"]),
    }
