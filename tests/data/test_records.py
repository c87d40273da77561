"""Serialised records: the same records back, read-only, in two NumPy arrays that loader workers share."""

from pathlib import Path

import numpy as np
import pytest

from datnet.data.records import ImageRecord, Instance, SerializedRecords


def records(n: int) -> list[ImageRecord]:
    """Image i has i instances with distinct boxes, labels and a polygon."""
    polygon = [[1.0, 2.0, 3.0, 2.0, 3.0, 4.0]]
    return [
        ImageRecord(
            i,
            Path(f"img{i}.jpg"),
            40 + i,
            30,
            [Instance(10 * i + k, (1.0, 2.0, 3.0 + k, 4.0), k, polygon) for k in range(i)],
        )
        for i in range(n)
    ]


def test_round_trip_indexing_and_iteration():
    original = records(5)
    stored = SerializedRecords(original)
    assert len(stored) == 5
    assert list(stored) == original  # dataclass equality: every field, every instance
    assert stored[-1] == original[4] and stored[0] == original[0]
    with pytest.raises(IndexError, match="record 5 out of range"):
        stored[5]
    with pytest.raises(IndexError):
        stored[-6]


def test_storage_is_two_arrays_without_python_objects():
    stored = SerializedRecords(records(3))
    arrays = list(vars(stored).values())
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays)
    assert stored.nbytes == sum(a.nbytes for a in arrays)


def test_empty():
    assert len(SerializedRecords([])) == 0 and list(SerializedRecords([])) == []
