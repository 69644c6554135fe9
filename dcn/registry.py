"""The model registry, kept in MLflow: every training run with its parameters and per-epoch
metrics, a registered model version per export (a *candidate*: registered, not served), and
the alias `served` that score and daily read (serving/inputs.py). Only the promote stage
moves the alias (evaluation/promotion.py decides); the registered model's tag
`served_history` lists the versions served so far, oldest first, so that a rollback always
knows which version was served before the current one.

The store is `registry.tracking_uri`, or a SQLite database under a local `paths.work`
(outputs.registry_dir). MLflow is imported here, lazily, and only by the processes that
write to the registry (rank 0 of training, the promote stage, the score driver): never in
Spark tasks. README.md, "Model registry and promotion", is the specification.
"""
from __future__ import annotations

import dataclasses
import json
import os

from common import outputs, storage
from common.config import Config
from common.errors import UserInputError

SERVED = "served"
# Tags of a registered model version: our export's folder name, its rows' as-of moment, and
# the last promotion decision about it.
VERSION_TAG = "newsrec.version"
AS_OF_TAG = "newsrec.as_of"
DECISION_TAG = "newsrec.decision"
HISTORY_TAG = "served_history"
DATABASE = "mlflow.db"
# Per-epoch figures of dcn/epochs.py's history logged as MLflow metrics, step = epoch.
EPOCH_METRICS = ("train_loss", "val_loss", "val_auc", "examples_per_second")


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """A registered version: MLflow's number, our export's version (the folder name under
    models/runs, the `model_version` of the table's rows) and the as-of of its rows."""

    number: int
    version: str
    as_of: str | None
    folder: str

    def describe(self) -> dict:
        return dataclasses.asdict(self)


def tracking_uri(cfg: Config) -> str:
    """`registry.tracking_uri`, or SQLite at paths.work/mlflow/mlflow.db when paths.work is
    local (a database file on an object store cannot be shared: name a tracking server)."""
    if cfg["registry.tracking_uri"]:
        return cfg["registry.tracking_uri"]
    folder = outputs.registry_dir(cfg)
    if not folder.startswith("file://"):
        raise UserInputError(f"paths.work is {cfg['paths.work']}, not a local path: set "
                             "registry.tracking_uri to an MLflow tracking server (http://...)")
    local = folder[len("file://"):]
    os.makedirs(local, exist_ok=True)
    return f"sqlite:///{local}/{DATABASE}"


class Registry:
    """The registered model `registry.model_name` and the experiment `registry.experiment`,
    created on first use (by the one process that writes: never by parallel writers)."""

    def __init__(self, cfg: Config):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        self.name = cfg["registry.model_name"]
        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        try:
            self._ensure()
        except MlflowException as err:
            raise UserInputError(f"the model registry at {self.uri} cannot be used: "
                                 f"{err.message}") from None

    def _ensure(self) -> None:
        experiment = self.client.get_experiment_by_name(self.cfg["registry.experiment"])
        self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            self.cfg["registry.experiment"],
            artifact_location=outputs.work(self.cfg, outputs.REGISTRY, "artifacts"))
        if not self.client.search_registered_models(f"name = '{self.name}'"):
            self.client.create_registered_model(
                self.name, description="DCN click model; alias `served` is what score uses")

    # ------------------------------------------------------------------ training

    def record_training(self, version: str, folder: str, metadata: dict,
                        history: list | None) -> ModelVersion:
        """Log the training run (parameters, per-epoch and final metrics) and register its
        export as a candidate version; an export registered before is returned as it is."""
        known = self.find(version)
        if known is not None:
            return known
        run = self.client.create_run(self.experiment_id, run_name=version,
                                     tags={VERSION_TAG: version})
        run_id = run.info.run_id
        for key, value in sorted(_params(metadata).items()):
            self.client.log_param(run_id, key, value)
        for record in history or []:
            for name in EPOCH_METRICS:
                if _finite(record.get(name)):
                    self.client.log_metric(run_id, f"epoch_{name}", float(record[name]),
                                           step=int(record["epoch"]))
        for name, value in (metadata.get("metrics") or {}).items():
            if _finite(value):
                self.client.log_metric(run_id, name, float(value))
        self.client.set_terminated(run_id)
        as_of = (metadata.get("features") or {}).get("as_of")
        created = self.client.create_model_version(
            self.name, source=folder, run_id=run_id,
            tags={VERSION_TAG: version, AS_OF_TAG: str(as_of)})
        return ModelVersion(int(created.version), version, as_of, folder)

    # ------------------------------------------------------------------ versions

    def versions(self) -> list[ModelVersion]:
        """Every registered version, oldest first."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted((_version(v) for v in found), key=lambda v: v.number)

    def find(self, version: str) -> ModelVersion | None:
        return next((v for v in self.versions() if v.version == version), None)

    def candidate(self, version: str | None = None, as_of: str | None = None) -> ModelVersion:
        """`version`, else the newest registered version (trained on rows as of `as_of` when
        given)."""
        versions = [v for v in self.versions() if as_of is None or v.as_of == as_of]
        if version:
            versions = [v for v in versions if v.version == version]
        if not versions:
            wanted = f"version {version!r}" if version else "version"
            where = f" trained as of {as_of}" if as_of else ""
            raise UserInputError(f"no registered model {wanted}{where} in {self.name} at "
                                 f"{self.uri}: train one first")
        return versions[-1]

    def served(self) -> ModelVersion | None:
        aliases = self.client.get_registered_model(self.name).aliases
        if SERVED not in aliases:
            return None
        return _version(self.client.get_model_version(self.name, str(aliases[SERVED])))

    def protected_versions(self) -> set[str]:
        """The exports that training must not delete: the served history (the served
        version and those a rollback may return to)."""
        numbers = set(self._history_ending_with_served())
        return {v.version for v in self.versions() if v.number in numbers}

    def history(self) -> list[int]:
        tags = self.client.get_registered_model(self.name).tags
        return [int(n) for n in json.loads(tags.get(HISTORY_TAG, "[]"))]

    # ------------------------------------------------------------------ serving

    def serve(self, version: ModelVersion) -> None:
        """Point `served` at `version` and push it on the served history."""
        history = self._history_ending_with_served()
        self.client.set_registered_model_alias(self.name, SERVED, str(version.number))
        self._write_history(history + [version.number])

    def roll_back(self) -> ModelVersion:
        """Point `served` at the version served before the current one (popping the
        current one off the history)."""
        history = self._history_ending_with_served()
        if len(history) < 2:
            raise UserInputError(f"cannot roll back: {self.name} has no earlier served version "
                                 f"(served so far: {history or 'none'})")
        previous = history[-2]
        self.client.set_registered_model_alias(self.name, SERVED, str(previous))
        self._write_history(history[:-1])
        return _version(self.client.get_model_version(self.name, str(previous)))

    def tag_decision(self, version: ModelVersion, decision: dict) -> None:
        self.client.set_model_version_tag(self.name, str(version.number), DECISION_TAG,
                                          json.dumps(decision, sort_keys=True, default=str))

    def _history_ending_with_served(self) -> list[int]:
        """The history, ending with the served version even if a promote died between moving
        the alias and writing the history (or someone moved the alias by hand)."""
        history, served = self.history(), self.served()
        if served is not None and (not history or history[-1] != served.number):
            history.append(served.number)
        return history

    def _write_history(self, history: list[int]) -> None:
        self.client.set_registered_model_tag(self.name, HISTORY_TAG, json.dumps(history))


def has_store(cfg: Config) -> bool:
    """Whether there is a registry to read: a tracking server named, or the SQLite store."""
    folder = outputs.registry_dir(cfg)
    return bool(cfg["registry.tracking_uri"]) or storage.exists(f"{folder}/{DATABASE}")


def served_version(cfg: Config) -> ModelVersion | None:
    """The served version, or None when nothing is served yet."""
    return Registry(cfg).served()


def _version(found) -> ModelVersion:
    tags = found.tags or {}
    as_of = tags.get(AS_OF_TAG)
    return ModelVersion(int(found.version), tags.get(VERSION_TAG, ""),
                        None if as_of in (None, "None") else as_of, found.source)


def _params(metadata: dict) -> dict:
    """The training's parameters: the model and train settings, and its data."""
    config = metadata.get("config") or {}
    features = metadata.get("features") or {}
    params = {f"{group}.{key}": json.dumps(value) if isinstance(value, (list, dict)) else value
              for group in ("model", "train") for key, value in (config.get(group) or {}).items()}
    params.update({"features.run_id": features.get("run_id"), "as_of": features.get("as_of"),
                   "train_rows": features.get("train_rows"), "run_key": metadata.get("run_key"),
                   "horovod_size": metadata.get("horovod_size")})
    return {k: str(v) for k, v in params.items() if v is not None}


def _finite(value) -> bool:
    import math
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
