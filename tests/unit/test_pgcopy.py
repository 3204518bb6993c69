"""The binary COPY encoding of staged archived events (shared/archive/pgcopy.py), byte for byte:
pure logic, no services (tests/integration/test_archive.py sends it through PostgreSQL)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from shared.archive import pgcopy

UUID = "0123abcd-4567-89ef-0a1b-2c3d4e5f6a7b"


def fields(stream: bytes, count: int) -> list[list[bytes | None]]:
    """The rows of a binary COPY stream, each a list of its fields' bytes (None: null)."""
    assert stream.startswith(pgcopy.HEADER) and stream.endswith(pgcopy.TRAILER)
    body, rows, at = stream[len(pgcopy.HEADER) : -2], [], 0
    while at < len(body):
        (n,) = struct.unpack_from(">h", body, at)
        assert n == count
        at, row = at + 2, []
        for _ in range(n):
            (length,) = struct.unpack_from(">i", body, at)
            at += 4
            row.append(None if length == -1 else body[at : at + length])
            at += max(length, 0)
        rows.append(row)
    return rows


def test_each_type_in_its_binary_form() -> None:
    table = pa.table({
        "event_id": pa.array([UUID, UUID.upper()]),
        "aggregate_id": pa.array(["order-1", "commande-é"]),
        "payload": pa.array(['{"a": "x\\ny"}', "{}"]),
        "metadata": pa.array([None, "{}"], pa.string()),
        "sequence_num": pa.array([1, -(2**62)], pa.int64()),
        "occurred_at": pa.array([datetime(2000, 1, 1, tzinfo=UTC),
                                 datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
                                pa.timestamp("us", tz="UTC")),
        "txid": pa.array([2**40, 3], pa.int64()),
    })  # fmt: skip
    stream = b"".join(pgcopy.encode(table, table.column_names))
    first, second = fields(stream, 7)
    assert first[0] == second[0] == bytes.fromhex(UUID.replace("-", ""))
    assert first[1] == b"order-1" and second[1] == "commande-é".encode()
    assert first[2] == b'\x01{"a": "x\\ny"}' and second[2] == b"\x01{}"
    assert first[3] is None and second[3] == b"\x01{}"
    assert first[4] == struct.pack(">q", 1) and second[4] == struct.pack(">q", -(2**62))
    assert first[5] == struct.pack(">q", 0) and second[5] == struct.pack(">q", -1)
    assert first[6] == struct.pack(">q", 2**40)


def test_rows_go_in_chunks_and_an_empty_table_is_header_and_trailer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgcopy, "CHUNK_ROWS", 3)
    table = pa.table({"aggregate_id": [f"a{i}" for i in range(7)], "n": list(range(7))})
    chunks = list(pgcopy.encode(table, ["n", "aggregate_id"]))
    assert len(chunks) == 1 + 3 + 1
    rows = fields(b"".join(chunks), 2)
    assert [r[1] for r in rows] == [f"a{i}".encode() for i in range(7)]
    assert [struct.unpack(">q", r[0])[0] for r in rows if r[0]] == list(range(7))
    assert b"".join(pgcopy.encode(table.slice(0, 0), ["n"])) == pgcopy.HEADER + pgcopy.TRAILER


@pytest.mark.parametrize("value", ["not-a-uuid", UUID[:-1] + "g", UUID.replace("-", "_")])
def test_a_malformed_uuid_is_refused(value: str) -> None:
    table = pa.table({"event_id": [UUID, value]})
    with pytest.raises(ValueError, match="event_id"):
        list(pgcopy.encode(table, ["event_id"]))


def test_a_null_number_is_refused() -> None:
    table = pa.table({"sequence_num": pa.array([1, None], pa.int64())})
    with pytest.raises(ValueError, match="sequence_num"):
        list(pgcopy.encode(table, ["sequence_num"]))


def test_chunks_are_bounded_in_bytes_and_a_large_row_goes_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgcopy, "CHUNK_BYTES", 100)
    texts = ["x" * 30, "y" * 30, "z" * 300, "w" * 10, "v" * 10]
    table = pa.table({"payload": pa.array(texts, pa.large_string())}).slice(0)
    chunks = list(pgcopy.encode(table, ["payload"]))
    # rows of 2 + 8 bytes and their text: [x, y] 80 bytes, [z] 310 alone, [w, v] 40
    assert [len(fields(pgcopy.HEADER + c + pgcopy.TRAILER, 1)) for c in chunks[1:-1]] == [2, 1, 2]
    rows = fields(b"".join(chunks), 1)
    assert [r[0] for r in rows] == [b"\x01" + t.encode() for t in texts]


def test_times_in_any_unit_are_microseconds_since_2000() -> None:
    table = pa.table({"occurred_at": pa.array([946_684_800_001], pa.timestamp("ms", tz="UTC")),
                      "aggregate_id": pa.array(["a"]).dictionary_encode()})  # fmt: skip
    (row,) = fields(b"".join(pgcopy.encode(table, ["occurred_at", "aggregate_id"])), 2)
    assert row == [struct.pack(">q", 1000), b"a"]


def test_a_column_without_an_encoding_is_named() -> None:
    table = pa.table({"flag": [True]})
    with pytest.raises(ValueError, match="flag"):
        list(pgcopy.encode(table, ["flag"]))
