"""``replay bench-diff``: ``replay diff``'s comparison of a read model of 1,000,000 rows
(``order_summary``'s shape) with a copy of it that differs in 37 rows and has 10 rows fewer and
10 more, on a scratch database (dropped after). Prints the median time of the comparison, the
client's peak RSS before and after, and the temporary bytes PostgreSQL wrote for it; writes
the JSON report."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from scheduler import scratch
from shared import db, shadow_diff
from shared.settings import Settings

SUFFIX = "_diffbench"
MAKE = (
    "DROP TABLE IF EXISTS order_summary",
    "CREATE TABLE order_summary (order_id text PRIMARY KEY, item_count int NOT NULL DEFAULT 0,"
    " total numeric(14,2) NOT NULL DEFAULT 0, status text, version bigint NOT NULL DEFAULT 0)",
    "INSERT INTO order_summary SELECT 'order-' || lpad(g::text, 8, '0'), g %% 50,"
    " (g %% 5000) / 100.0, (ARRAY['placed', 'paid', 'shipped'])[1 + g %% 3], g %% 100"
    " FROM generate_series(1, %(rows)s) g",
    "CREATE SCHEMA shadow",
    "CREATE TABLE shadow.order_summary (LIKE order_summary INCLUDING ALL)",
    "INSERT INTO shadow.order_summary SELECT * FROM order_summary",
    "UPDATE shadow.order_summary SET total = total + 1"
    " WHERE order_id IN (SELECT order_id FROM order_summary ORDER BY order_id LIMIT 37)",
    "DELETE FROM shadow.order_summary"
    " WHERE order_id IN (SELECT order_id FROM order_summary ORDER BY order_id DESC LIMIT 10)",
    "INSERT INTO shadow.order_summary SELECT 'new-' || g, 1, 1, 'placed', 1"
    " FROM generate_series(1, 10) g",
    "VACUUM (ANALYZE) order_summary",
    "VACUUM (ANALYZE) shadow.order_summary",
)
TEMP_BYTES = "SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(
    settings: Settings, rows: int, runs: int, output: Path, console: Console, force: bool = False
) -> dict[str, Any]:
    name = f"{settings.database_name}{SUFFIX}"
    bench = scratch.recreate(settings, name, SUFFIX, force=force)
    try:
        with db.connect(bench) as conn:
            for statement in MAKE:
                conn.execute(statement, {"rows": rows} if "%(rows)s" in statement else None)
            rss_before = peak_rss_mb()
            temp_before = conn.execute(TEMP_BYTES).fetchone()["temp_bytes"]  # type: ignore[index]
            seconds = []
            for _ in range(runs):
                began = time.perf_counter()
                table = shadow_diff.compare_table(conn, "public", "shadow", "order_summary")
                seconds.append(time.perf_counter() - began)
            temp = conn.execute(TEMP_BYTES).fetchone()["temp_bytes"] - temp_before  # type: ignore[index]
    finally:
        db.drop_database(settings, name)
    report = {
        "rows": rows, "runs": runs, "median_seconds": round(statistics.median(seconds), 3),
        "client_peak_rss_mb_before": round(rss_before, 1),
        "client_peak_rss_mb_after": round(peak_rss_mb(), 1),
        "postgres_temp_mb_per_run": round(temp / runs / 2**20, 1),
        "found": {k: table[k] for k in ("only_live", "only_shadow", "changed", "changed_columns")},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    console.print(
        f"replay diff of {rows:,} rows: {report['median_seconds']} s (median of {runs});"
        f" client peak RSS {report['client_peak_rss_mb_before']} ->"
        f" {report['client_peak_rss_mb_after']} MB; PostgreSQL temp files"
        f" {report['postgres_temp_mb_per_run']} MB per run; found {report['found']}",
        highlight=False,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {output}")
    return report


if __name__ == "__main__":
    from scheduler.cli import main

    sys.exit(main(["bench-diff", *sys.argv[1:]]))
