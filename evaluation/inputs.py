"""What an evaluation reads, found and checked before any real work: the exported model, the
dev feature rows it must fit, the order in which each dev impression lists its candidates,
and the planted click probabilities of a synthetic sample (the oracle)."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from common import columns as C
from common import outputs, packed_vectors, storage
from common.config import Config
from common.errors import UserInputError
from dcn.export import check_lineage, check_side_features, load_model, model_folder
from evaluation.scorers import BASELINES, CONTEXT_COLUMNS, DERIVED_SCORERS, LISTED, POSITION
from features.rows import DEV_IMPRESSIONS

TRUTH_FILE = "dev.tsv"
TRUTH_SCHEMA = StructType([
    StructField(C.IMPRESSION_ID, LongType(), False),
    StructField(C.NEWS_ID, StringType(), False),
    StructField(C.CLICK_PROB, DoubleType(), False),
])


@dataclass(frozen=True)
class Inputs:
    model_folder: str
    model_version: str
    features_run_id: str
    features_path: str
    feature_rows: int | None
    dev_folder: str
    truth_uri: str | None
    # The model's inputs, all feature-row columns: name -> width (0: an int32 scalar column,
    # > 0: a float32 array column), user_vec and news_vec first.
    widths: dict
    # The features' as-of moment (their state and pool give the cascade's recall sample).
    as_of: str | None = None

    @property
    def scorers(self) -> tuple[str, ...]:
        return ("dcn", *BASELINES) + (("oracle",) if self.truth_uri else ())

    @property
    def row_scorers(self) -> tuple[str, ...]:
        """The scorers with a score per dev row (the others are derived per impression)."""
        return tuple(s for s in self.scorers if s not in DERIVED_SCORERS)


def resolve_inputs(spark: SparkSession, cfg: Config, as_of=None) -> Inputs:
    """Find the model (`evaluate.model_version`, empty: the latest) and the dev rows built as
    of `as_of` (default: the newest), and check that they fit, before any real work."""
    try:
        folder = model_folder(cfg, cfg["evaluate.model_version"])
        features = outputs.current_rows(cfg, as_of)
    except storage.RunNotFound as err:
        raise UserInputError(str(err)) from None
    return inputs_for(spark, cfg, folder, features)


def inputs_for(spark: SparkSession, cfg: Config, folder: str, features: dict) -> Inputs:
    """The inputs of evaluating the model at `folder` on the dev rows of the build_features
    run `features` (its commit marker), checked to fit."""
    # imports Keras: keep it out of module import
    from dcn.model import check_input_width, model_spec
    from dcn.spec import input_columns

    model, metadata = load_model(folder)
    dev = spark.read.parquet(f"{features['path']}/dev")
    extra = input_columns(model_spec(model))
    check_dev_columns(dev, [*extra, C.NEWS_DENSE, *CONTEXT_COLUMNS], features)
    arrays = [C.USER_VEC, C.NEWS_VEC] + [name for name, width in extra.items() if width]
    first = dev.select(*[packed_vectors.width_column(dev, name).alias(name) for name in arrays]).first()
    if first is None:
        raise UserInputError(f"{features['path']}/dev holds no dev rows")
    try:
        check_input_width(model, int(first[C.USER_VEC]), int(first[C.NEWS_VEC]))
        check_extra_widths(extra, {name: int(first[name]) for name in arrays})
    except ValueError as err:
        raise UserInputError(f"model {folder} does not fit the dev rows of features run "
                             f"{features['run_id']}: {err}") from None
    widths = {C.USER_VEC: int(first[C.USER_VEC]), C.NEWS_VEC: int(first[C.NEWS_VEC]), **extra}
    try:
        check_lineage(metadata, features.get("summary", {}).get("news_vectors"), features["path"])
        check_side_features(metadata, features.get("summary", {}).get("side_features"),
                            f"the features at {features['path']}")
    except ValueError as err:
        raise UserInputError(str(err)) from None
    truth = cfg["paths.ground_truth"]
    dev_counts = features.get("summary", {}).get("rows", {}).get("dev", {})
    inputs = Inputs(model_folder=folder,
                    model_version=metadata.get("version", posixpath.basename(folder)),
                    features_run_id=features["run_id"], features_path=features["path"],
                    feature_rows=dev_counts.get("rows"),
                    dev_folder=features["summary"].get("sources", {}).get("dev", ""),
                    truth_uri=storage.join(truth, TRUTH_FILE) if truth else None, widths=widths,
                    as_of=features["summary"].get("as_of"))
    if cfg["evaluate.prediction_scorer"] not in inputs.scorers:
        raise UserInputError(f"evaluate.prediction_scorer must be one of {list(inputs.scorers)}, "
                             f"got {cfg['evaluate.prediction_scorer']!r}")
    return inputs


def check_dev_columns(dev: DataFrame, needed: list[str], features: dict) -> None:
    """The model's side inputs, the ctr baseline and the segments read these dev-row columns:
    rows built before the side features existed lack them."""
    missing = [name for name in dict.fromkeys(needed) if name not in dev.columns]
    if missing:
        raise UserInputError(f"the dev rows of features run {features['run_id']} "
                             f"({features['path']}/dev) have no {', '.join(missing)}: rebuild "
                             "them with this version of build_features")


def check_extra_widths(extra: dict, found: dict) -> None:
    """A ValueError naming the first array input whose width in the data is not the model's."""
    for name, width in extra.items():
        if width and found[name] != width:
            raise ValueError(f"model expects {name} width {width}, but the data has "
                             f"{name} width {found[name]}")


def read_truth(spark: SparkSession, uri: str) -> DataFrame:
    """ground_truth/dev.tsv with its header checked against impression_id, news_id, click_prob."""
    if not storage.exists(uri):
        raise UserInputError(f"paths.ground_truth is set but {uri} does not exist")
    return spark.read.csv(uri, sep="\t", header=True, schema=TRUTH_SCHEMA, enforceSchema=False,
                          mode="FAILFAST")


def check_truth_covers(dev: DataFrame, truth: DataFrame, uri: str) -> None:
    """Every dev row needs a planted probability, or the oracle's metrics mean nothing."""
    keys = [C.IMPRESSION_ID, C.NEWS_ID]
    missing = dev.select(*keys).join(truth.select(*keys), keys, "left_anti")
    examples = missing.limit(3).collect()
    if examples:
        shown = ", ".join(f"({r[C.IMPRESSION_ID]}, {r[C.NEWS_ID]})" for r in examples)
        raise UserInputError(f"{uri} has no click_prob for {missing.count()} dev rows "
                             f"(impression, news), e.g. {shown}")


def listed_candidates(spark: SparkSession, features_path: str) -> tuple[DataFrame, DataFrame]:
    """(impressions: impression_id, listed) and (positions: impression_id, position, news_id),
    position being the 0-based place of the candidate in the impression's list."""
    listing = spark.read.parquet(f"{features_path}/{DEV_IMPRESSIONS}")
    impressions = listing.select(C.IMPRESSION_ID, F.size(C.CANDIDATES).alias(LISTED))
    positions = (listing.select(C.IMPRESSION_ID, F.posexplode(C.CANDIDATES).alias(POSITION, C.NEWS_ID))
                 .select(C.IMPRESSION_ID, POSITION, C.NEWS_ID))
    return impressions, positions
