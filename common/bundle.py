"""The project's code as spark-submit.sh ships it (`--py-files`): the wheel of the checkout.

    python -m common.bundle CHECKOUT      prints the bundle's path, built first if needed

The wheel holds what `pip install .` installs: the packages and package data pyproject.toml
selects, built by pip with the venv's setuptools (no build isolation, no dependencies). It
is built from a copy of the files it is made of, so the checkout gets no build/ or egg-info
folder, and cached under NEWSREC_CACHE (common/environment.py) in a folder named by a hash of
those files: a launch with unchanged sources only hashes them.

The file is named newsrec.zip: Spark puts a `--py-files` entry on its Python workers'
`sys.path` only for .zip, .egg and .jar names, and Python imports a wheel of pure-Python
packages as any zip (conf/default.yaml included, through importlib.resources). jobs/train.py
hands the same file name to each Horovod rank.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid

from common.environment import cache_dir

BUNDLE_NAME = "newsrec.zip"
# A bundle nobody launched with for this long is removed (each launch refreshes its mtime);
# a job still running with an older bundle has had it uploaded long before.
STALE_S = 7 * 24 * 3600


class BundleError(RuntimeError):
    """The wheel cannot be built (no setuptools in the venv, a broken pyproject.toml, ...)."""


def source_files(root: pathlib.Path) -> list[str]:
    """The files the wheel is built from, relative to `root`: pyproject.toml, the files it
    reads its dependencies from, and every file of the packages it selects."""
    from setuptools import find_packages

    pyproject = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))
    setuptools_cfg = pyproject.get("tool", {}).get("setuptools", {})
    find = setuptools_cfg.get("packages", {}).get("find", {})
    files = ["pyproject.toml"]
    for spec in setuptools_cfg.get("dynamic", {}).values():
        files += spec.get("file", []) if isinstance(spec, dict) else []
    for where in find.get("where", ["."]):
        for package in find_packages(str(root / where), include=find.get("include", ["*"]),
                                     exclude=find.get("exclude", ())):
            folder = pathlib.Path(where, *package.split("."))
            files += [str(path.relative_to(root)) for path in (root / folder).iterdir()
                      if path.is_file() and path.suffix != ".pyc"]
    return sorted(set(files))


def fingerprint(root: pathlib.Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_wheel(root: pathlib.Path, files: list[str], target: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(prefix="newsrec-wheel-") as scratch:
        source, dist = pathlib.Path(scratch, "source"), pathlib.Path(scratch, "dist")
        for name in files:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / name, source / name)
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                                 "--no-build-isolation", "--disable-pip-version-check",
                                 str(source), "-w", str(dist)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wheels = list(dist.glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise BundleError(f"pip wheel failed for {root} (is setuptools installed? run "
                              f"./setup.sh): {result.stderr.strip()[-500:]}")
        # Copied under a temporary name beside the target and renamed: the rename is atomic,
        # so a concurrent launch never ships a half-written file.
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        shutil.copyfile(wheels[0], partial)
        os.replace(partial, target)


def bundle(root: str | os.PathLike) -> pathlib.Path:
    """The wheel of the checkout at `root` as BUNDLE_NAME, built now unless cached."""
    root = pathlib.Path(root).resolve()
    files = source_files(root)
    target = cache_dir() / f"newsrec-code-{fingerprint(root, files)}" / BUNDLE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        os.utime(target)
    else:
        build_wheel(root, files, target)
    now = time.time()
    for folder in cache_dir().glob("newsrec-code-*"):
        with contextlib.suppress(FileNotFoundError):   # removed by a concurrent launch
            used = (folder / BUNDLE_NAME).stat().st_mtime
            if now - used > STALE_S:
                shutil.rmtree(folder, ignore_errors=True)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m common.bundle CHECKOUT", file=sys.stderr)
        return 2
    try:
        print(bundle(argv[0]))
    except (BundleError, OSError) as err:
        print(f"error: the project's bundle: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
