"""The one way to load configuration.

`conf/default.yaml` defines every key and its type (the type of its default value). A user
file (`--config FILE`) and `--set dotted.key=value` overrides are merged on top; a key that
is not in the defaults, or a value whose type differs from the default's, is rejected with
a message naming the key and where it came from. Then every value is checked against its
range, choices and relations to other keys (common/config_rules.py).
"""
from __future__ import annotations

import argparse
import copy
import importlib.resources
import os
from typing import Any, Iterable, Mapping

import yaml

from common.errors import ConfigError

DEFAULT_CONFIG_NAME = "default.yaml"  # in the `conf` package (readable from a zip bundle too)

# Keys whose value is a free-form mapping (their contents are not checked against defaults).
FREE_FORM_KEYS = {"spark.extra"}


class Config(Mapping):
    """A read-only nested configuration with dotted access: `cfg["features.npratio"]`."""

    def __init__(self, data: dict):
        self._data = data

    def __getitem__(self, dotted: str) -> Any:
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"no configuration key '{dotted}'")
            node = node[part]
        return copy.deepcopy(node)

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)

    def with_overrides(self, overrides: Iterable[str]) -> "Config":
        data = self.to_dict()
        defaults = _read_defaults()
        for item in overrides:
            _apply_override(data, defaults, item)
        return _checked(Config(data))


def _checked(cfg: Config) -> Config:
    from common.config_rules import violations
    problems = violations(cfg.__getitem__)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def _read_defaults() -> dict:
    text = importlib.resources.files("conf").joinpath(DEFAULT_CONFIG_NAME).read_text("utf-8")
    return yaml.safe_load(text)


def _read_yaml(path: str | os.PathLike, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{what} config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} config file {path} must hold a mapping at the top level")
    return data


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _check_value(key: str, default: Any, value: Any, source: str) -> Any:
    """Return `value` if its type matches the default's (ints are accepted for floats)."""
    if key in FREE_FORM_KEYS:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):   # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{source}: '{key}' must be {_type_name(default)} "
                          f"(like the default {default!r}), got {value!r}")
    return value


def _merge(base: dict, defaults: dict, update: dict, source: str, prefix: str = "") -> None:
    for name, value in update.items():
        key = f"{prefix}{name}"
        if name not in defaults:
            known = ", ".join(sorted(f"{prefix}{k}" for k in defaults))
            raise ConfigError(f"{source}: unknown key '{key}' (known keys here: {known})")
        default = defaults[name]
        if isinstance(default, dict) and key not in FREE_FORM_KEYS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a mapping of settings, got {value!r}")
            _merge(base[name], default, value, source, prefix=f"{key}.")
        else:
            base[name] = _check_value(key, default, value, source)


def _apply_override(data: dict, defaults: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item!r}: value is not valid YAML: {err}") from None
    default_node: Any = defaults
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(default_node, dict) or part not in default_node:
            break
        default_node = default_node[part]
    # A string default takes the raw text, so `--set paths.work=007` stays "007".
    if isinstance(default_node, dict) and isinstance(default_node.get(parts[-1]), str) \
            and not isinstance(value, str):
        value = raw
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    _merge(data, defaults, nested, source=f"--set {item}")


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the file at `path` (if any), then each `dotted.key=value` override."""
    defaults = _read_defaults()
    data = copy.deepcopy(defaults)
    if path:
        _merge(data, defaults, _read_yaml(path, "user"), source=str(path))
    for item in overrides:
        _apply_override(data, defaults, item)
    return _checked(Config(data))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--config` / `--set` options every entry point takes."""
    parser.add_argument("--config", metavar="FILE", help="YAML file overriding conf/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one key, e.g. features.npratio=8")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
