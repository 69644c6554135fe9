"""The docs name only files that exist: every repository path in backticks in a Markdown file
of the repository, and every `python -m MODULE` they give, resolves in the tree."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDERS = ("jobs", "dcn", "common", "features", "evaluation", "serving", "synthetic", "tests",
           "bench", "deploy", "conf", ".ci")
QUOTED = re.compile(r"`([^`\s]+)`")
MODULE = re.compile(r"python -m ([A-Za-z_][\w.]*)")
PLACEHOLDER = re.compile(r"[<>{}*=$\[\]]|\.\.\.")


def documents() -> list[pathlib.Path]:
    return sorted(p for p in ROOT.glob("*.md"))


def repository_paths(text: str) -> set[str]:
    found = set()
    for token in QUOTED.findall(text):
        token = token.rstrip(".,:;)").split(":")[0]
        if PLACEHOLDER.search(token) or any(
                re.fullmatch(r"[A-Z_]+", part.split(".")[0]) for part in token.split("/")[1:]):
            continue   # a placeholder: `jobs/JOB.py`, `dcn/<x>.py`
        if token.split("/")[0] in FOLDERS and "/" in token or (
                "/" not in token and re.fullmatch(r"[\w.-]+\.(md|sh|toml)", token)):
            found.add(token)
    return found


def test_repository_paths_are_found_in_a_sample():
    text = "see `jobs/daily.py`, `README.md`, `paths.work/models/`, `dcn/<x>.py` `jobs/JOB.py` and `deploy/`"
    assert repository_paths(text) == {"jobs/daily.py", "README.md", "deploy/"}


def test_every_path_the_docs_name_exists():
    missing = [f"{doc.name}: {path}" for doc in documents()
               for path in sorted(repository_paths(doc.read_text(encoding="utf-8")))
               if not (ROOT / path).exists()]
    assert missing == []


def test_every_module_the_docs_run_exists():
    missing = []
    for doc in documents():
        for module in sorted(set(MODULE.findall(doc.read_text(encoding="utf-8")))):
            if module in ("pytest", "pip", "venv") or any(
                    re.fullmatch(r"[A-Z_]+", part) for part in module.split(".")):
                continue   # not ours, or a placeholder: `python -m bench.NAME`
            parts = module.split(".")
            base = ROOT.joinpath(*parts)
            if not (base.with_suffix(".py").exists() or (base / "__init__.py").exists()):
                missing.append(f"{doc.name}: python -m {module}")
    assert missing == []
