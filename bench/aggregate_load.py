"""``replay bench-aggregate``: the time to load one aggregate, 100 and 10,000 events long,
folded from its first event and from its latest snapshot, side by side (medians).

    replay bench-aggregate [--runs 50]
    .venv/bin/python bench/aggregate_load.py [the same arguments]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from examples.orders import seed
from scheduler import scratch
from shared import aggregates, db
from shared.settings import Settings

SUFFIX = "_aggbench"


def timed_loads(conn: db.Connection, agg: str, runs: int, use_snapshots: bool) -> tuple[float, int]:
    """Median milliseconds of ``runs`` loads, and the events the last one read."""
    aggregates.load_aggregate(conn, agg, use_snapshots=use_snapshots)  # warm, and snapshot
    times = []
    loaded = None
    for _ in range(runs):
        started = time.perf_counter()
        loaded = aggregates.load_aggregate(conn, agg, use_snapshots=use_snapshots)
        times.append(time.perf_counter() - started)
    assert loaded is not None
    return 1000 * statistics.median(times), loaded.events_read


def run(
    settings: Settings, runs: int, output: Path, console: Console, force: bool = False
) -> dict[str, Any]:
    """Load each aggregate ``runs`` times both ways on a scratch database (dropped after); print
    the table and write the report (JSON, to ``output``), which is returned."""
    name = f"{settings.database_name}{SUFFIX}"
    bench = scratch.recreate(settings, name, SUFFIX, force=force)
    rows = []
    with db.connect(bench) as conn:
        seed.seed(conn, 1, 100, seed=1)
        seed.seed(conn, 1, 10_000, seed=2)
        table = Table("aggregate size", "loaded from", "median ms", "events read")
        for agg, size in ((seed.aggregate_id(1, 0), 100), (seed.aggregate_id(2, 0), 10_000)):
            for use in (False, True):
                ms, read = timed_loads(conn, agg, runs, use)
                origin = "latest snapshot" if use else "first event"
                rows.append({"events": size, "from": origin, "median_ms": round(ms, 3),
                             "events_read": read})  # fmt: skip
                table.add_row(f"{size:,} events", origin, f"{ms:.2f}", str(read))
    db.drop_database(settings, name)
    console.print(table)
    report = {"runs": runs, "results": rows,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {output}")
    return report


if __name__ == "__main__":
    from scheduler.cli import main

    sys.exit(main(["bench-aggregate", *sys.argv[1:]]))
