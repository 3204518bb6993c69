"""An independent fold of the event store into what ``order_summary`` should hold, in SQL,
to check a replay's result (used by the demo and the benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.db import Connection

# Written from DESIGN.md's definition of order_summary, not from the handler's code.
_EXPECTED = """
SELECT aggregate_id::text AS order_id,
       coalesce(sum((payload->>'qty')::int) FILTER (WHERE event_type = 'ItemAdded'), 0)::int
           AS item_count,
       coalesce(sum((payload->>'qty')::int * (payload->>'price')::numeric)
           FILTER (WHERE event_type = 'ItemAdded'), 0)::numeric(14,2) AS total,
       (array_agg(CASE event_type WHEN 'OrderPlaced' THEN 'placed'
                                  WHEN 'PaymentProcessed' THEN 'paid'
                                  WHEN 'OrderShipped' THEN 'shipped' END
                  ORDER BY sequence_num DESC)
           FILTER (WHERE event_type IN ('OrderPlaced', 'PaymentProcessed', 'OrderShipped')))[1]
           AS status,
       max(sequence_num) AS version
  FROM event WHERE aggregate_type = 'Order'
 GROUP BY aggregate_id
"""


@dataclass(frozen=True)
class Verification:
    expected_rows: int
    actual_rows: int
    missing_or_different: int
    unexpected: int

    @property
    def ok(self) -> bool:
        return self.missing_or_different == 0 and self.unexpected == 0


def verify_order_summary(conn: Connection) -> Verification:
    """Compare ``order_summary`` with a fold of every Order event, row by row."""
    row = conn.execute(
        f"""
        WITH expected AS ({_EXPECTED}),
             actual AS (SELECT order_id, item_count, total, status, version FROM order_summary)
        SELECT (SELECT count(*) FROM expected) AS expected_rows,
               (SELECT count(*) FROM actual) AS actual_rows,
               (SELECT count(*) FROM (SELECT * FROM expected EXCEPT SELECT * FROM actual) d)
                   AS missing_or_different,
               (SELECT count(*) FROM (SELECT * FROM actual EXCEPT SELECT * FROM expected) d)
                   AS unexpected
        """
    ).fetchone()
    assert row is not None
    return Verification(**{k: int(v) for k, v in row.items()})
