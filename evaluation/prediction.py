"""prediction.txt: one MIND line per dev impression, the ranks a scorer gives its candidates in
the order the impression lists them, written by Spark sorted by impression id."""
from __future__ import annotations

import posixpath
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
from pyspark.sql import DataFrame

from common import columns as C
from common import storage
from dcn import metrics as M
from evaluation.scorers import LISTED, POSITION, impression_scores, row_columns


def prediction_line(impression_id: int, listed: int, positions, scores) -> str:
    """MIND line of one impression; candidates without a score (no feature row) rank last."""
    full = np.full(int(listed), -np.inf)
    if positions is not None and len(positions):
        full[np.asarray(positions, dtype=np.int64)] = np.asarray(scores, dtype=np.float64)
    return M.format_prediction_line(int(impression_id), full)


def _prediction_lines(scorer: str):
    def lines(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            ids, listed = batch[C.IMPRESSION_ID].to_numpy(), batch[LISTED].to_numpy()
            positions = batch[POSITION].to_numpy()
            columns = {name: batch[name].to_numpy() for name in row_columns((scorer,))}
            yield pd.DataFrame({
                C.IMPRESSION_ID: ids,
                "line": [prediction_line(ids[i], listed[i], positions[i],
                                         impression_scores(columns, i, (scorer,))[scorer])
                         for i in range(len(batch))],
            })
    return lines


def write_prediction_file(table: DataFrame, scorer: str, target: str) -> None:
    """Lines sorted by impression id, written by Spark as one file, then copied to `target`
    (a copy, not a rename: object stores have none; the run is not committed yet)."""
    parts = f"{posixpath.dirname(target)}/_prediction_parts"
    lines = table.mapInPandas(_prediction_lines(scorer),
                              schema=f"{C.IMPRESSION_ID} long, line string")
    lines.repartition(1).sortWithinPartitions(C.IMPRESSION_ID).select("line").write.text(parts)
    fs, parts_path = storage.filesystem(parts)
    files = [info.path for info in fs.get_file_info(pafs.FileSelector(parts_path))
             if info.is_file and info.base_name.startswith("part-")]
    if len(files) > 1:
        raise RuntimeError(f"expected one part file in {parts}, found {len(files)}")
    _, target_path = storage.filesystem(target)
    if files:
        fs.copy_file(files[0], target_path)
    else:  # no dev impression at all: an empty file
        with fs.open_output_stream(target_path):
            pass
    fs.delete_dir(parts_path)
