"""The Python environment shipped to the executors, so they never depend on the driver's venv.

On YARN, Kubernetes or a standalone cluster the executors must run the same Python packages
as the driver. The documented way (Spark's "Python Package Management") is to pack the
virtual environment with venv-pack, send the archive with `--archives ARCHIVE#environment`
and point `spark.pyspark.python` at `./environment/bin/python`: each executor unpacks the
archive in its own working directory.

`spark.ship_environment` selects it:
- `""` (default): the executors use `spark.pyspark.python` as the cluster has it (the
  driver's venv path in local mode);
- `pack`: venv-pack the launcher's venv into `NEWSREC_CACHE` (default `~/.cache/newsrec`),
  once per set of installed packages, and ship that file;
- any other value: the URI of an archive built before (`hdfs:///envs/newsrec.tar.gz`), which
  YARN and Kubernetes fetch without uploading it again.

venv-pack does not include the interpreter: every node needs the same Python at the same
path as the venv was built with (`python3.11` from the same image, for example).
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import uuid

# The folder name each executor unpacks the archive under, and the Python inside it.
ARCHIVE_ALIAS = "environment"
EXECUTOR_PYTHON = f"./{ARCHIVE_ALIAS}/bin/python"
# gzip level 1: the fastest gzip, and the archive is still less than half the venv. A
# plain .tar would pack faster, but Spark unpacks .tar with Java code that refuses the venv's
# symlink to its interpreter; .tar.gz goes through the system's tar.
COMPRESS_LEVEL = 1
# Left out of the archive, a third of the venv: Spark's jars (executors run the cluster's own
# Spark, and their Python workers import the cluster's pyspark first), TensorFlow's C++
# headers (only for compiling ops; Horovod was compiled at set-up), libclang (TensorFlow's
# build-time dependency), the plotting packages (the report's plot is drawn on the driver)
# and the packages' own test suites.
EXCLUDED = ("lib/python*/site-packages/pyspark/jars/*",
            "lib/python*/site-packages/tensorflow/include/*",
            "lib/python*/site-packages/clang/*",
            "lib/python*/site-packages/matplotlib/*",
            "lib/python*/site-packages/fontTools/*",
            "lib/python*/site-packages/pandas/tests/*",
            "lib/python*/site-packages/numpy/*/tests/*",
            "lib/python*/site-packages/pyarrow/tests/*")


class PackError(RuntimeError):
    """The environment cannot be packed (venv-pack missing, not a venv, ...)."""


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("NEWSREC_CACHE", pathlib.Path.home() / ".cache" / "newsrec"))


def fingerprint(venv: pathlib.Path) -> str:
    """Changes whenever a package is installed, removed or upgraded in `venv`, or the
    project's own code is not part of it (it travels separately with --py-files)."""
    site = sorted(venv.glob("lib/python*/site-packages"))
    names = sorted(p.name for s in site for p in s.glob("*.dist-info"))
    digest = hashlib.sha256()
    digest.update(str(venv.resolve()).encode())
    digest.update(sys.version.encode())
    digest.update(repr((COMPRESS_LEVEL, EXCLUDED)).encode())
    for name in names:
        digest.update(name.encode() + b"\n")
    return digest.hexdigest()[:16]


def packed_archive(venv: str | os.PathLike) -> pathlib.Path:
    """The venv-pack archive of `venv`, packed now unless an identical one is cached."""
    venv = pathlib.Path(venv)
    if not (venv / "pyvenv.cfg").is_file():
        raise PackError(f"{venv} is not a virtual environment (no pyvenv.cfg): "
                                "run ./setup.sh first")
    target = cache_dir() / f"newsrec-env-{fingerprint(venv)}.tar.gz"
    if target.is_file():
        return target
    tool = venv / "bin" / "venv-pack"
    if not tool.is_file():
        raise PackError(f"venv-pack is not installed in {venv}: run ./setup.sh again")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Packed under a temporary name and renamed: a local file, so the rename is atomic and a
    # killed pack never leaves a truncated archive under the cached name.
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    print(f"packing {venv} into {target} (once per set of installed packages)", file=sys.stderr)
    result = subprocess.run([str(tool), "-p", str(venv), "-o", str(partial), "--format", "tar.gz",
                             "--compress-level", str(COMPRESS_LEVEL), "-q",
                             *(f"--exclude={pattern}" for pattern in EXCLUDED)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise PackError(f"venv-pack failed for {venv}: {result.stderr.strip()[-500:]}")
    os.replace(partial, target)
    # archives of earlier package sets: keep the one before this, in case a job still ships it
    older = sorted((p for p in target.parent.glob("newsrec-env-*.tar.gz") if p != target),
                   key=lambda p: p.stat().st_mtime)
    for stale in older[:-1]:
        stale.unlink(missing_ok=True)
    return target


def submit_options(setting: str, venv: str | os.PathLike) -> list[str]:
    """spark-submit options that ship the environment for `spark.ship_environment`."""
    if not setting:
        return []
    archive = str(packed_archive(venv)) if setting == "pack" else setting
    return ["--archives", f"{archive}#{ARCHIVE_ALIAS}",
            "--conf", f"spark.pyspark.python={EXECUTOR_PYTHON}"]
