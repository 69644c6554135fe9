"""Where every output lives, and which run of it is current (as of which moment).

Every job and the model code resolve their inputs and outputs here, and nowhere else:

    paths.work/
      news_vectors/<identity id>/        embed_news, daily     (one folder per encoder
        embedded=<D>/                                           configuration; a run root per
                                                                day news were first embedded:
                                                                their vectors and categories)
      features/as_of=<T>/state/          user state as of T    (build_features, daily)
      features/as_of=<T>/pool/           candidate pool and news popularity as of T
      features/as_of=<T>/rows/           train and dev rows of impressions before T
                                                                (build_features)
      models/                            exported model versions (train)
      evaluation/                        evaluation runs
      checkpoints/<run key>/             training checkpoints
      score_runs/run_date=<D>/           one summary per scoring run
      promotions/                        one run per promotion decision (promote)
      mlflow/                            the model registry's SQLite store and artifacts,
                                         unless registry.tracking_uri names a server

Each leaf is a run root (common/storage.py): `runs/<run_id>/` folders, the current one being
the newest with a commit marker. `<T>` is an as-of moment in UTC, `YYYY-MM-DDTHH:MM:SS`: an output
"as of T" uses only impressions strictly before T. Scoring day D reads the state and pool as
of D 00:00:00; training reads the rows of the newest as-of that has them.
"""
from __future__ import annotations

import datetime as dt

import pyarrow.fs as pafs

from common import storage
from common.dates import MOMENT_FORMAT
from common.config import Config

VECTORS = "news_vectors"
FEATURES = "features"
MODELS = "models"
EVALUATION = "evaluation"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
SCORE_RUNS = "score_runs"
PROMOTIONS = "promotions"
REGISTRY = "mlflow"

STATE, POOL, ROWS = "state", "pool", "rows"
# Beside the user state in a state run folder: when each news was first seen (schemas.NEWS_FIRST_SEEN).
FIRST_SEEN = "first_seen"
AS_OF_PREFIX = "as_of="
AS_OF_FORMAT = MOMENT_FORMAT


def as_of_key(moment: dt.datetime) -> str:
    return moment.strftime(AS_OF_FORMAT)


def day_start(date: dt.date) -> dt.datetime:
    return dt.datetime(date.year, date.month, date.day)


def work(cfg: Config, *parts: str) -> str:
    return storage.join(cfg["paths.work"], *parts)


def vectors_root(cfg: Config) -> str:
    return work(cfg, VECTORS)


def models_root(cfg: Config) -> str:
    return work(cfg, MODELS)


def evaluation_root(cfg: Config) -> str:
    return work(cfg, EVALUATION)


def promotions_root(cfg: Config) -> str:
    return work(cfg, PROMOTIONS)


def registry_dir(cfg: Config) -> str:
    return work(cfg, REGISTRY)


def checkpoints_dir(cfg: Config, run_key: str) -> str:
    return work(cfg, CHECKPOINTS, run_key)


def tensorboard_dir(cfg: Config, run_key: str) -> str:
    return work(cfg, TENSORBOARD, run_key)


def score_summary_uri(cfg: Config, run_date: str, run_id: str) -> str:
    return work(cfg, SCORE_RUNS, f"run_date={run_date}", f"{run_id}.json")


def features_root(cfg: Config) -> str:
    return work(cfg, FEATURES)


def as_of_root(cfg: Config, as_of: dt.datetime, kind: str) -> str:
    """The run root of one kind of as-of output (STATE, POOL or ROWS)."""
    if kind not in (STATE, POOL, ROWS):
        raise ValueError(f"unknown as-of output {kind!r}")
    return work(cfg, FEATURES, AS_OF_PREFIX + as_of_key(as_of), kind)


def as_of_moments(cfg: Config, kind: str) -> list[dt.datetime]:
    """Every as-of moment with a finished run of `kind`, oldest first."""
    moments = _keyed_folders(features_root(cfg), AS_OF_PREFIX,
                             lambda key: dt.datetime.strptime(key, AS_OF_FORMAT))
    return sorted(moment for moment, name in moments
                  if storage.has_committed_run(storage.join(features_root(cfg), name, kind)))


def _keyed_folders(root: str, prefix: str, parse) -> list[tuple[object, str]]:
    """(key, folder name) of the folders `prefix<key>` under `root` whose key `parse` reads
    (folders it cannot read are skipped)."""
    fs, path = storage.filesystem(root)
    found = []
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        name = info.base_name
        if info.type != pafs.FileType.Directory or not name.startswith(prefix):
            continue
        try:
            found.append((parse(name[len(prefix):]), name))
        except ValueError:
            continue
    return found


def current_as_of(cfg: Config, as_of: dt.datetime, kind: str, how_to_build: str) -> dict:
    """The current run of `kind` as of `as_of`; a clear error naming the command otherwise."""
    root = as_of_root(cfg, as_of, kind)
    if not storage.has_committed_run(root):
        raise storage.RunNotFound(
            f"no {kind} as of {as_of_key(as_of)} under {features_root(cfg)}: build it with "
            f"{how_to_build}")
    return storage.current_run(root, kind)


def latest_rows(cfg: Config) -> dict:
    """The current rows run of the newest as-of that has one (what training reads)."""
    moments = as_of_moments(cfg, ROWS)
    if not moments:
        raise storage.RunNotFound(f"no training rows under {features_root(cfg)}: run "
                                  "./spark-submit.sh build_features first")
    return storage.current_run(as_of_root(cfg, moments[-1], ROWS), "build_features")


def current_rows(cfg: Config, as_of: dt.datetime | None = None) -> dict:
    """The rows run as of `as_of`, or of the newest as-of when None."""
    if as_of is None:
        return latest_rows(cfg)
    return current_as_of(cfg, as_of, ROWS,
                         f"./spark-submit.sh build_features --as-of {as_of_key(as_of)}")


EMBEDDED_PREFIX = "embedded="


def vectors_identity_root(cfg: Config, identity_id: str) -> str:
    """The vectors of one identity (features/news_vectors.vectors_identity): what is fitted
    once for the identity would live here, beside its partitions."""
    return work(cfg, VECTORS, identity_id)


def vectors_partition_root(cfg: Config, identity_id: str, day: dt.date) -> str:
    """The run root of the news first embedded on `day` under one identity."""
    return storage.join(vectors_identity_root(cfg, identity_id),
                        EMBEDDED_PREFIX + day.isoformat())


def vectors_partitions(cfg: Config, identity_id: str) -> list[dict]:
    """The current run of every partition of one identity's vectors, oldest day first (each
    with `day`)."""
    root = vectors_identity_root(cfg, identity_id)
    pointers = []
    for day, name in sorted(_keyed_folders(root, EMBEDDED_PREFIX, dt.date.fromisoformat)):
        partition = storage.join(root, name)
        if storage.has_committed_run(partition):
            pointers.append(dict(storage.current_run(partition, "embed_news"), day=day))
    return pointers


def categories_uri(vectors_run: str) -> str:
    """The news categories (schemas.NEWS_CATEGORIES) kept beside the vectors of an
    embed_news run folder."""
    return f"{vectors_run}/categories"
