"""Arrow tables as PostgreSQL's binary ``COPY`` format, for ``COPY ... FROM STDIN (FORMAT
binary)``: how archived events are staged for a slice (and put back by ``unarchive``).

CSV cost a staged event twice: Arrow's writer quoting every JSON document (2.6 µs an event), and
PostgreSQL parsing the text of each uuid, time and number back. Here every column is encoded at
once with numpy and Arrow's kernels, no row through Python: a row is its field count and, per
field, a 4-byte big-endian length and the value in the type's binary form: uuid 16 bytes, bigint
and xid8 8 bytes big-endian, timestamptz microseconds since 2000-01-01 UTC, text its UTF-8 bytes,
jsonb a version byte (1) and the document's text (PostgreSQL still parses it, as for CSV).

A column's PostgreSQL type is known by its name (``PG_TYPES``): the event table's columns, and the
count of the planning's per-aggregate counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: the PostgreSQL type of each column that is ever staged, by name (any other: text)
PG_TYPES = {"event_id": "uuid", "payload": "jsonb", "metadata": "jsonb", "txid": "xid8",
            "sequence_num": "bigint", "n": "bigint", "occurred_at": "timestamptz",
            "created_at": "timestamptz"}  # fmt: skip
#: the signature, flags and header extension of the binary format
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
#: a field count of -1 ends the data
TRAILER = b"\xff\xff"
#: rows encoded at once, and their bytes at most (a row alone may be larger): bound the memory
#: of a chunk, and keep it within the 2 GiB of Arrow's 32-bit offsets
CHUNK_ROWS = 65_536
CHUNK_BYTES = 256 << 20

_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
_UUID_DASHES = [8, 13, 18, 23]
_UUID_HEX = [i for i in range(36) if i not in _UUID_DASHES]
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def encode(table: pa.Table, columns: Sequence[str]) -> Iterator[bytes]:
    """``table``'s ``columns``, in that order, as the binary ``COPY`` stream: the header, rows
    in chunks of ``CHUNK_ROWS``, the trailer. Raises ``ValueError`` for a value the column's
    type cannot hold (a null where PostgreSQL has NOT NULL numbers, a malformed uuid)."""
    yield HEADER
    for start, end in _chunks(table, columns):
        part = table.slice(start, end - start)
        yield _rows(part.num_rows, [_field(name, part[name]) for name in columns])
    yield TRAILER


def _chunks(table: pa.Table, columns: Sequence[str]) -> Iterator[tuple[int, int]]:
    """Row ranges of at most ``CHUNK_ROWS`` rows and ``CHUNK_BYTES`` bytes (or one row)."""
    sizes = np.full(table.num_rows, 2 + 8 * len(columns), dtype=np.int64)
    for name in columns:
        if _texty(table[name].type):
            lengths = pc.binary_length(table[name].cast(pa.large_binary())).fill_null(0)
            sizes += lengths.to_numpy().astype(np.int64)
    ends = np.cumsum(sizes)
    start = 0
    while start < table.num_rows:
        before = int(ends[start - 1]) if start else 0
        fits = int(np.searchsorted(ends, before + CHUNK_BYTES, side="right"))
        end = min(start + CHUNK_ROWS, max(fits, start + 1), table.num_rows)
        yield start, end
        start = end


def _rows(n: int, fields: list[list[pa.Array]]) -> bytes:
    count = np.full(n, len(fields), dtype=">i2")
    parts = [_fixed(count.view(np.uint8).reshape(n, 2))]
    parts += [array for field in fields for array in field]
    rows = pc.binary_join_element_wise(*parts, b"")
    return _data(rows)


def _field(name: str, column: pa.ChunkedArray) -> list[pa.Array]:
    """One column's fields as Arrow binary arrays whose element-wise concatenation is them."""
    array = column.combine_chunks()
    kind = PG_TYPES.get(name, "text")
    if kind == "uuid":
        return [_uuid(name, array)]
    if kind == "timestamptz":  # in microseconds whatever the unit (a lossy cast raises)
        micros = array.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        micros = micros.to_numpy(zero_copy_only=False)
        return [_int8(name, array, micros - _POSTGRES_EPOCH_US)]
    if kind in ("bigint", "xid8"):
        return [_int8(name, array, array.cast(pa.int64()).to_numpy(zero_copy_only=False))]
    if not _texty(array.type):
        raise ValueError(f"column {name}: no binary COPY encoding for {array.type} as {kind}")
    return _varlen(array.cast(pa.binary()), b"\x01" if kind == "jsonb" else b"")


def _texty(kind: pa.DataType) -> bool:
    """Whether a column of ``kind`` holds text or bytes (plain, large, or as a dictionary)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return any(test(kind) for test in (pa.types.is_string, pa.types.is_large_string,
                                       pa.types.is_binary, pa.types.is_large_binary))  # fmt: skip


def _uuid(name: str, array: pa.Array) -> pa.Array:
    n = len(array)
    text = array.cast(pa.binary())
    lengths = pc.min_max(pc.binary_length(text))
    if text.null_count or lengths["min"].as_py() != 36 or lengths["max"].as_py() != 36:
        raise ValueError(f"column {name}: a value is not a uuid as PostgreSQL writes one")
    chars = np.frombuffer(_data(text), dtype=np.uint8).reshape(n, 36)
    nibbles = _NIBBLE[chars[:, _UUID_HEX]]
    if (nibbles == 255).any() or (chars[:, _UUID_DASHES] != ord("-")).any():
        raise ValueError(f"column {name}: a value is not a uuid as PostgreSQL writes one")
    out = np.empty((n, 20), dtype=np.uint8)
    out[:, :4] = np.frombuffer(b"\x00\x00\x00\x10", dtype=np.uint8)
    out[:, 4:] = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return _fixed(out)


def _int8(name: str, array: pa.Array, values: np.ndarray) -> pa.Array:
    if array.null_count:
        raise ValueError(f"column {name}: a null where PostgreSQL has NOT NULL")
    out = np.empty(len(values), dtype=[("length", ">i4"), ("value", ">i8")])
    out["length"] = 8
    out["value"] = values
    return _fixed(out.view(np.uint8).reshape(len(values), 12))


def _varlen(array: pa.Array, prefix: bytes) -> list[pa.Array]:
    """A length, then the bytes (after ``prefix``); a null is the length -1 alone."""
    values = array.fill_null(b"") if array.null_count else array
    lengths = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    heads = np.empty((len(array), 4 + len(prefix)), dtype=np.uint8)
    heads[:, :4] = (lengths + len(prefix)).astype(">i4").view(np.uint8).reshape(-1, 4)
    heads[:, 4:] = np.frombuffer(prefix, dtype=np.uint8)
    fields = _fixed(heads)
    if array.null_count:
        fields = pc.if_else(array.is_null(), pa.scalar(b"\xff\xff\xff\xff"), fields)
    return [fields, values]


def _fixed(data: np.ndarray) -> pa.Array:
    """The rows of a 2-d uint8 array as a binary array of their bytes."""
    data = np.ascontiguousarray(data)
    n, width = data.shape
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(data)])
    return fixed.cast(pa.binary())


def _data(array: pa.Array | pa.ChunkedArray) -> bytes:
    """The bytes of a binary array's values, one after the other."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if len(array) == 0:
        return b""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=len(array) + 1,
                            offset=array.offset * 4)  # fmt: skip
    return memoryview(array.buffers()[2])[offsets[0] : offsets[-1]].tobytes()
