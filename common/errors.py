"""The project's exceptions that mean "the user must act": each is reported by the job
entry point (common/cli.py) as one `error:` line and a non-zero exit, without a traceback.

They live in one module that imports nothing of the project, so that every layer can raise
them without importing the layers above it."""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input or configuration: reported as one clear message, without a traceback."""


class ConfigError(ValueError):
    """A configuration file or `--set` override that is not valid."""


class RunNotFound(FileNotFoundError):
    """A job's input was never published (or no committed run of it exists)."""
