"""The recommendations table (partitioned by run_date), its name from the configuration, and
the atomic replacement of one date's partition: a run's rows go to a folder of their own,
then one metastore operation points the partition at it."""
from __future__ import annotations

from pyspark.sql import SparkSession

from common import columns as C
from common import schemas, storage
from common.config import Config
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

    def ensure_table(self) -> str:
        """Create the database and table if needed; return the table's location."""
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        location = f" LOCATION '{storage.to_uri(self.location)}'" if self.location else ""
        self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.name} ({TABLE_DDL}, `{C.RUN_DATE}` string) "
                       f"USING parquet PARTITIONED BY (`{C.RUN_DATE}`){location}")
        described = self.spark.sql(f"DESCRIBE TABLE EXTENDED {self.name}").collect()
        return next(r["data_type"] for r in described if r["col_name"] == "Location")

    def partition_location(self, run_date: str) -> str | None:
        try:
            rows = self.spark.sql(f"DESCRIBE TABLE EXTENDED {self.name} "
                                  f"PARTITION (`{C.RUN_DATE}`='{run_date}')").collect()
        except Exception:  # noqa: BLE001  (Spark raises NoSuchPartitionException)
            return None
        return next((r["data_type"] for r in rows if r["col_name"] == "Location"), None)

    def swap_partition(self, run_date: str, folder: str) -> str | None:
        """Point the date's partition at `folder` in one metastore operation; return the
        previous location (None if the date is new)."""
        previous = self.partition_location(run_date)
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
