"""Planning: cutting a job's scope into slices of about equal event counts.

Both planners run inside the planning transaction, at the job's snapshot, so the counts they return
are exactly what the slices will read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from shared.db import Connection
from shared.scope import Scope, SliceBounds, where_clause

# slices=None: about this many events per slice, within [1, DEFAULT_MAX_SLICES].
EVENTS_PER_SLICE = 25_000
DEFAULT_MAX_SLICES = 64
MAX_SLICES = 1024


@dataclass(frozen=True)
class PlannedSlice:
    slice_no: int
    bounds: SliceBounds
    total_events: int


def default_slice_count(total_events: int) -> int:
    """The number of slices when the user does not choose: one per EVENTS_PER_SLICE events."""
    return max(1, min(DEFAULT_MAX_SLICES, -(-total_events // EVENTS_PER_SLICE)))


# Counts per aggregate, then cuts the running total into `slices` equal parts. Aggregates are never
# split (their events must be processed in order by one task), so a very large aggregate makes its
# slice larger and the number of slices can come out lower than asked.
_PLAN_BY_AGGREGATE = """
WITH per_aggregate AS (
    SELECT aggregate_id, count(*) AS n FROM event WHERE {where} GROUP BY aggregate_id
), running AS (
    SELECT aggregate_id, n,
           sum(n) OVER (ORDER BY aggregate_id) - n AS before,
           sum(n) OVER () AS total
      FROM per_aggregate
)
SELECT floor(before * %(slices)s / total)::int AS bucket,
       min(aggregate_id) AS first_aggregate,
       max(aggregate_id) AS last_aggregate,
       sum(n)::bigint AS events
  FROM running
 GROUP BY 1
 ORDER BY 1
"""

_COUNT = "SELECT count(*) AS n FROM event WHERE {where}"
_TIME_QUANTILES = (
    "SELECT percentile_disc(%(fractions)s::float8[]) WITHIN GROUP (ORDER BY occurred_at) AS q"
    " FROM event WHERE {where}"
)
_COUNT_BY_TIME_BUCKET = (
    "SELECT width_bucket(occurred_at, %(bounds)s::timestamptz[]) AS bucket, count(*) AS n"
    " FROM event WHERE {where} GROUP BY 1 ORDER BY 1"
)


def count_events(conn: Connection, scope: Scope, snapshot: str | None) -> int:
    conds, params = scope.where(snapshot)
    query = sql.SQL(_COUNT).format(where=where_clause(conds))
    row = conn.execute(query, params).fetchone()
    return int(row["n"]) if row else 0


def plan_by_aggregate(
    conn: Connection, scope: Scope, snapshot: str, slices: int
) -> list[PlannedSlice]:
    conds, params = scope.where(snapshot)
    query = sql.SQL(_PLAN_BY_AGGREGATE).format(where=where_clause(conds))
    rows = conn.execute(query, {**params, "slices": slices}).fetchall()
    return [
        PlannedSlice(
            slice_no=i,
            bounds=SliceBounds(
                first_aggregate=r["first_aggregate"], last_aggregate=r["last_aggregate"]
            ),
            total_events=int(r["events"]),
        )
        for i, r in enumerate(rows)
    ]


def time_fractions(slices: int) -> list[float]:
    """The quantiles whose values cut a time range into ``slices`` parts of equal counts."""
    return [i / slices for i in range(1, slices)]


def plan_by_time(conn: Connection, scope: Scope, snapshot: str, slices: int) -> list[PlannedSlice]:
    conds, params = scope.where(snapshot)
    where = where_clause(conds)
    bounds: list[datetime] = []
    if slices > 1:
        row = conn.execute(
            sql.SQL(_TIME_QUANTILES).format(where=where),
            {**params, "fractions": time_fractions(slices)},
        ).fetchone()
        # Many events at one instant can make quantiles repeat; a boundary only counts once.
        bounds = sorted({q for q in (row["q"] if row and row["q"] else []) if q is not None})
    rows = conn.execute(
        sql.SQL(_COUNT_BY_TIME_BUCKET).format(where=where), {**params, "bounds": bounds}
    ).fetchall()
    return _time_slices(bounds, {int(r["bucket"]): int(r["n"]) for r in rows})


def _time_slices(bounds: list[datetime], counts: dict[int, int]) -> list[PlannedSlice]:
    """Slices from width_bucket's buckets: bucket 0 is before bounds[0], bucket i is
    [bounds[i-1], bounds[i]), the last one after the last bound. Empty buckets are dropped."""
    planned: list[PlannedSlice] = []
    for bucket in range(len(bounds) + 1):
        n = counts.get(bucket, 0)
        if n == 0:
            continue
        planned.append(
            PlannedSlice(
                slice_no=len(planned),
                bounds=SliceBounds(
                    from_time=bounds[bucket - 1] if bucket > 0 else None,
                    to_time=bounds[bucket] if bucket < len(bounds) else None,
                ),
                total_events=n,
            )
        )
    return planned


def missing_event_types(conn: Connection, event_types: tuple[str, ...]) -> list[str]:
    """The given event types that no event in the store has (index lookups, not a scan)."""
    rows = conn.execute(
        "SELECT t FROM unnest(%s::text[]) AS t"
        " WHERE NOT EXISTS (SELECT 1 FROM event WHERE event_type = t) ORDER BY t",
        (list(event_types),),
    ).fetchall()
    return [r["t"] for r in rows]


def known_event_types(conn: Connection, limit: int = 30) -> list[str]:
    """Distinct event types in the store, by a loose index scan (fast on a large table)."""
    rows = conn.execute(
        """
        WITH RECURSIVE t AS (
            (SELECT event_type FROM event ORDER BY event_type LIMIT 1)
            UNION ALL
            SELECT (SELECT e.event_type FROM event e WHERE e.event_type > t.event_type
                     ORDER BY e.event_type LIMIT 1)
              FROM t WHERE t.event_type IS NOT NULL
        )
        SELECT event_type FROM t WHERE event_type IS NOT NULL LIMIT %s
        """,
        (limit,),
    ).fetchall()
    return [r["event_type"] for r in rows]


def slice_row(planned: PlannedSlice) -> dict[str, Any]:
    b = planned.bounds
    return {
        "slice_no": planned.slice_no,
        "first_aggregate": b.first_aggregate,
        "last_aggregate": b.last_aggregate,
        "from_time": b.from_time,
        "to_time": b.to_time,
        "total_events": planned.total_events,
    }
