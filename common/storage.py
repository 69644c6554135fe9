"""The one filesystem layer, and publication of outputs without rename.

Paths are URIs with the schemes Spark uses (`file://`, `hdfs://`, `s3a://`, `gs://`,
`abfs[s]://`) or local paths (relative ones are taken from the working directory). Everything
the jobs write outside Spark (summaries, commit markers, leases, checkpoints, model files)
goes through `filesystem(uri)`, which maps each scheme to a pyarrow filesystem:
`s3a`/`s3n` to pyarrow's S3 (credentials and region as the AWS SDK finds them; endpoint from
`AWS_ENDPOINT_URL`), `gs` to GCS, `hdfs`/`viewfs` to libhdfs, `abfs`/`wasb` to fsspec's
`adlfs` when it is installed. Spark itself reads and writes the same URIs with its Hadoop
connectors.

Publication never renames (object stores have no atomic rename, and an HDFS rename that
replaces a file is not atomic either):
- a job writes a run into a fresh folder `ROOT/runs/<run_id>/`, each file once, under its
  final name;
- while it writes, a lease `ROOT/runs/_<run_id>.lease` (renewed every LEASE_TTL / 4) tells
  others the run is alive;
- when every part is written, it writes the commit marker `runs/<run_id>/_COMMITTED` (one
  small object, created whole) holding the run's summary;
- readers take the newest committed run (run ids sort by start time). A run without a marker
  is never read.
Cleanup keeps the newest `keep_runs` committed runs and never removes a run whose lease is
alive; an unfinished run goes once its lease has expired (a killed job).
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import os
import posixpath
import socket
import tempfile
import threading
import uuid
from typing import Callable, Iterable
from urllib.parse import urlparse

import pyarrow.fs as pafs

from common.errors import RunNotFound, UserInputError

COMMITTED_NAME = "_COMMITTED"
LEASE_SUFFIX = ".lease"
# A lease not renewed for this long belongs to a dead process.
LEASE_TTL = dt.timedelta(minutes=10)
# A run folder without lease or marker (written before leases existed) counts as alive while
# younger than this.
UNFINISHED_RUN_GRACE = dt.timedelta(hours=24)


# ------------------------------------------------------------------------- the filesystem

def to_uri(path: str) -> str:
    """A URI Spark and this module agree on: local paths become absolute `file://` URIs."""
    scheme = urlparse(path).scheme
    if scheme and len(scheme) > 1:
        return path.rstrip("/")
    return "file://" + os.path.abspath(path)


def lies_under(uri: str, root: str) -> bool:
    """Whether `uri` is `root` or inside it (`file:/x`, as Hadoop writes local paths, and
    `file:///x` are the same place)."""
    def norm(text: str) -> str:
        text = to_uri(text).rstrip("/")
        return "file:///" + text[len("file:"):].lstrip("/") if text.startswith("file:") else text
    child, parent = norm(uri), norm(root)
    return child == parent or child.startswith(parent + "/")


def join(base: str, *parts: str) -> str:
    return posixpath.join(to_uri(base), *parts)


# Extra schemes (tests register a filesystem that forbids rename here).
_SCHEMES: dict[str, Callable[[str], tuple[pafs.FileSystem, str]]] = {}


def register_scheme(scheme: str, resolve: Callable[[str], tuple[pafs.FileSystem, str]]) -> None:
    """Make `scheme://...` URIs resolve through `resolve(uri) -> (filesystem, path)`."""
    _SCHEMES[scheme] = resolve
    _cached_filesystem.cache_clear()


@functools.lru_cache(maxsize=32)
def _cached_filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    if scheme in ("s3a", "s3n", "s3"):
        options = {}
        if os.environ.get("AWS_ENDPOINT_URL"):
            options["endpoint_override"] = os.environ["AWS_ENDPOINT_URL"]
        return pafs.S3FileSystem(**options)
    if scheme in ("abfs", "abfss", "wasb", "wasbs"):
        try:
            import fsspec
            handler = pafs.FSSpecHandler(fsspec.filesystem("abfs", account_name=netloc.split("@")[-1]
                                                           .split(".")[0]))
        except (ImportError, ValueError) as err:
            raise UserInputError(f"{scheme}:// paths need the adlfs package ({err}): "
                                 "pip install adlfs") from None
        return pafs.PyFileSystem(handler)
    if scheme in ("hdfs", "viewfs"):
        host, _, port = netloc.partition(":")
        return pafs.HadoopFileSystem(host or "default", int(port) if port else 0)
    return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a URI or local path."""
    uri = to_uri(uri)
    parsed = urlparse(uri)
    if parsed.scheme in _SCHEMES:
        return _SCHEMES[parsed.scheme](uri)
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), parsed.path
    fs = _cached_filesystem(parsed.scheme, parsed.netloc)
    if parsed.scheme in ("s3a", "s3n", "s3", "gs", "gcs"):
        return fs, f"{parsed.netloc}{parsed.path}"     # bucket/key
    if parsed.scheme in ("abfs", "abfss", "wasb", "wasbs"):
        return fs, f"{parsed.netloc.split('@')[0]}{parsed.path}"   # container/path
    return fs, parsed.path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def check_writable_folder(uri: str, key: str) -> None:
    """Fail with one line naming `key` when `uri` cannot be a folder this process writes
    into: it (or the nearest part of it that exists) is a file, or, on a local disk, the
    process cannot write there. Nothing is left behind."""
    fs, path = filesystem(uri)
    probe = path
    while True:
        kind = fs.get_file_info(probe).type
        if kind != pafs.FileType.NotFound or posixpath.dirname(probe) in (probe, ""):
            break
        probe = posixpath.dirname(probe)
    if kind == pafs.FileType.File:
        raise UserInputError(f"{key} = {uri}: {probe} is a file, not a folder: point {key} "
                             "at a folder")
    if isinstance(fs, pafs.LocalFileSystem):
        try:   # a file made and removed at once: permissions, read-only mounts, /proc alike
            with tempfile.NamedTemporaryFile(dir=probe, prefix=".newsrec-probe-"):
                pass
        except OSError as err:
            raise UserInputError(f"{key} = {uri}: cannot write into {probe} ({err.strerror}): "
                                 f"point {key} at a writable folder") from None


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file once under its final name. On an object store it appears whole or not at
    all; elsewhere it sits inside a run folder that no reader looks at before its commit
    marker exists."""
    fs, path = filesystem(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def delete_dir(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def delete_file(uri: str) -> None:
    fs, path = filesystem(uri)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def list_dir(uri: str) -> list[tuple[str, bool]]:
    """(name, is_directory) of the entries of a folder; [] if it does not exist."""
    fs, path = filesystem(uri)
    return [(info.base_name, info.type == pafs.FileType.Directory)
            for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))]


def total_size(uri: str) -> int:
    """Bytes of every file under a folder (0 if it does not exist)."""
    fs, path = filesystem(uri)
    return sum(info.size or 0 for info in fs.get_file_info(
        pafs.FileSelector(path, recursive=True, allow_not_found=True))
        if info.type == pafs.FileType.File)


# ------------------------------------------------------------------------------- leases

def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def lease_uri(parent: str, run_id: str) -> str:
    # "_" first: Spark's file listings skip it, should anyone read the parent as a table
    return join(parent, f"_{run_id}{LEASE_SUFFIX}")


def _write_lease(uri: str, run_id: str, state: str) -> None:
    write_text(uri, json.dumps({"run_id": run_id, "state": state, "host": socket.gethostname(),
                                "pid": os.getpid(),
                                "expires_at": (_now() + LEASE_TTL).isoformat()}))


class _Renewer:
    """One daemon thread per process that renews this process's live leases."""

    def __init__(self):
        self.leases: dict[str, str] = {}      # lease uri -> run id
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, uri: str, run_id: str) -> None:
        _write_lease(uri, run_id, "running")
        with self.lock:
            self.leases[uri] = run_id
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="lease-renewer",
                                               daemon=True)
                self.thread.start()

    def finish(self, uri: str) -> None:
        """Stop renewing; the lease says `published` and expires on its own (so that others
        keep their hands off the run for a while after it has been made current)."""
        with self.lock:
            run_id = self.leases.pop(uri, None)
        if run_id is not None:
            _write_lease(uri, run_id, "published")

    def _loop(self) -> None:
        import time
        while True:
            time.sleep(LEASE_TTL.total_seconds() / 4)
            with self.lock:
                leases = dict(self.leases)
            for uri, run_id in leases.items():
                try:
                    _write_lease(uri, run_id, "running")
                except OSError:
                    pass          # storage unreachable for now: try again next round
                except Exception:  # noqa: BLE001  the URI no longer resolves: stop renewing
                    with self.lock:
                        self.leases.pop(uri, None)


_RENEWER = _Renewer()


def begin_run(parent: str, run_id: str | None = None) -> str:
    """Start a run under `parent` (a `runs/` folder, or a table's date folder): take a lease
    on its id, renewed while this process lives. Returns the run id."""
    run_id = run_id or new_run_id()
    _RENEWER.add(lease_uri(parent, run_id), run_id)
    return run_id


def end_run(parent: str, run_id: str) -> None:
    """The run has been published (or abandoned): stop renewing its lease."""
    _RENEWER.finish(lease_uri(parent, run_id))


def abandon_unfinished_runs() -> list[str]:
    """Delete the runs this process has begun and not published (its job failed), with their
    leases, so that nothing waits for a lease no one renews. Returns their folders."""
    with _RENEWER.lock:
        leases = dict(_RENEWER.leases)
        _RENEWER.leases.clear()
    folders = []
    for uri, run_id in leases.items():
        folder = join(posixpath.dirname(uri.rstrip("/")), run_id)
        delete_dir(folder)
        delete_file(uri)
        folders.append(folder)
    return folders


def lease_state(parent: str, run_id: str) -> str:
    """`running` (alive: keep off), `published` (its owner is done with it), `expired` (its
    owner died) or `none` (no lease file)."""
    uri = lease_uri(parent, run_id)
    try:
        lease = json.loads(read_text(uri))
    except FileNotFoundError:
        return "none"
    except (ValueError, OSError):
        return "running"      # being written right now
    if lease.get("state") == "published":
        return "published"
    expires = dt.datetime.fromisoformat(lease["expires_at"])
    return "running" if expires > _now() else "expired"


# --------------------------------------------------------------------------------- runs

def new_run_id() -> str:
    """Sortable by start time, unique across concurrent runs."""
    return _now().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def run_started(run_id: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(run_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def runs_dir(root: str) -> str:
    return join(root, "runs")


def run_dir(root: str, run_id: str) -> str:
    return join(root, "runs", run_id)


def start_run(root: str) -> str:
    """A new run of the output at `root`, leased until it is published."""
    return begin_run(runs_dir(root))


def may_be_in_progress(parent: str, run_id: str) -> bool:
    """Whether an unfinished run may still be written by a live process."""
    state = lease_state(parent, run_id)
    if state == "none":
        started = run_started(run_id)
        return started is None or _now() - started <= UNFINISHED_RUN_GRACE
    return state == "running"


def committed_marker_uri(root: str, run_id: str) -> str:
    return join(run_dir(root, run_id), COMMITTED_NAME)


def _committed(root: str, run_id: str) -> dict | None:
    """The run's commit marker, with `path` where the run is now (a work folder copied or
    moved elsewhere stays readable), or None when the run is not committed."""
    try:
        marker = json.loads(read_text(committed_marker_uri(root, run_id)))
    except FileNotFoundError:
        return None
    except ValueError:
        return None           # a marker still being written (HDFS): not committed yet
    return dict(marker, path=run_dir(root, run_id))


def publish_run(root: str, run_id: str, summary: dict, keep_runs: int,
                keep: Iterable[str] = ()) -> None:
    """Commit `run_id` (it becomes the current run of `root`), then delete all but the newest
    `keep_runs` committed runs (never those in `keep`), and the unfinished runs whose owner has
    died. Only committed runs count toward keep_runs, and a run that is still being written is
    never deleted."""
    marker = {"run_id": run_id, "path": run_dir(root, run_id),
              "published_at": _now().isoformat(), "summary": summary}
    write_text(committed_marker_uri(root, run_id), json.dumps(marker, indent=2, sort_keys=True))
    end_run(runs_dir(root), run_id)
    committed, unfinished = [], []
    for name, is_dir in list_dir(runs_dir(root)):
        if not is_dir or name == run_id:
            continue
        (committed if _committed(root, name) is not None else unfinished).append(name)
    committed.sort()
    for stale in committed[:max(0, len(committed) - (keep_runs - 1))]:
        if stale in keep:
            continue
        delete_dir(run_dir(root, stale))
        delete_file(lease_uri(runs_dir(root), stale))
    for name in unfinished:
        if not may_be_in_progress(runs_dir(root), name):
            delete_dir(run_dir(root, name))
            delete_file(lease_uri(runs_dir(root), name))


def committed_runs(root: str) -> list[str]:
    """Ids of the committed runs of `root`, oldest first."""
    names = sorted(name for name, is_dir in list_dir(runs_dir(root)) if is_dir)
    return [name for name in names if _committed(root, name) is not None]


def current_run(root: str, what: str) -> dict:
    """The commit marker of the newest committed run of `root`; a clear error naming `what`
    if there is none."""
    names = sorted((name for name, is_dir in list_dir(runs_dir(root)) if is_dir), reverse=True)
    for name in names:
        marker = _committed(root, name)
        if marker is not None:
            return marker
    raise RunNotFound(f"no finished {what} run under {to_uri(root)}: run the {what} step first")


def committed_run(root: str, run_id: str, what: str) -> dict:
    """The commit marker of the run `run_id` of `root`; a clear error naming `what` if that
    run is not there (never committed, or deleted since: paths.keep_runs)."""
    marker = _committed(root, run_id)
    if marker is None:
        raise RunNotFound(f"no finished {what} run {run_id} under {to_uri(root)} (deleted, "
                          "or never finished)")
    return marker


def has_committed_run(root: str) -> bool:
    return any(_committed(root, name) is not None
               for name, is_dir in list_dir(runs_dir(root)) if is_dir)
