"""common/packed_vectors.py: the feature rows' packed float32 vectors, round trips and errors."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from common import packed_vectors as pv


@pytest.fixture
def matrix():
    return np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)


def test_round_trip_through_every_container(matrix):
    packed = pv.encode(matrix)
    assert packed.type == pa.binary() and len(packed[0].as_py()) == 12
    assert np.array_equal(pv.decode(packed), matrix)
    assert np.array_equal(pv.decode(packed.slice(2)), matrix[2:])             # sliced array
    assert np.array_equal(pv.decode(pa.chunked_array([packed.slice(0, 2), packed.slice(2)])), matrix)
    assert np.array_equal(pv.decode(pd.Series(packed.to_pylist()).to_numpy()), matrix)
    assert pv.decode(packed).dtype == np.float32


def test_bytes_are_little_endian_float32(matrix):
    assert pv.encode(matrix[:1])[0].as_py() == matrix[0].astype("<f4").tobytes()


def test_list_columns_decode_too(matrix):
    lists = pa.array(list(matrix), pa.list_(pa.float32()))
    assert np.array_equal(pv.decode(lists), matrix)
    assert np.array_equal(pv.decode(lists.slice(1)), matrix[1:])
    assert np.array_equal(pv.decode(list(matrix)), matrix)


def test_width_of_one_value(matrix):
    assert pv.width(pv.encode(matrix)[0].as_py()) == 3
    assert pv.width([1.0, 2.0]) == 2


def test_errors_name_the_column():
    with pytest.raises(ValueError, match="user_vec vectors of different lengths \\(1 to 2\\)"):
        pv.decode([b"\0" * 4, b"\0" * 8], "user_vec")
    with pytest.raises(ValueError, match="news_vec holds null vectors"):
        pv.decode(pa.array([b"\0" * 4, None], pa.binary()), "news_vec")
    with pytest.raises(ValueError, match="not whole floats"):
        pv.decode([b"\0" * 6, b"\0" * 6], "news_vec")
