"""The archive's segment files: Parquet (zstd), one per run of events in ``(aggregate_id,
sequence_num)`` order, in row groups whose statistics (aggregate ids, times) let a reader take
only the groups of its slice. A segment holds every column of the event table, ``txid``
included (a job's frozen scope is a snapshot of transactions, and stays exact across tiers).

Events come out of PostgreSQL as CSV through COPY (``from_csv``) and go back in, staged for a
slice or unarchived, in COPY's binary format (``pgcopy``): no row passes through Python objects.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.archive.wanted import COLUMNS, Wanted
from shared.errors import SourceLost

__all__ = ["COLUMNS", "SCHEMA", "Wanted", "Written", "read", "verify", "write"]

#: rows per row group: what a slice reads at least of a segment it overlaps (a segment holds a
#: month of every aggregate: a slice of an eighth of the aggregates reads about an eighth of it)
ROW_GROUP = 8_192

SCHEMA = pa.schema([
    ("event_id", pa.string()),
    ("aggregate_id", pa.string()),
    ("aggregate_type", pa.string()),
    ("event_type", pa.string()),
    ("payload", pa.string()),
    ("metadata", pa.string()),
    ("sequence_num", pa.int64()),
    ("occurred_at", pa.timestamp("us", tz="UTC")),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("txid", pa.int64()),
])  # fmt: skip
assert tuple(SCHEMA.names) == COLUMNS
#: what the PostgreSQL side selects for COPY ... TO, in SCHEMA's order (times as microseconds)
EXPORT_COLUMNS = (
    "event_id, aggregate_id, aggregate_type, event_type, payload::text, metadata::text,"
    " sequence_num, (extract(epoch FROM occurred_at) * 1000000)::bigint,"
    " (extract(epoch FROM created_at) * 1000000)::bigint, txid::text::bigint"
)
_EXPORT_TYPES = {
    **{name: SCHEMA.field(name).type for name in COLUMNS},
    "occurred_at": pa.int64(),
    "created_at": pa.int64(),
}


@dataclass(frozen=True)
class Written:
    """A segment as written: its bytes' checksum and size, and what it holds."""

    data: bytes
    sha256: str
    events: int
    first_aggregate: str
    last_aggregate: str
    first_time: datetime
    last_time: datetime
    max_txid: int


def from_csv(data: bytes) -> pa.Table:
    """The rows of ``COPY (SELECT EXPORT_COLUMNS ...) TO STDOUT (FORMAT csv)`` as a table."""
    if not data:
        return SCHEMA.empty_table()
    table = pacsv.read_csv(
        io.BytesIO(data),
        # one block for the whole chunk: a row may be as large as a payload can be (a row that
        # straddles blocks fails to parse), and a value may hold a newline
        read_options=pacsv.ReadOptions(
            column_names=list(COLUMNS), block_size=max(len(data) + 1, 1 << 20)
        ),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=_EXPORT_TYPES, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    for name in ("occurred_at", "created_at"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table[name].cast(SCHEMA.field(name).type))
    return table


def write(table: pa.Table) -> Written:
    """``table`` (sorted by aggregate and sequence) as a segment's bytes."""
    out = io.BytesIO()
    pq.write_table(
        table.cast(SCHEMA), out, compression="zstd", row_group_size=ROW_GROUP,
        write_statistics=True, write_page_checksum=True,
    )  # fmt: skip
    data = out.getvalue()
    times = pc.min_max(table["occurred_at"])
    return Written(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        events=table.num_rows,
        first_aggregate=table["aggregate_id"][0].as_py(),
        last_aggregate=table["aggregate_id"][-1].as_py(),
        first_time=times["min"].as_py(),
        last_time=times["max"].as_py(),
        max_txid=pc.max(table["txid"]).as_py(),
    )


def verify(name: str, data: bytes, sha256: str, events: int) -> None:
    """``SourceLost`` naming the segment unless ``data`` has the checksum and the count of
    events it was written with."""
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        raise SourceLost(f"archive segment {name} is corrupted (sha256 {found[:12]}…, expected"
                         f" {sha256[:12]}…)")  # fmt: skip
    try:
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    except Exception as exc:
        raise SourceLost(f"archive segment {name} cannot be read: {exc}") from None
    if rows != events:
        raise SourceLost(f"archive segment {name} holds {rows} events, expected {events}")


def read(data: bytes, wanted: Wanted) -> pa.Table:
    """The rows of a segment's ``data`` that ``wanted`` picks: only the row groups whose
    statistics may hold some are read."""
    f = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
    groups = [i for i in range(f.num_row_groups) if _may_hold(f.metadata.row_group(i), wanted)]
    columns = list(dict.fromkeys([*wanted.columns, "aggregate_id", "occurred_at", "event_type"]))
    if not groups:
        return SCHEMA.empty_table().select(list(wanted.columns))
    table = f.read_row_groups(groups, columns=columns)
    mask = _mask(table, wanted)
    if mask is not None:
        table = table.filter(mask)
    return table.select(list(wanted.columns))


def _may_hold(group: Any, wanted: Wanted) -> bool:
    stats = {group.column(i).path_in_schema: group.column(i).statistics
             for i in range(group.num_columns)}  # fmt: skip
    agg, time = stats.get("aggregate_id"), stats.get("occurred_at")
    first = wanted.aggregate_id or (wanted.first_aggregate if wanted.ids_sort_as_bytes else None)
    last = wanted.aggregate_id or (wanted.last_aggregate if wanted.ids_sort_as_bytes else None)
    if agg is not None and agg.has_min_max:
        if first is not None and agg.max < first:
            return False
        if last is not None and agg.min > last:
            return False
    if time is not None and time.has_min_max:
        if wanted.from_time is not None and time.max < wanted.from_time:
            return False
        if wanted.to_time is not None and time.min >= wanted.to_time:
            return False
    return True


def _mask(table: pa.Table, wanted: Wanted) -> Any:
    conds = []
    agg = table["aggregate_id"]
    if wanted.aggregate_id is not None:
        conds.append(pc.equal(agg, wanted.aggregate_id))
    if wanted.first_aggregate is not None and wanted.ids_sort_as_bytes:
        conds.append(pc.greater_equal(agg, wanted.first_aggregate))
    if wanted.last_aggregate is not None and wanted.ids_sort_as_bytes:
        conds.append(pc.less_equal(agg, wanted.last_aggregate))
    at, time_type = table["occurred_at"], SCHEMA.field("occurred_at").type
    if wanted.from_time is not None:
        conds.append(pc.greater_equal(at, pa.scalar(wanted.from_time, time_type)))
    if wanted.to_time is not None:
        conds.append(pc.less(at, pa.scalar(wanted.to_time, time_type)))
    if wanted.event_types:
        conds.append(pc.is_in(table["event_type"], pa.array(list(wanted.event_types))))
    if not conds:
        return None
    mask = conds[0]
    for cond in conds[1:]:
        mask = pc.and_(mask, cond)
    return mask
