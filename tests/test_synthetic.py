"""Tests of the synthetic package: the MIND format of its output, the planted click model, the
determinism and the atomic publishing. Runs at the `tiny` scale."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from datetime import datetime

import numpy as np
import pytest

from synthetic.__main__ import main
from synthetic.generate import generate
from synthetic.impressions import MIN_CANDIDATES, candidate_counts
from synthetic.population import (AFFINITY_WEIGHT, CLICK_BIAS, POPULARITY_WEIGHT, click_logit,
                                  make_news, make_users)
from synthetic.sampling import seeded_streams
from synthetic.timeline import HISTORY_START
from synthetic.writer import format_time, write_split

SPLITS = {"train": "MINDsmall_train", "dev": "MINDsmall_dev"}
NEWS_ID = re.compile(r"^N[0-9]+$")
USER_ID = re.compile(r"^U[0-9]+$")
IMPRESSION_ID = re.compile(r"^[1-9][0-9]*$")
CANDIDATE = re.compile(r"^N[0-9]+-[01]$")
# No leading zeros on month, day and hour; two-digit minutes and seconds.
TIME = re.compile(r"^(1[0-2]|[1-9])/(3[01]|[12][0-9]|[1-9])/2019 "
                  r"(1[0-2]|[1-9]):[0-5][0-9]:[0-5][0-9] (AM|PM)$")
ENTITY_KEYS = {"Label", "Type", "WikidataId", "Confidence", "OccurrenceOffsets", "SurfaceForms"}
CATEGORIES = {"news", "sports", "finance", "lifestyle", "health", "foodanddrink", "travel",
              "autos", "weather", "entertainment", "music", "movies", "tv", "video", "kids"}


# ---------------------------------------------------------------------------------------------
# Reading the output back
# ---------------------------------------------------------------------------------------------

def _lines(path):
    with open(path, "rb") as handle:
        data = handle.read()
    assert data.endswith(b"\n") and b"\r" not in data
    return data.decode("utf-8").split("\n")[:-1]


def _read_sample(root):
    sample = {"root": root}
    for split, folder in SPLITS.items():
        behaviors = [line.split("\t")
                     for line in _lines(os.path.join(root, folder, "behaviors.tsv"))]
        news = [line.split("\t") for line in _lines(os.path.join(root, folder, "news.tsv"))]
        truth = _lines(os.path.join(root, "ground_truth", f"{split}.tsv"))
        sample[split] = {
            "behaviors": behaviors,
            "news": news,
            "news_by_id": {row[0]: row for row in news},
            "truth_header": truth[0],
            "truth": [row.split("\t") for row in truth[1:]],
        }
    return sample


def _candidates(row):
    """(news id, label) pairs of a behaviors row."""
    return [(token[:-2], int(token[-1])) for token in row[4].split(" ")]


def _parse_time(text):
    return datetime.strptime(text, "%m/%d/%Y %I:%M:%S %p")


def _digest(root):
    digest = {}
    for folder in ("MINDsmall_train", "MINDsmall_dev", "ground_truth"):
        for name in sorted(os.listdir(os.path.join(root, folder))):
            with open(os.path.join(root, folder, name), "rb") as handle:
                digest[f"{folder}/{name}"] = hashlib.sha256(handle.read()).hexdigest()
    return digest


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("gen") / "sample")
    summary = generate("tiny", root, seed=0)
    data = _read_sample(root)
    data["summary"] = summary
    return data


# ---------------------------------------------------------------------------------------------
# Format
# ---------------------------------------------------------------------------------------------

def test_layout_has_exactly_the_sample_files_and_no_leftovers(sample):
    root = sample["root"]
    assert sorted(os.listdir(root)) == ["MINDsmall_dev", "MINDsmall_train", "ground_truth"]
    for folder in SPLITS.values():
        assert sorted(os.listdir(os.path.join(root, folder))) == ["behaviors.tsv", "news.tsv"]
    assert sorted(os.listdir(os.path.join(root, "ground_truth"))) == ["dev.tsv", "train.tsv"]
    # The staging folder was renamed away: nothing else in the parent folder.
    assert os.listdir(os.path.dirname(root)) == ["sample"]


@pytest.mark.parametrize("split", SPLITS)
def test_behaviors_columns_and_formats(sample, split):
    rows = sample[split]["behaviors"]
    assert len(rows) == sample["summary"][split]["impressions"]
    for row in rows:
        assert len(row) == 5, row
        impression_id, user_id, time, history, impressions = row
        assert IMPRESSION_ID.match(impression_id)
        assert USER_ID.match(user_id)
        assert TIME.match(time), time
        _parse_time(time)
        assert history == "" or all(NEWS_ID.match(t) for t in history.split(" "))
        tokens = impressions.split(" ")
        assert tokens and all(CANDIDATE.match(t) for t in tokens), impressions
        # No repeated candidate within an impression, no repeated news in a history.
        assert len({t[:-2] for t in tokens}) == len(tokens)
        assert len(set(history.split())) == len(history.split())


@pytest.mark.parametrize("split", SPLITS)
def test_impression_ids_are_unique_and_start_at_one(sample, split):
    ids = [int(row[0]) for row in sample[split]["behaviors"]]
    assert sorted(ids) == list(range(1, len(ids) + 1))


def test_times_have_no_leading_zeros_and_cover_the_periods(sample):
    train = [_parse_time(row[2]) for row in sample["train"]["behaviors"]]
    dev = [_parse_time(row[2]) for row in sample["dev"]["behaviors"]]
    assert datetime(2019, 11, 9) <= min(train) and max(train) < datetime(2019, 11, 15)
    assert datetime(2019, 11, 15) <= min(dev) and max(dev) < datetime(2019, 11, 16)
    assert max(train) < min(dev)
    assert len({t.date() for t in train}) == 6
    texts = [row[2] for row in sample["train"]["behaviors"]]
    assert any(t.endswith("AM") for t in texts) and any(t.endswith("PM") for t in texts)
    assert any(re.match(r"^\d+/\d+/2019 [1-9]:", t) for t in texts)   # a one-digit hour


def test_format_time_examples():
    def at(*args):
        return (datetime(*args) - HISTORY_START).total_seconds()
    assert format_time(at(2019, 11, 11, 9, 5, 58)) == "11/11/2019 9:05:58 AM"
    assert format_time(at(2019, 11, 9, 12, 0, 3)) == "11/9/2019 12:00:03 PM"
    assert format_time(at(2019, 11, 15, 0, 7, 0)) == "11/15/2019 12:07:00 AM"
    assert format_time(at(2019, 11, 14, 23, 59, 59)) == "11/14/2019 11:59:59 PM"


@pytest.mark.parametrize("split", SPLITS)
def test_news_columns_and_entities(sample, split):
    rows = sample[split]["news"]
    assert len({row[0] for row in rows}) == len(rows)
    for row in rows:
        assert len(row) == 8, row
        news_id, category, subcategory, title, abstract, url, title_ents, abstract_ents = row
        assert NEWS_ID.match(news_id)
        assert category in CATEGORIES and subcategory
        assert title.strip() == title and title
        assert url.startswith("https://")
        for text, field in ((title, title_ents), (abstract, abstract_ents)):
            entities = json.loads(field)
            assert isinstance(entities, list)
            for entity in entities:
                assert set(entity) == ENTITY_KEYS
                assert re.match(r"^Q[0-9]+$", entity["WikidataId"])
                assert 0 < entity["Confidence"] <= 1
                for offset, surface in zip(entity["OccurrenceOffsets"], entity["SurfaceForms"]):
                    assert text[offset:offset + len(surface)] == surface
    assert len({row[1] for row in rows}) >= 12
    assert any(row[6] == "[]" for row in rows) and any(row[6] != "[]" for row in rows)
    empty_abstracts = sum(row[4] == "" for row in rows) / len(rows)
    assert 0.01 <= empty_abstracts <= 0.12
    mean_words = sum(len(row[3].split()) for row in rows) / len(rows)
    assert 9.5 <= mean_words <= 13.5


def test_titles_have_special_characters_and_no_control_characters(sample):
    titles = [row[3] for split in SPLITS for row in sample[split]["news"]]
    for needle in ("'", '"', "|", "&", "—", "’"):
        assert any(needle in t for t in titles), needle
    assert any(any(ord(ch) > 127 for ch in t) for t in titles)
    fields = [f for split in SPLITS for row in sample[split]["news"] for f in row]
    fields += [f for split in SPLITS for row in sample[split]["behaviors"] for f in row]
    assert not any(ch in f for f in fields for ch in "\t\n\r")


@pytest.mark.parametrize("split", SPLITS)
def test_every_referenced_news_is_in_the_splits_news(sample, split):
    known = sample[split]["news_by_id"]
    for row in sample[split]["behaviors"]:
        for news_id in row[3].split():
            assert news_id in known
        for news_id, _ in _candidates(row):
            assert news_id in known


def test_dev_shows_news_that_train_does_not(sample):
    train_shown = {n for row in sample["train"]["behaviors"] for n, _ in _candidates(row)}
    dev_shown = {n for row in sample["dev"]["behaviors"] for n, _ in _candidates(row)}
    assert dev_shown - train_shown
    assert dev_shown & train_shown
    assert sample["summary"]["dev_news_not_in_train"] > 0


# ---------------------------------------------------------------------------------------------
# Histories, clicks, sizes
# ---------------------------------------------------------------------------------------------

def test_histories_are_fixed_per_user_and_some_are_empty(sample):
    history = {}
    for split in SPLITS:
        for row in sample[split]["behaviors"]:
            assert history.setdefault(row[1], row[3]) == row[3], row[1]
    lengths = [len(h.split()) for h in history.values()]
    empty_share = lengths.count(0) / len(lengths)
    assert 0 < empty_share <= 0.08
    assert 12 <= sum(lengths) / len(lengths) <= 40
    assert max(lengths) >= 3 * sum(lengths) / len(lengths)      # heavy tail


@pytest.mark.parametrize("split", SPLITS)
def test_every_impression_has_a_click_and_sizes_are_mind_like(sample, split):
    counts, clicks = [], 0
    for row in sample[split]["behaviors"]:
        labels = [label for _, label in _candidates(row)]
        assert sum(labels) >= 1
        counts.append(len(labels))
        clicks += sum(labels)
    positive_share = clicks / sum(counts)
    mean_candidates = sum(counts) / len(counts)
    assert 0.02 <= positive_share <= 0.07
    assert 25 <= mean_candidates <= 50
    # Skewed sizes (at tiny scale the pool of live news caps the largest ones).
    assert min(counts) <= 15 and max(counts) >= 45


def test_candidate_counts_are_skewed_like_mind():
    counts = candidate_counts(100_000, np.random.default_rng(0))
    assert 35 <= counts.mean() <= 39
    assert 9 <= np.percentile(counts, 5) <= 14
    assert 70 <= np.percentile(counts, 95) <= 95
    assert counts.min() >= MIN_CANDIDATES and counts.max() >= 150


def test_summary_matches_files(sample):
    summary = sample["summary"]
    users = set()
    for split in SPLITS:
        rows = sample[split]["behaviors"]
        users.update(row[1] for row in rows)
        pairs = [pair for row in rows for pair in _candidates(row)]
        assert summary[split]["impressions"] == len(rows)
        assert summary[split]["candidates"] == len(pairs)
        assert summary[split]["news"] == len(sample[split]["news"])
        assert summary[split]["positive_share"] == pytest.approx(
            sum(label for _, label in pairs) / len(pairs), abs=1e-4)
    assert summary["users"] == len(users)
    assert 150 <= summary["users"] <= 200 and 300 <= summary["news"] <= 400


# ---------------------------------------------------------------------------------------------
# Ground truth and the planted model
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", SPLITS)
def test_ground_truth_rows_match_the_candidates(sample, split):
    assert sample[split]["truth_header"] == "impression_id\tnews_id\tclick_prob"
    expected = [(row[0], news_id) for row in sample[split]["behaviors"]
                for news_id, _ in _candidates(row)]
    truth = sample[split]["truth"]
    assert all(len(row) == 3 for row in truth)
    assert [(row[0], row[1]) for row in truth] == expected
    probabilities = [float(row[2]) for row in truth]
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert len(set(probabilities)) > len(probabilities) // 2


def _labelled(sample, split):
    """(user, news id, label, click_prob) per candidate."""
    truth = iter(sample[split]["truth"])
    out = []
    for row in sample[split]["behaviors"]:
        for news_id, label in _candidates(row):
            impression_id, truth_news, prob = next(truth)
            assert (impression_id, truth_news) == (row[0], news_id)
            out.append((row[1], news_id, label, float(prob)))
    return out


def test_clicked_candidates_have_higher_planted_probability(sample):
    rows = _labelled(sample, "train") + _labelled(sample, "dev")
    clicked = [p for _, _, label, p in rows if label]
    skipped = [p for _, _, label, p in rows if not label]
    assert np.mean(clicked) > 2.5 * np.mean(skipped)
    # The planted probabilities are calibrated: the unconditional mean is near the click rate
    # (a bit below it, since impressions without a click were drawn again).
    mean_p = np.mean([p for *_, p in rows])
    share = len(clicked) / len(rows)
    assert 0.4 * share <= mean_p <= share


def test_same_topic_candidates_are_clicked_more(sample):
    """Candidates of a category in the user's history are clicked more often than others."""
    for split in SPLITS:
        category = {row[0]: row[1] for row in sample[split]["news"]}
        history_categories = {row[1]: {category[n] for n in row[3].split()}
                              for row in sample[split]["behaviors"]}
        seen = Counter()
        clicks = Counter()
        for user, news_id, label, _ in _labelled(sample, split):
            key = category[news_id] in history_categories[user]
            seen[key] += 1
            clicks[key] += label
        in_topic = clicks[True] / seen[True]
        off_topic = clicks[False] / seen[False]
        assert in_topic > 2.0 * off_topic, (split, in_topic, off_topic)


def test_histories_follow_user_topics(sample):
    """A user's history concentrates on few categories (sparse interests)."""
    category = {row[0]: row[1] for row in sample["train"]["news"]}
    top_shares = []
    for history in {row[1]: row[3] for row in sample["train"]["behaviors"]}.values():
        ids = history.split()
        if len(ids) >= 10:
            top = Counter(category[n] for n in ids).most_common(1)[0][1]
            top_shares.append(top / len(ids))
    # With 15 categories and popularity-weighted clicks alone the top share would be ~0.3.
    assert np.mean(top_shares) > 0.45


def test_titles_of_a_category_share_words(sample):
    """A bag-of-words encoder already puts same-category titles nearer each other."""
    rows = sample["train"]["news"]
    vocabulary = {}
    vectors = np.zeros((len(rows), 2000))
    for i, row in enumerate(rows):
        for word in re.findall(r"\w+", row[3].lower()):
            vectors[i, vocabulary.setdefault(word, len(vocabulary)) % 2000] += 1.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = vectors @ vectors.T
    categories = np.array([row[1] for row in rows])
    same = categories[:, None] == categories[None, :]
    np.fill_diagonal(same, False)
    different = categories[:, None] != categories[None, :]
    assert similarity[same].mean() > 2.0 * similarity[different].mean()


def test_planted_model_formula():
    """click_prob is the documented sigmoid of affinity, popularity and the noise terms."""
    rngs = seeded_streams(3)
    news = make_news(300, rngs["news"])
    users = make_users(50, rngs["users"])
    user_idx, news_idx = np.array([0, 1, 2]), np.array([5, 6, 7])
    noise = np.array([0.0, 0.1, -0.2])
    logit = click_logit(users, news, user_idx, news_idx, noise)
    for k in range(3):
        u, n = user_idx[k], news_idx[k]
        expected = (CLICK_BIAS + AFFINITY_WEIGHT * users.interest[u, news.topic[n]]
                    + POPULARITY_WEIGHT * math.log(news.popularity[n])
                    + users.propensity[u] + noise[k])
        assert logit[k] == pytest.approx(expected)
    assert np.allclose(users.interest.sum(axis=1), 1.0)
    # Sparse interests: the largest topic holds most of the mass for most users.
    assert np.median(users.interest.max(axis=1)) > 0.3


# ---------------------------------------------------------------------------------------------
# Determinism, CLI, publishing
# ---------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes_and_other_seed_differs(sample, tmp_path):
    again = str(tmp_path / "again")
    other = str(tmp_path / "other")
    generate("tiny", again, seed=0)
    generate("tiny", other, seed=1)
    first = _digest(sample["root"])
    assert _digest(again) == first
    different = _digest(other)
    assert all(different[name] != first[name] for name in first)


def test_cli_prints_the_summary(tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert main(["--scale", "tiny", "--out", out, "--seed", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 5 and summary["scale"] == "tiny"
    for split in SPLITS:
        for key in ("impressions", "users", "news", "candidates_mean", "positive_share",
                    "history_mean"):
            assert key in summary[split]
    assert os.path.isfile(os.path.join(out, "MINDsmall_dev", "behaviors.tsv"))


def test_cli_rejects_an_unknown_scale(tmp_path):
    with pytest.raises(SystemExit):
        main(["--scale", "huge", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError):
        generate("huge", str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")


def test_existing_sample_is_replaced_and_other_files_kept(tmp_path):
    out = tmp_path / "data"
    generate("tiny", str(out), seed=1)
    (out / "README.txt").write_text("keep me")
    (out / "MINDsmall_train" / "stale.tsv").write_text("old")
    generate("tiny", str(out), seed=2)
    fresh = tmp_path / "fresh"
    generate("tiny", str(fresh), seed=2)
    assert _digest(str(out)) == _digest(str(fresh))
    assert (out / "README.txt").read_text() == "keep me"
    assert not (out / "MINDsmall_train" / "stale.tsv").exists()
    assert sorted(os.listdir(tmp_path)) == ["data", "fresh"]


def test_failure_leaves_no_partial_sample(tmp_path, monkeypatch):
    out = tmp_path / "data"
    generate("tiny", str(out), seed=1)
    before = _digest(str(out))
    calls = []

    def failing_write_split(*args, **kwargs):
        calls.append(1)
        if len(calls) % 2 == 0:      # the train split is written, then dev fails
            raise OSError("disk full")
        return real_write_split(*args, **kwargs)

    real_write_split = write_split
    monkeypatch.setattr("synthetic.generate.write_split", failing_write_split)
    with pytest.raises(OSError):
        generate("tiny", str(out), seed=2)
    with pytest.raises(OSError):
        generate("tiny", str(tmp_path / "new"), seed=2)
    assert _digest(str(out)) == before           # the old sample is untouched
    assert sorted(os.listdir(tmp_path)) == ["data"]   # no staging folder, no half sample


def test_refuses_a_file_as_output(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FileExistsError):
        generate("tiny", str(target))
    assert target.read_text() == "x"


def test_tiny_scale_is_fast(tmp_path):
    import time
    start = time.perf_counter()
    generate("tiny", str(tmp_path / "t"), seed=7)
    assert time.perf_counter() - start < 2.0


def test_quality_bounds_rebuild_the_planted_state(tmp_path):
    """bench/quality_bounds.py rebuilds topics, interests and popularity from the seed: within
    an impression the planted logits differ by exactly the rebuilt affinity and popularity
    terms (the user and impression noise cancel); another seed is refused."""
    root = tmp_path / "sample"
    generate("tiny", str(root), seed=3)
    from bench import quality_bounds as qb
    categories = qb.read_news_topics(root)
    by_news, theta = qb.latent_state("tiny", 3, categories)
    truth = qb.read_truth(root / "ground_truth" / "dev.tsv")
    checked = 0
    for line in _lines(str(root / "MINDsmall_dev" / "behaviors.tsv")):
        impression, user, _, _, shown = line.split("\t")
        ids = [token.rsplit("-", 1)[0] for token in shown.split()]
        p = np.array([truth[impression][n] for n in ids])
        planted = np.log(p / (1 - p))
        rebuilt = np.array([AFFINITY_WEIGHT * theta[user][by_news[n][0]]
                            + POPULARITY_WEIGHT * by_news[n][1] for n in ids])
        np.testing.assert_allclose(planted - planted[0], rebuilt - rebuilt[0], atol=0.01)
        checked += 1
    assert checked > 50
    with pytest.raises(SystemExit, match="not generated with"):
        qb.latent_state("tiny", 4, categories)
