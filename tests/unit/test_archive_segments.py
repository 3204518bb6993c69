"""Archive segments without a database: the CSV round trip of events, the checks of a segment's
bytes, and what a read of part of a segment keeps."""

from __future__ import annotations

import pytest

from shared.archive import segments
from shared.errors import SourceLost

ROW = (
    '1b4e28ba-2d2b-4a3c-8f1d-{n:012d},{agg},Order,ItemAdded,"{{""sku"": ""{payload}""}}",{{}},'
    "{n},{t},{t},{n}\n"
)


def chunk(aggs: list[str], payload: str = "x") -> bytes:
    return b"".join(
        ROW.format(n=i + 1, agg=agg, payload=payload, t=1_700_000_000_000_000 + i).encode()
        for i, agg in enumerate(aggs)
    )


def test_a_chunk_reads_whatever_its_payloads_hold() -> None:
    big = "y" * (3 << 20)  # beyond a CSV block
    table = segments.from_csv(chunk(['"a\nb"', "c", "d"], payload=big))
    assert table.num_rows == 3
    assert table["aggregate_id"].to_pylist() == ["a\nb", "c", "d"]
    assert len(table["payload"][0].as_py()) > 3 << 20


def test_a_segment_is_verified_by_checksum_and_count() -> None:
    written = segments.write(segments.from_csv(chunk(["a", "b", "c"])))
    segments.verify("s", written.data, written.sha256, 3)
    with pytest.raises(SourceLost, match="holds 3 events, expected 4"):
        segments.verify("s", written.data, written.sha256, 4)
    spoilt = written.data[:50] + bytes([written.data[50] ^ 1]) + written.data[51:]
    with pytest.raises(SourceLost, match="segment s is corrupted"):
        segments.verify("s", spoilt, written.sha256, 3)


@pytest.mark.parametrize(("as_bytes", "kept"), [(True, ["b", "c"]), (False, ["B", "b", "c", "d"])])
def test_an_aggregate_range_is_applied_only_where_ids_sort_as_bytes(
    as_bytes: bool, kept: list[str]
) -> None:
    """Under another collation ("B" between "a" and "c"), the reader's SQL applies the range."""
    data = segments.write(segments.from_csv(chunk(["B", "b", "c", "d"]))).data
    wanted = segments.Wanted(first_aggregate="b", last_aggregate="c", ids_sort_as_bytes=as_bytes)
    assert segments.read(data, wanted)["aggregate_id"].to_pylist() == kept


def test_the_kept_segments_stay_within_their_bytes_least_recently_used_out_first() -> None:
    from shared.archive.staging import _Verified

    kept = _Verified(10)
    kept.put(("a",), b"1234")
    kept.put(("b",), b"1234")
    assert kept.get(("a",)) == b"1234"  # a is now the most recently used
    kept.put(("c",), b"1234")  # 12 bytes: b goes
    assert kept.get(("b",)) is None and kept.get(("a",)) and kept.get(("c",))
    kept.put(("c",), b"12345678")  # replaced: 4 + 8, a goes
    assert kept.get(("a",)) is None and kept.get(("c",)) == b"12345678"
    kept.put(("d",), b"12345678901")  # larger than the whole: not kept, nothing evicted
    assert kept.get(("d",)) is None and kept.get(("c",)) == b"12345678"
