"""``replay bench-archive``: what the archive tier costs and how fast replays read it, on a
scratch database of orders over 24 months (dropped after).

* bytes per event in the event table (the table, its TOAST and every index) against archived
  (the segment files, and the catalogue);
* a full rebuild of ``order_summary`` with 2 worker processes and 8 slices from the event table,
  then the same after everything older than the last month was archived (each aggregate's
  newest event stays hot): events/s of each, by the jobs' own timestamps; the archived run's
  read model must equal the hot run's, row for row;
* the archive run itself: events/s.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.replay_bench import job_seconds, peak_rss_mb
from examples.orders import seed
from local import embedded
from local.workers import running_workers
from scheduler import scratch
from scheduler.coordinator import Coordinator
from shared import db
from shared.archive import mover
from shared.jobs import Status
from shared.settings import Settings

SUFFIX = "_archbench"
START = datetime(2024, 1, 1, tzinfo=UTC)
MONTHS = 24
#: archived: everything before the last month of the data
CUTOFF = datetime(2025, 12, 1, tzinfo=UTC)
HOT_BYTES = "SELECT pg_total_relation_size('event') AS b, (SELECT count(*) FROM event) AS n"
CATALOGUE_BYTES = "SELECT pg_total_relation_size('archive_segment') AS b"
#: the read model, row for row, as one digest
DIGEST = (
    "SELECT md5(string_agg(concat_ws('|', order_id, item_count, total, status, version), ','"
    " ORDER BY order_id)) AS d, count(*) AS n FROM order_summary"
)


def _rebuild(bench: Settings, runs: int, logs: Path, name: str) -> dict[str, Any]:
    seconds, rss = [], []
    digest = None
    for run in range(runs):
        with running_workers(bench, 2, f"archbench{name}{run}", logs) as procs:
            coordinator = Coordinator(bench)
            job = coordinator.wait(coordinator.submit("order_summary", reset=True, slices=8))
            coordinator.close()
            if job["status"] != Status.COMPLETED:
                raise RuntimeError(f"{name}: job ended {job['status']}: {job['error']}")
            seconds.append(job_seconds(job))
            rss.append(peak_rss_mb([p.pid for p in procs]))
        with db.connect(bench) as conn:
            digest = conn.execute(DIGEST).fetchone()
    median = statistics.median(seconds)
    return {"events": job["total_events"], "median_seconds": round(median, 3),
            "events_per_second": round(job["total_events"] / median),
            "peak_rss_mb": round(max(rss), 1), "runs": runs, "digest": digest}  # fmt: skip


def _report(
    hot: Any, moved: mover.MoveReport, catalogue: Any, archive_seconds: float,
    from_hot: dict[str, Any], from_archive: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    hot_per_event = hot["b"] / hot["n"]
    archived_per_event = (moved.bytes + catalogue["b"]) / moved.events
    return {
        "events": hot["n"], "archived_events": moved.events, "months": MONTHS,
        "cutoff": CUTOFF.isoformat(), "segments": moved.segments,
        "hot_bytes_per_event": round(hot_per_event, 1),
        "archived_bytes_per_event": round(archived_per_event, 1),
        "archived_over_hot": round(archived_per_event / hot_per_event, 3),
        "archive_events_per_second": round(moved.events / archive_seconds),
        "rebuild_from_hot": {k: v for k, v in from_hot.items() if k != "digest"},
        "rebuild_from_archive": {k: v for k, v in from_archive.items() if k != "digest"},
        "archive_over_hot_speed": round(
            from_archive["events_per_second"] / from_hot["events_per_second"], 3
        ),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def run(
    settings: Settings,
    aggregates: int,
    per: int,
    runs: int,
    output: Path,
    console: Console,
    force: bool = False,
) -> dict[str, Any]:
    name = f"{settings.database_name}{SUFFIX}"
    bench = replace(scratch.recreate(settings, name, SUFFIX, force=force),
                    queue=f"{settings.queue}_archbench")  # fmt: skip
    logs = embedded.home()
    logs.mkdir(parents=True, exist_ok=True)
    try:
        with db.connect(bench) as conn:
            seed.seed(conn, aggregates, per, seed=42, start=START, months=MONTHS)
            conn.execute("VACUUM (ANALYZE) event")
            hot = conn.execute(HOT_BYTES).fetchone()
        assert hot is not None
        console.print(f"seeded {hot['n']:,} events; the event table holds {hot['b']:,} bytes")
        from_hot = _rebuild(bench, runs, logs, "hot")
        with tempfile.TemporaryDirectory() as tmp, db.connect(bench) as conn:
            began = time.perf_counter()
            moved = mover.archive(conn, f"file://{tmp}/archive", CUTOFF)
            archive_seconds = time.perf_counter() - began
            catalogue = conn.execute(CATALOGUE_BYTES).fetchone()
            assert catalogue is not None
            from_archive = _rebuild(bench, runs, logs, "archived")
    finally:
        db.drop_database(settings, name)
    if from_archive["digest"] != from_hot["digest"]:
        raise RuntimeError("the read model rebuilt from the archive differs from the hot one")
    report = _report(hot, moved, catalogue, archive_seconds, from_hot, from_archive)
    console.print(
        f"bytes per event: {report['hot_bytes_per_event']} hot, "
        f"{report['archived_bytes_per_event']} archived ({report['archived_over_hot']:.1%});"
        f" archive run {report['archive_events_per_second']:,} events/s;"
        f" full rebuild (2 processes, 8 slices) {from_hot['events_per_second']:,} events/s from"
        f" the event table, {from_archive['events_per_second']:,} from the archive"
        f" ({report['archive_over_hot_speed']:.0%})",
        highlight=False,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {output}")
    return report
