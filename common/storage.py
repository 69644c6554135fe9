"""Paths and atomic publishing of outputs, for local folders and cluster file systems alike.

A job writes a run into a fresh folder `ROOT/runs/<run_id>/` and, only when every part of
the run is written, marks it finished (`_COMMITTED`) and points `ROOT/CURRENT.json` at it by
writing the pointer to a temporary name and renaming it (an atomic replace on local disks).
Readers resolve outputs through the pointer, so a run that crashed half-way is never read:
its folder is garbage that a later successful run deletes once it is a day old (younger, it
may belong to a run still in progress).

Paths are URIs (`file:///...`, `hdfs://...`, `s3a://...`) or local paths; a relative local
path is taken relative to the working directory.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import uuid
from urllib.parse import urlparse

import pyarrow.fs as pafs

POINTER_NAME = "CURRENT.json"


def to_uri(path: str) -> str:
    """A URI Spark and pyarrow agree on: local paths become absolute `file://` URIs."""
    if urlparse(path).scheme and len(urlparse(path).scheme) > 1:
        return path.rstrip("/")
    return "file://" + os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    return posixpath.join(to_uri(base), *parts)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(to_uri(uri))


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode("utf-8")


def write_text_atomic(uri: str, text: str) -> None:
    """Write a small file so that readers see the old content or the new, never a part."""
    fs, path = filesystem(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    temp = f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(temp) as stream:
        stream.write(text.encode("utf-8"))
    fs.move(temp, path)


def delete_dir(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent runs."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


class RunNotFound(FileNotFoundError):
    pass


def run_dir(root: str, run_id: str) -> str:
    return join(root, "runs", run_id)


COMMITTED_NAME = "_COMMITTED"
# An unfinished run folder younger than this may still be being written by another process:
# cleanup leaves it alone. Older ones are the remains of killed runs.
UNFINISHED_RUN_GRACE = dt.timedelta(hours=24)


def run_started(run_id: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(run_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def publish_run(root: str, run_id: str, summary: dict, keep_runs: int) -> None:
    """Mark `run_id` finished, make it the current run of `root`, then delete all but the
    newest `keep_runs` finished runs. Only finished runs count: a run folder left by a killed
    run never pushes out a finished one, and one still being written is never deleted."""
    pointer = {"run_id": run_id, "path": run_dir(root, run_id),
               "published_at": dt.datetime.now(dt.timezone.utc).isoformat(), "summary": summary}
    text = json.dumps(pointer, indent=2, sort_keys=True)
    write_text_atomic(join(run_dir(root, run_id), COMMITTED_NAME), text)
    write_text_atomic(join(root, POINTER_NAME), text)
    fs, runs_path = filesystem(join(root, "runs"))
    finished, unfinished = [], []
    for info in fs.get_file_info(pafs.FileSelector(runs_path)):
        if info.type != pafs.FileType.Directory or info.base_name == run_id:
            continue
        marker = fs.get_file_info(f"{info.path}/{COMMITTED_NAME}")
        (finished if marker.type == pafs.FileType.File else unfinished).append(info.base_name)
    finished.sort()
    for stale in finished[:max(0, len(finished) - (keep_runs - 1))]:
        fs.delete_dir(f"{runs_path}/{stale}")
    now = dt.datetime.now(dt.timezone.utc)
    for name in unfinished:
        started = run_started(name)
        if started is not None and now - started > UNFINISHED_RUN_GRACE:
            fs.delete_dir(f"{runs_path}/{name}")


def current_run(root: str, what: str) -> dict:
    """The pointer of the current run of `root`; a clear error naming `what` if there is none."""
    pointer_uri = join(root, POINTER_NAME)
    if not exists(pointer_uri):
        raise RunNotFound(f"no finished {what} run under {to_uri(root)} "
                          f"({POINTER_NAME} is missing): run the {what} step first")
    return json.loads(read_text(pointer_uri))
