"""The user-state kernel on tiny Arrow batches, with hand-computed values (no Spark): a day's
batch mixes users with impressions that day and users of the prior state without any."""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features import user_state

IDS = np.array(["N1", "N2", "N3"], dtype=object)
MATRIX = np.array([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]], dtype=np.float32)
EVENT = pa.struct([("t", pa.int64()), ("src", pa.int32()), ("impression_id", pa.int64()),
                   ("history", pa.list_(pa.string())), ("clicks", pa.list_(pa.string()))])


def day_batch() -> pa.RecordBatch:
    """U1: in the prior state (clicked N1, N2), no impression today. U2: new, one impression
    with history [N3] and a click on N1. U3: in the prior state (clicked N2), one impression
    today with an empty history and a click on N3."""
    return pa.RecordBatch.from_arrays([
        pa.array(["U1", "U2", "U3"]),
        pa.array([["N1", "N2"], None, ["N2"]], pa.list_(pa.string())),
        pa.array([[1.0, 2.0], None, [0.0, 2.0]], pa.list_(pa.float64())),
        pa.array([2, None, 1], pa.int32()),
        pa.array([5, None, 1], pa.int64()),
        pa.array([None,
                  [{"t": 100, "src": 0, "impression_id": 7, "history": ["N3"], "clicks": ["N1"]}],
                  [{"t": 200, "src": 0, "impression_id": 8, "history": [], "clicks": ["N3"]}]],
                 pa.list_(EVENT)),
    ], names=[user_state.C.USER_ID, *user_state.PRIOR_COLUMNS, user_state.EVENTS])


def run_kernel(batch: pa.RecordBatch) -> dict:
    kernel = user_state._kernel(types.SimpleNamespace(value=(IDS, MATRIX)), "test-kernel",
                                accumulate=True, with_impressions=False)
    table = pa.Table.from_batches(list(kernel(iter([batch]))))
    return {row["user_id"]: row for row in table.to_pylist()}


def test_users_without_impressions_pass_through_and_the_others_advance():
    out = run_kernel(day_batch())
    assert set(out) == {"U1", "U2", "U3"}
    u1 = out["U1"]      # carried: the prior state, its mean made again from the sum
    assert u1["clicked_news"] == ["N1", "N2"] and u1["vector_sum"] == [1.0, 2.0]
    assert u1["history_len"] == 2 and u1["impressions"] == 5
    assert u1["user_vec"] == [0.5, 1.0]
    u2 = out["U2"]      # new: history N3 and click N1
    assert u2["clicked_news"] == ["N1", "N3"] and u2["vector_sum"] == [5.0, 4.0]
    assert u2["history_len"] == 2 and u2["impressions"] == 1 and u2["user_vec"] == [2.5, 2.0]
    u3 = out["U3"]      # prior N2, plus the click on N3
    assert u3["clicked_news"] == ["N2", "N3"] and u3["vector_sum"] == [4.0, 6.0]
    assert u3["history_len"] == 2 and u3["impressions"] == 2 and u3["user_vec"] == [2.0, 3.0]


def test_a_carried_user_is_the_same_whatever_else_its_batch_holds():
    alone = run_kernel(day_batch().slice(0, 1))["U1"]
    assert alone == run_kernel(day_batch())["U1"]


def test_carried_batch_keeps_the_state_schema():
    batch = day_batch().slice(0, 1)
    carried = user_state.carried_batch(batch)
    assert carried.schema == user_state._arrow_schema(user_state.STATE_OUTPUT)
    assert carried.num_rows == 1


@pytest.mark.parametrize("accumulate", [True, False])
def test_the_state_alone_equals_the_state_beside_the_impression_vectors(accumulate):
    """A day's run asks the kernel for the state only, and skips the impressions' vectors:
    the state is the same, to the bit, as when they are computed."""
    two = pa.RecordBatch.from_arrays([      # U4: two impressions in two seconds
        pa.array(["U4"]), pa.array([["N2"]], pa.list_(pa.string())),
        pa.array([[0.0, 2.0]], pa.list_(pa.float64())), pa.array([1], pa.int32()),
        pa.array([3], pa.int64()),
        pa.array([[{"t": 100, "src": 0, "impression_id": 1, "history": ["N1"], "clicks": []},
                   {"t": 101, "src": 0, "impression_id": 2, "history": ["N1", "N3"],
                    "clicks": ["N2"]}]], pa.list_(EVENT))],
        names=day_batch().schema.names)
    batch = pa.Table.from_batches([day_batch().slice(1, 2), two]).combine_chunks().to_batches()[0]
    index = pd.Index(IDS)
    full = user_state.advance_batch(batch, index, MATRIX, accumulate, with_impressions=True)
    alone = user_state.advance_batch(batch, index, MATRIX, accumulate, with_impressions=False)
    for name in alone.schema.names:
        assert full.column(name).equals(alone.column(name)), name
