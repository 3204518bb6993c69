"""What ``replay`` prints, from its pure functions (no services): one format for counts, rates
and durations; tables that fit the terminal without cutting an id or a status; a job's one rate
and its ETA; JSON that reads back; the demo's closing hint."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from scheduler.cli import build_parser, demo, formats
from scheduler.cli.commands import on_database
from scheduler.cli.formats import Column
from scheduler.cli.jobs import JOB_COLUMNS, SLICE_COLUMNS
from shared import views
from shared.errors import InvalidRequest
from shared.settings import Settings

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def job(**values: Any) -> dict[str, Any]:
    """A job view as ``shared.views`` reads it from the database, before its timing."""
    base: dict[str, Any] = {
        "job_id": str(uuid.UUID(int=7)), "consumer": "order_summary", "replay_type": "full",
        "status": "running", "total_events": 300_000, "processed_count": 89_000,
        "applied_count": 89_000, "skipped_count": 0, "poison_count": 0, "on_error": "fail",
        "error": None, "created_at": T0, "started_at": T0 + timedelta(seconds=1),
        "completed_at": None, "slice_count": 8,
    }  # fmt: skip
    return {**base, **values}


# --- numbers ---------------------------------------------------------------------------------


def test_counts_and_rates_carry_thousands_separators() -> None:
    assert formats.count(1_234_567) == "1,234,567"
    assert formats.fraction(89_000, 300_000) == "89,000/300,000"
    assert formats.rate(91_955.4) == "91,955 events/s"
    assert formats.rate(2.5) == "2.5 events/s"  # a throttle's limit below 10 keeps its decimal
    assert formats.rate(None) == "- events/s"


def test_durations_read_the_same_in_the_bar_and_the_summary() -> None:
    assert formats.duration(0.25) == "0.2 s"
    assert formats.duration(12) == "12 s"
    assert formats.duration(245) == "4 min 05 s"
    assert formats.duration(7620) == "2 h 07 min"
    assert formats.duration(None) == "-"
    # an ETA in whole seconds, rounded up, as Flower shows a slice's (worker.progress)
    assert formats.eta(2.1) == "ETA 3 s"
    assert formats.eta(3725) == "ETA 1 h 02 min"
    assert formats.eta(None) == ""


# --- a job's one rate and its ETA (shared.views) ---------------------------------------------


def test_a_running_job_has_a_rate_and_an_eta_from_its_counts() -> None:
    view = views.with_timing(job(), now=T0 + timedelta(seconds=11))
    assert view["elapsed_seconds"] == 10.0
    assert view["events_per_second"] == 8_900.0
    assert view["eta_seconds"] == pytest.approx((300_000 - 89_000) / 8_900)


def test_no_eta_without_a_rate_or_after_the_end() -> None:
    pending = views.with_timing(job(status="pending", started_at=None, processed_count=0))
    assert (pending["events_per_second"], pending["eta_seconds"]) == (None, None)
    nothing_yet = views.with_timing(job(processed_count=0), now=T0 + timedelta(seconds=5))
    assert nothing_yet["events_per_second"] == 0.0 and nothing_yet["eta_seconds"] is None
    finishing = views.with_timing(job(processed_count=300_000), now=T0 + timedelta(seconds=5))
    assert finishing["eta_seconds"] is None
    ended = T0 + timedelta(seconds=31)
    done = views.with_timing(job(status="completed", processed_count=300_000, completed_at=ended))
    assert done["events_per_second"] == 10_000.0 and done["eta_seconds"] is None
    instant = views.with_timing(job(status="completed", completed_at=T0 + timedelta(seconds=1)))
    assert instant["events_per_second"] is None  # 0 s of run time: no rate, not a division


def test_the_bar_and_the_summary_show_the_same_figures() -> None:
    running = views.with_timing(job(), now=T0 + timedelta(seconds=11))
    assert formats.figures(running) == ("89,000/300,000 events · 8,900 events/s · 10 s · ETA 24 s")
    assert formats.summary(running) == [
        f"job {running['job_id']} running: 89,000/300,000 events (89,000 applied, 0 already"
        " processed); running for 10 s at 8,900 events/s, ETA 24 s"
    ]
    ended = job(status="completed", processed_count=300_000, applied_count=299_000,
                skipped_count=1_000, completed_at=T0 + timedelta(seconds=31),
                poison_count=1_234, error="boom\nsecond line")  # fmt: skip
    done = views.with_timing(ended)
    assert formats.figures(done) == "300,000/300,000 events · 10,000 events/s · 30 s"
    line, poison, error = formats.summary(done)
    assert line.endswith(
        "300,000/300,000 events (299,000 applied, 1,000 already processed); ran 30 s at 10,000"
        " events/s"
    )
    assert poison == "1,234 event(s) skipped or parked by on_error=fail"
    assert error == "error: boom"
    pending = views.with_timing(job(status="pending", started_at=None, processed_count=0))
    assert formats.summary(pending)[0].endswith("; not started yet")


# --- tables ----------------------------------------------------------------------------------


def job_rows(n: int = 3) -> list[list[str]]:
    return [
        [str(uuid.uuid4()), "order_notifications", "time_range", status, "1,000,000/1,000,000",
         "2026-11-28 12:00:00"]
        for status in ("cancelled", "completed", "running")[:n]
    ]  # fmt: skip


@pytest.mark.parametrize("width", [40, 60, 80, 100, 200])
def test_the_jobs_table_never_cuts_an_id_or_a_status(width: int) -> None:
    rows = job_rows()
    laid = formats.table(JOB_COLUMNS, rows, width)
    for row, line in zip(rows, laid.lines[1:], strict=True):
        assert row[0] in line.split() and row[3] in line.split()
    if width >= 36 + 2 + 9:  # an id and a status fit: every line does
        assert max(len(line) for line in laid.lines) <= width


def test_columns_are_left_out_least_needed_first() -> None:
    rows = job_rows()
    wide = formats.table(JOB_COLUMNS, rows, 200)
    assert wide.dropped == [] and wide.lines[0].split() == [c.header for c in JOB_COLUMNS]
    at_80 = formats.table(JOB_COLUMNS, rows, 80)
    assert at_80.dropped == ["type", "events", "created"]
    assert at_80.lines[0].split() == ["job", "consumer", "status"]


def test_the_slice_table_fits_80_columns_without_wrapping_a_row() -> None:
    by_aggregate = [
        [str(n), "completed", f"order-1-{n:07d} .. order-1-{n + 49:07d}", "37,500/37,500", "1"]
        for n in range(0, 400, 50)
    ]
    laid = formats.table(SLICE_COLUMNS, by_aggregate, 80)
    assert laid.dropped == [] and max(len(line) for line in laid.lines) <= 80
    assert len(laid.lines) == 1 + len(by_aggregate)
    by_time = [["12", "running", "2026-02-01 00:00:00 .. 2026-03-01 00:00:00", "5,000/37,500", "2"]]
    laid = formats.table(SLICE_COLUMNS, by_time, 80)
    assert laid.dropped == ["attempts"] and max(len(line) for line in laid.lines) <= 80
    assert "2026-02-01 00:00:00 .. 2026-03-01 00:00:00" in laid.lines[1]


def test_cells_are_padded_by_their_width_on_screen_and_numbers_align_right() -> None:
    laid = formats.table(
        [Column("id"), Column("n", right=True)], [["注文-1", "5"], ["o-22", "1,000"]], 80
    )
    assert laid.lines == ["id          n", "注文-1      5", "o-22    1,000"]


# --- JSON and the parser ---------------------------------------------------------------------


def test_json_output_reads_back_with_uuids_and_datetimes_as_strings() -> None:
    value = {"id": uuid.UUID(int=1), "at": T0, "price": Decimal("19.99"), "n": 3}
    back = json.loads(formats.to_json([value]))
    assert back == [{"id": str(uuid.UUID(int=1)), "at": T0.isoformat(), "price": "19.99", "n": 3}]


@pytest.mark.parametrize(
    "verb", [["jobs"], ["status", "J"], ["parked", "J"], ["handlers"], ["reconcile"]]
)
def test_every_listing_verb_takes_json(verb: list[str]) -> None:
    assert build_parser().parse_args([*verb, "--json"]).json is True


def test_database_names_a_database_of_the_same_server() -> None:
    settings = Settings(database_url="postgresql://u:pw@db.example:5433/replay")
    args = argparse.Namespace(database="replay_demo")
    assert on_database(settings, args).database_url == (
        "postgresql://u:pw@db.example:5433/replay_demo"
    )
    assert on_database(settings, argparse.Namespace(database=None)) is settings
    with pytest.raises(InvalidRequest, match="--database must be a database name"):
        on_database(settings, argparse.Namespace(database="x/../y?sslmode=disable"))


# --- the demo's closing hint -----------------------------------------------------------------


def test_the_demos_hint_runs_in_a_new_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the demo's directory, by the path of ``replay`` (a new shell has no .venv on its
    PATH), on the demo's database; the servers are found again as the demo found them."""
    monkeypatch.chdir(tmp_path)
    for name in ("REPLAY_HOME", "REPLAY_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:5432/replay_demo")
    text = demo.hint(settings, "JOB")
    assert text.startswith(f"cd {tmp_path} && ")
    assert text.endswith(" status JOB --database replay_demo")
    command = text.removeprefix(f"cd {tmp_path} && ").split(" status ")[0]
    assert command != "replay" and ("/" in command or " -m scheduler.cli" in command)

    monkeypatch.setenv("REPLAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REPLAY_DATABASE_URL", "postgresql://u:secret@db.example/replay")
    text = demo.hint(settings.with_database("replay_demo"), "JOB")
    assert f"REPLAY_HOME={tmp_path / 'home'} " in text
    assert "REPLAY_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/replay_demo " in text
    assert "secret" not in demo.hint(
        Settings(database_url="postgresql://u:secret@db.example/replay_demo"), "JOB"
    )
