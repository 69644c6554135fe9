"""Paths and atomic publishing of outputs, for local folders and cluster file systems alike.

A job writes a run into a fresh folder `ROOT/runs/<run_id>/` and, only when every part of
the run is written, points `ROOT/CURRENT.json` at it by writing the pointer to a temporary
name and renaming it (an atomic replace on local disks and HDFS). Readers resolve outputs
through the pointer, so a run that crashed half-way is never read: its folder is garbage
that the next successful run deletes.

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


def publish_run(root: str, run_id: str, summary: dict, keep_runs: int) -> None:
    """Make `run_id` the current run of `root`, then delete all but the newest `keep_runs`."""
    pointer = {"run_id": run_id, "path": run_dir(root, run_id),
               "published_at": dt.datetime.now(dt.timezone.utc).isoformat(), "summary": summary}
    write_text_atomic(join(root, POINTER_NAME), json.dumps(pointer, indent=2, sort_keys=True))
    fs, runs_path = filesystem(join(root, "runs"))
    runs = sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(runs_path))
                  if info.type == pafs.FileType.Directory)
    older = [r for r in runs if r != run_id]
    for stale in older[:max(0, len(older) - (keep_runs - 1))]:
        fs.delete_dir(f"{runs_path}/{stale}")


def current_run(root: str, what: str) -> dict:
    """The pointer of the current run of `root`; a clear error naming `what` if there is none."""
    pointer_uri = join(root, POINTER_NAME)
    if not exists(pointer_uri):
        raise RunNotFound(f"no finished {what} run under {to_uri(root)} "
                          f"({POINTER_NAME} is missing): run the {what} step first")
    return json.loads(read_text(pointer_uri))
