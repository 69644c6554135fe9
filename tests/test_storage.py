"""Publication without rename: write-once run folders, a commit marker written last, readers
taking the newest committed run, leases that keep cleanup off runs still being written. Run
on a filesystem that refuses every rename, as object stores have no atomic one."""
from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlparse

import pyarrow.fs as pafs
import pytest

from common import storage


class NoRenameHandler(pafs.FileSystemHandler):
    """A local filesystem whose move() fails, like an object store's missing atomic rename."""

    def __init__(self):
        self.local = pafs.LocalFileSystem()
        self.moves = 0

    def get_type_name(self):
        return "norename"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("not here")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.moves += 1
        raise OSError(f"rename is not supported here ({src} -> {dest})")

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.local.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        raise OSError("no appends on an object store")


@pytest.fixture
def no_rename(tmp_path):
    handler = NoRenameHandler()
    fs = pafs.PyFileSystem(handler)
    storage.register_scheme("norename", lambda uri: (fs, urlparse(uri).path))
    yield f"norename://{tmp_path}", handler
    storage._SCHEMES.pop("norename", None)


def run_id_at(hours_ago: float, tag: str) -> str:
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours_ago)
    return moment.strftime("%Y%m%dT%H%M%SZ") + f"-{tag}"


def write_run(root: str, run_id: str, lease: bool = False) -> None:
    if lease:
        storage.begin_run(storage.runs_dir(root), run_id)
    storage.write_text(storage.join(storage.run_dir(root, run_id), "part.txt"), "data")


def test_publication_and_cleanup_never_rename(no_rename):
    base, handler = no_rename
    root = f"{base}/out"
    with pytest.raises(storage.RunNotFound, match="run the thing step first"):
        storage.current_run(root, "thing")
    first = run_id_at(2, "first")
    write_run(root, first, lease=True)
    assert not storage.has_committed_run(root)          # written but not committed: invisible
    storage.publish_run(root, first, {"n": 1}, keep_runs=2)
    assert storage.current_run(root, "thing")["run_id"] == first
    later = [run_id_at(1 - i * 0.1, f"r{i}") for i in range(3)]
    for i, run_id in enumerate(later):
        write_run(root, run_id, lease=True)
        storage.publish_run(root, run_id, {"n": i + 2}, keep_runs=2)
    current = storage.current_run(root, "thing")
    assert current["run_id"] == later[-1] and current["summary"] == {"n": 4}
    assert storage.committed_runs(root) == later[-2:]
    assert handler.moves == 0


def test_readers_take_the_newest_committed_run_never_an_unfinished_one(no_rename):
    base, _ = no_rename
    root = f"{base}/out"
    old, newer = run_id_at(3, "old"), run_id_at(1, "newer")
    write_run(root, old)
    storage.publish_run(root, old, {"n": "old"}, keep_runs=3)
    write_run(root, newer, lease=True)           # started later, still writing
    assert storage.current_run(root, "thing")["run_id"] == old
    # a marker cut short (HDFS shows a file while it is written) is not a commit
    storage.write_text(storage.committed_marker_uri(root, newer), '{"run_id": "new')
    assert storage.current_run(root, "thing")["run_id"] == old
    storage.publish_run(root, newer, {"n": "newer"}, keep_runs=3)
    assert storage.current_run(root, "thing")["summary"] == {"n": "newer"}


def test_cleanup_keeps_live_runs_and_removes_dead_ones(no_rename, monkeypatch):
    base, _ = no_rename
    root = f"{base}/out"
    finished = [run_id_at(50 - i, f"f{i}") for i in range(3)]
    for run_id in finished:
        write_run(root, run_id)
        storage.publish_run(root, run_id, {}, keep_runs=100)
    killed_long_ago = run_id_at(30, "killed")           # no lease, older than the grace
    write_run(root, killed_long_ago)
    leased = run_id_at(30, "leased")                     # as old, but its lease is alive
    write_run(root, leased, lease=True)
    expired = run_id_at(0.5, "expired")                  # its owner died 20 minutes ago
    write_run(root, expired)
    storage.write_text(storage.lease_uri(storage.runs_dir(root), expired), json.dumps(
        {"run_id": expired, "state": "running", "expires_at":
         (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=20)).isoformat()}))
    young = run_id_at(0.2, "young")                      # no lease, young: may be writing
    write_run(root, young)
    newest = run_id_at(0, "new")
    write_run(root, newest, lease=True)
    storage.publish_run(root, newest, {}, keep_runs=2)
    left = sorted(name for name, is_dir in storage.list_dir(storage.runs_dir(root)) if is_dir)
    # keep_runs counts committed runs only: the newest finished one before this one stays
    assert left == sorted([finished[-1], leased, young, newest])
    leases = {name for name, is_dir in storage.list_dir(storage.runs_dir(root)) if not is_dir}
    assert f"_{expired}.lease" not in leases and f"_{leased}.lease" in leases


def test_a_lease_goes_from_running_to_published(no_rename):
    base, _ = no_rename
    parent = f"{base}/date=2019-11-16"
    run_id = storage.begin_run(parent)
    assert storage.lease_state(parent, run_id) == "running"
    assert storage.may_be_in_progress(parent, run_id)
    storage.end_run(parent, run_id)
    assert storage.lease_state(parent, run_id) == "published"
    assert not storage.may_be_in_progress(parent, run_id)
    assert storage.lease_state(parent, "20190101T000000Z-none") == "none"


def test_spark_schemes_map_to_one_filesystem_layer():
    fs, path = storage.filesystem("s3a://bucket/newsrec/news_vectors")
    assert fs.type_name == "s3" and path == "bucket/newsrec/news_vectors"
    local, where = storage.filesystem("relative/path")
    assert local.type_name == "local" and where.endswith("/relative/path")
    assert storage.to_uri("hdfs://nn:8020/newsrec/") == "hdfs://nn:8020/newsrec"


def test_total_size_counts_every_file_below_a_folder(tmp_path):
    (tmp_path / "run" / "part").mkdir(parents=True)
    (tmp_path / "run" / "a.parquet").write_bytes(b"x" * 10)
    (tmp_path / "run" / "part" / "b.parquet").write_bytes(b"y" * 32)
    assert storage.total_size(str(tmp_path / "run")) == 42
    assert storage.total_size(str(tmp_path / "missing")) == 0
