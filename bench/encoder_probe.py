"""Benchmark: news encoders on real headlines (issue #23's measure). Every encoder x text x
post-processing is scored by what its vectors tell about a news item's category.

    python -m bench.encoder_probe --news PATH/news.tsv [--rows 4000] [--encoders use,e5-small]
        [--texts title,title_abstract,title_category] [--postprocess project,center,pca,whiten]
        [--dims 128]

`--news` is a MIND news.tsv with real titles (MIND-small's catalogue, for instance); it is read,
never copied. A fixed sample of `--rows` news (seed 0) is taken: every row that has an abstract,
then random others; 80% of it trains the probes and 20% tests them (a fixed split).

Per encoder x text x post-processing (the vectors the pipeline would store, of each width of `--dims`,
L2-normalized; the fitted kinds are fitted on the whole sample, as embed_news fits them on the
whole catalogue, without labels):
- `probe`: accuracy and balanced accuracy (mean recall over categories) of a linear softmax
  probe, vector -> category, trained on the train split (numpy, standardized inputs, L2);
- `knn`: accuracy of the majority category of the 10 train news of highest cosine (how the
  dot products the model and the cosine baseline use see the vectors);
- `cos`: the mean cosine between random pairs of news (anisotropy: near 0 is isotropic);
- `abstract rows`: the probe accuracy on the news that have an abstract only (their own 80/20
  split), the only rows where `title_abstract` differs from `title`;
- per encoder, titles/s per core: the encoder on one thread over the sample's titles.

`title_category` puts the category into the text, so its category probe is not a measure of the
encoder (it reads the answer); it is reported for completeness only.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from bench.record import record
from features import encoders, vector_transform

SEED = 0
KNN = 10


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--news", required=True, help="a MIND news.tsv with real titles")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--encoders", default="use,e5-small")
    parser.add_argument("--texts", default="title,title_abstract,title_category")
    parser.add_argument("--postprocess", default="project,center,pca,whiten")
    parser.add_argument("--dims", default="128", help="widths after post-processing, e.g. 128,256")
    return parser.parse_args()


def read_sample(path: str, rows: int) -> list[dict]:
    news = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 5 and fields[3].strip() and fields[1].strip():
                news.append({"category": fields[1].strip(), "title": fields[3].strip(),
                             "abstract": fields[4].strip()})
    rng = np.random.default_rng(SEED)
    with_abstract = [n for n in news if n["abstract"]]
    others = [n for n in news if not n["abstract"]]
    picked = [others[i] for i in rng.permutation(len(others))[:max(0, rows - len(with_abstract))]]
    sample = (with_abstract + picked)[:rows]
    counts = Counter(n["category"] for n in sample)
    return [n for n in sample if counts[n["category"]] >= 10]


def text_of(news: dict, kind: str) -> str:
    """As features/news_vectors.encoder_texts composes it."""
    if kind == "title_abstract" and news["abstract"]:
        return f"{news['title']}. {news['abstract']}"
    if kind == "title_category":
        return f"{news['category']}: {news['title']}"
    return news["title"]


def split(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(0.8 * n)
    return order[:cut], order[cut:]


def softmax_probe(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                  steps: int = 400, l2: float = 1e-3) -> tuple[float, float]:
    """(accuracy, balanced accuracy) on `test` of a softmax regression fitted on `train`."""
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
    z = (x - mean) / std
    classes = int(y.max()) + 1
    w, b = np.zeros((z.shape[1], classes)), np.zeros(classes)
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    onehot = np.eye(classes)[y[train]]
    for step in range(1, steps + 1):
        logits = z[train] @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(train)
        grads = (z[train].T @ grad + l2 * w, grad.sum(axis=0))
        for i, (param, g) in enumerate(zip((w, b), grads)):
            m, v = moments[2 * i], moments[2 * i + 1]
            m[...] = 0.9 * m + 0.1 * g
            v[...] = 0.999 * v + 0.001 * g * g
            param -= 0.05 * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    predicted = (z[test] @ w + b).argmax(axis=1)
    return accuracy(y[test], predicted), balanced_accuracy(y[test], predicted)


def accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float((truth == predicted).mean())


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean([(predicted[truth == c] == c).mean() for c in np.unique(truth)]))


def knn_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    predicted = []
    for start in range(0, len(test), 1000):     # blocks: the similarity matrix stays small
        similarity = x[test[start:start + 1000]] @ x[train].T
        nearest = np.argpartition(-similarity, KNN, axis=1)[:, :KNN]
        predicted += [np.bincount(row, minlength=y.max() + 1).argmax()
                      for row in y[train][nearest]]
    return accuracy(y[test], np.array(predicted))


def anisotropy(x: np.ndarray, pairs: int = 20000) -> float:
    rng = np.random.default_rng(SEED)
    a, b = rng.integers(0, len(x), pairs), rng.integers(0, len(x), pairs)
    keep = a != b
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(unit[a[keep]] * unit[b[keep]], axis=1)))


def post_processed(raw: np.ndarray, kind: str, dim: int) -> np.ndarray:
    settings = vector_transform.Settings(kind, min(dim, raw.shape[1]), 17, True)
    fit = None
    if kind in vector_transform.FITTED:
        fit = vector_transform.fit_from_moments(settings, *vector_transform.partial_moments([raw]))
    return vector_transform.apply(raw, settings, fit)


def encode_texts(encoder, texts: list[str], cache: dict) -> np.ndarray:
    todo = sorted({t for t in texts if t not in cache})
    for start in range(0, len(todo), 64):
        part = todo[start:start + 64]
        cache.update(zip(part, encoder.encode(part)))
    return np.stack([cache[t] for t in texts])


def main() -> None:
    args = arguments()
    sample = read_sample(args.news, args.rows)
    names = sorted({n["category"] for n in sample})
    y = np.array([names.index(n["category"]) for n in sample])
    train, test = split(len(sample))
    abstract_rows = np.array([i for i, n in enumerate(sample) if n["abstract"]])
    a_train, a_test = (abstract_rows[part] for part in split(len(abstract_rows)))
    print(f"{len(sample)} news, {len(names)} categories, {len(abstract_rows)} with an abstract; "
          f"majority class {Counter(y[test]).most_common(1)[0][1] / len(test):.3f}", flush=True)
    figures = [("news sampled / categories / with an abstract",
                f"{len(sample)} / {len(names)} / {len(abstract_rows)}")]
    for name in args.encoders.split(","):
        encoder = encoders.make_encoder(encoders.EncoderSpec(name, 256, threads=1))
        cache: dict = {}
        titles = [n["title"] for n in sample]
        started = time.perf_counter()
        encode_texts(encoder, titles, cache)
        rate = len(set(titles)) / (time.perf_counter() - started)
        figures.append((f"{name}: titles/s per core (1 thread)", rate))
        print(f"{name}: {rate:.1f} titles/s on one thread", flush=True)
        for text in args.texts.split(","):
            raw = encode_texts(encoder, [text_of(n, text) for n in sample], cache)
            for kind in args.postprocess.split(","):
                for dim in (int(d) for d in args.dims.split(",")):
                    x = post_processed(raw, kind, dim)
                    acc, balanced = softmax_probe(x, y, train, test)
                    abstract_acc = softmax_probe(x, y, abstract_rows[a_train],
                                                 abstract_rows[a_test])[0]
                    line = (f"probe {acc:.3f} (balanced {balanced:.3f}), "
                            f"knn {knn_accuracy(x, y, train, test):.3f}, "
                            f"cos {anisotropy(x):.3f}, abstract rows {abstract_acc:.3f}")
                    leak = " (category in the text)" if text == "title_category" else ""
                    label = f"{name} / {text} / {kind} / {x.shape[1]}-d{leak}"
                    figures.append((label, line))
                    print(f"{label:45s} {line}", flush=True)
    record(f"encoder_probe ({len(sample)} news, {args.dims}-d)", figures)


if __name__ == "__main__":
    main()
