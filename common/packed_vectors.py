"""How the feature rows store their two wide vectors (`user_vec`, `news_vec`): each vector's
float32 values, little-endian, packed into one Parquet BINARY value (PACKED_TYPE).

Why not `array<float>`: Spark's Parquet writer writes an array element by element, each with
its repetition and definition levels, and that writer was the full rebuild's floor: one
BINARY value per vector writes much faster (bench/spark_copy_floor.py compares the two).
The narrow dense arrays (`user_dense`, ...) stay `array<float>`.

Reading them back:
- numpy: `decode(column)` for an Arrow BinaryArray, a pandas Series of bytes, or a list of
  bytes; it also takes `array<float>` columns (tables written before the packing, or by
  hand), so every reader accepts both layouts;
- Spark SQL: `length(user_vec) / 4` is the width; the values are bytes to decode in a UDF.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, functions as F
from pyspark.sql.types import BinaryType, StructField, StructType

PACKED_TYPE = BinaryType()
DTYPE = np.dtype("<f4")


def encode(matrix: np.ndarray) -> pa.Array:
    """[n, width] floats -> an Arrow binary array of n packed vectors."""
    matrix = np.ascontiguousarray(matrix, dtype=DTYPE)
    n, width = matrix.shape
    offsets = np.arange(0, n * width * DTYPE.itemsize + 1, width * DTYPE.itemsize, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(matrix.tobytes())])


def width(value) -> int:
    """The width of one stored vector (packed bytes or a list of floats)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) // DTYPE.itemsize
    return len(value)


def decode(values, name: str = "vector") -> np.ndarray:
    """A column of vectors of one width -> float32 [n, width]. Raises ValueError naming the
    column if the widths differ or a vector is missing."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if values.null_count:
            raise ValueError(f"column {name} holds null vectors")
        if pa.types.is_binary(values.type):
            offsets = np.frombuffer(values.buffers()[1], np.int32)[
                values.offset:values.offset + len(values) + 1]
            return _from_bytes(values.buffers()[2], offsets, name)
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        _check_widths(lengths, name)
        flat = values.flatten().to_numpy(zero_copy_only=False)
        return flat.astype(np.float32, copy=False).reshape(len(values), -1 if len(values) else 0)
    values = list(values)
    if not values:
        return np.zeros((0, 0), np.float32)
    if isinstance(values[0], (bytes, bytearray, memoryview)):
        lengths = np.array([len(v) for v in values], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return _from_bytes(b"".join(values), offsets, name)
    _check_widths(np.array([len(v) for v in values]), name)
    return np.asarray(np.stack(values), dtype=np.float32)


def _check_widths(lengths: np.ndarray, name: str) -> None:
    if len(lengths) and lengths.min() != lengths.max():
        raise ValueError(f"{name} vectors of different lengths ({int(lengths.min())} to "
                         f"{int(lengths.max())})")


def _from_bytes(data, offsets: np.ndarray, name: str) -> np.ndarray:
    lengths = np.diff(offsets)
    _check_widths(lengths // DTYPE.itemsize, name)
    n = len(lengths)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    if lengths[0] % DTYPE.itemsize:
        raise ValueError(f"{name}: a packed vector of {int(lengths[0])} bytes is not whole floats")
    raw = np.frombuffer(data, np.uint8)[int(offsets[0]):int(offsets[-1])]
    return raw.view(DTYPE).astype(np.float32).reshape(n, int(lengths[0]) // DTYPE.itemsize)


def width_column(df: DataFrame, name: str) -> Column:
    """Spark SQL: the width of each vector of column `name`, packed or `array<float>`."""
    if isinstance(df.schema[name].dataType, BinaryType):
        return (F.length(name) / DTYPE.itemsize).cast("int")
    return F.size(name)


def with_packed(df: DataFrame, column: str, packed: str) -> DataFrame:
    """`df` with `packed`, the packed bytes of its `array<float>` column `column` (a
    vectorized Arrow pass; for impression- or catalogue-sized tables)."""
    schema = StructType(df.schema.fields + [StructField(packed, PACKED_TYPE, False)])

    def run(batches):
        for batch in batches:
            vectors = batch.column(batch.schema.get_field_index(column))
            yield pa.RecordBatch.from_arrays(
                batch.columns + [encode(decode(vectors, column)) if len(vectors)
                                 else pa.array([], pa.binary())],
                names=batch.schema.names + [packed])
    return df.mapInArrow(run, schema)
