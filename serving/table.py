"""The recommendations table (partitioned by run_date), its name from the configuration, and
the atomic replacement of one date's partition: a run's rows go to a folder of their own,
then one metastore operation points the partition at it."""
from __future__ import annotations

from pyspark.sql import SparkSession

from common import columns as C
from common import schemas, storage
from common.config import Config
from common.errors import UserInputError
from common.names import validated_identifier

RECOMMENDATIONS = schemas.RECOMMENDATIONS
TABLE_DDL = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in RECOMMENDATIONS.fields)


def table_names(cfg: Config) -> tuple[str, str]:
    """(database, table) of the recommendations table, validated identifiers."""
    return (validated_identifier(cfg["score.database"], "score.database"),
            validated_identifier(cfg["score.table"], "score.table"))


def quoted_table(cfg: Config) -> str:
    """The table's name for Spark SQL: `database`.`table`."""
    database, table = table_names(cfg)
    return f"`{database}`.`{table}`"


class TableWriter:
    """The recommendations table and the atomic replacement of one date's partition."""

    def __init__(self, spark: SparkSession, cfg: Config):
        self.spark = spark
        self.database, self.table = table_names(cfg)
        self.name = quoted_table(cfg)
        self.location = cfg["score.table_location"]

    def expected_root(self) -> tuple[str, str]:
        """(where this configuration's table must lie, the setting that says so)."""
        if self.location:
            return storage.to_uri(self.location), "score.table_location"
        return self.spark.conf.get("spark.sql.warehouse.dir"), "spark.warehouse_dir"

    def check_owned(self, location: str, what: str) -> None:
        """Refuse to write or delete at a `location` the metastore gives outside this
        configuration's place: a metastore copied with a work folder (or shared by two
        configurations) points at another work folder's table, whose published partitions a
        write here would replace and whose folders its cleanup would delete."""
        root, key = self.expected_root()
        if storage.lies_under(location, root):
            return
        raise UserInputError(
            f"the metastore puts {what} of {self.database}.{self.table} at {location}, outside "
            f"this configuration's {root} ({key}): it belongs to another work folder (a copied "
            f"paths.work brings its metastore_db along). Nothing was written. Give this work "
            f"folder its own metastore (delete the copy's paths.work/metastore_db, or set "
            f"score.database/score.table to another table), or point {key} at that location")

    def ensure_table(self) -> str:
        """Create the database and table if needed; return the table's location, checked to
        lie under this configuration's place (check_owned)."""
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        location = f" LOCATION '{storage.to_uri(self.location)}'" if self.location else ""
        self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.name} ({TABLE_DDL}, `{C.RUN_DATE}` string) "
                       f"USING parquet PARTITIONED BY (`{C.RUN_DATE}`){location}")
        described = self.spark.sql(f"DESCRIBE TABLE EXTENDED {self.name}").collect()
        location = next(r["data_type"] for r in described if r["col_name"] == "Location")
        self.check_owned(location, "the table")
        return location

    def partition_location(self, run_date: str) -> str | None:
        try:
            rows = self.spark.sql(f"DESCRIBE TABLE EXTENDED {self.name} "
                                  f"PARTITION (`{C.RUN_DATE}`='{run_date}')").collect()
        except Exception:  # noqa: BLE001  (Spark raises NoSuchPartitionException)
            return None
        return next((r["data_type"] for r in rows if r["col_name"] == "Location"), None)

    def owned_partition_location(self, run_date: str) -> str | None:
        """The date's partition location, checked to lie under this configuration's place."""
        location = self.partition_location(run_date)
        if location is not None:
            self.check_owned(location, f"the partition {C.RUN_DATE}={run_date}")
        return location

    def swap_partition(self, run_date: str, folder: str) -> str | None:
        """Point the date's partition at `folder` in one metastore operation; return the
        previous location (None if the date is new)."""
        previous = self.owned_partition_location(run_date)
        spec = f"PARTITION (`{C.RUN_DATE}`='{run_date}')"
        if previous is None:
            self.spark.sql(f"ALTER TABLE {self.name} ADD {spec} LOCATION '{folder}'")
        else:
            self.spark.sql(f"ALTER TABLE {self.name} {spec} SET LOCATION '{folder}'")
        self.spark.sql(f"REFRESH TABLE {self.name}")
        return previous


def remove_stale_attempts(writer: TableWriter, run_date: str, date_folder: str) -> list[str]:
    """Delete the folders of this date that nothing points at: earlier, replaced or killed
    runs. Safe against a concurrent run of the same date: a folder whose lease is alive is
    left alone, and the partition's location is read from the metastore after the lease (a
    run marks its lease published only after its swap), right before each deletion."""
    removed = []
    for name, is_dir in storage.list_dir(date_folder):
        if not is_dir or storage.may_be_in_progress(date_folder, name):
            continue
        current = writer.partition_location(run_date)
        if current is not None and current.rstrip("/").rsplit("/", 1)[-1] == name:
            continue
        storage.delete_dir(f"{date_folder}/{name}")
        storage.delete_file(storage.lease_uri(date_folder, name))
        removed.append(name)
    return removed
