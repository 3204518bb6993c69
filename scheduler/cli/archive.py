"""The archive's verbs (issue 17): ``archive``, ``unarchive``, ``archives``."""

from __future__ import annotations

import argparse
import json

from scheduler import archives
from scheduler.cli.commands import Subcommands, add, check_count
from scheduler.cli.display import console
from shared.archive.wanted import SEGMENT_EVENTS
from shared.settings import Settings

#: events per segment at most (a segment is built in memory)
MAX_SEGMENT_EVENTS = 5_000_000


def add_commands(sub: Subcommands) -> None:
    s = add(sub, cmd_archive, "move events older than a cut-off into archive segments")
    s.add_argument("--before", required=True, help="the cut-off (ISO-8601 with a time zone)")
    s.add_argument("--to", default=None,
                   help="where the segments go: file:///dir or s3://bucket/prefix (default:"
                        " REPLAY_ARCHIVE_URL, else <REPLAY_HOME>/archive)")  # fmt: skip
    s.add_argument("--segment-events", type=int, default=SEGMENT_EVENTS,
                   help="events per segment file at most")  # fmt: skip
    s = add(sub, cmd_unarchive, "bring archived segments back into the event table")
    s.add_argument(
        "--from",
        dest="from_time",
        default=None,
        help="segments holding events from this time on (default: the oldest)",
    )
    s.add_argument(
        "--to",
        dest="to_time",
        default=None,
        help="segments holding events before this time (default: the newest)",
    )
    s = add(sub, cmd_archives, "list the archive's segments")
    s.add_argument("--json", action="store_true")


def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    check_count("--segment-events", args.segment_events, MAX_SEGMENT_EVENTS)
    report = archives.archive_events(
        args.before, args.to, segment_events=args.segment_events, settings=settings,
        progress=lambda line: console.print(line, highlight=False),
    )  # fmt: skip
    console.print(
        f"archived {report['events']:,} events in {report['segments']} segments"
        f" ({report['bytes']:,} bytes) to {report['url']} in {report['seconds']:.1f} s"
        + (f"; removed {report['orphans_removed']} orphan files" if report["orphans_removed"]
           else ""),
        highlight=False,
    )  # fmt: skip
    return 0


def cmd_unarchive(settings: Settings, args: argparse.Namespace) -> int:
    report = archives.unarchive_events(
        args.from_time, args.to_time, settings=settings,
        progress=lambda line: console.print(line, highlight=False),
    )  # fmt: skip
    console.print(f"restored {report['events']:,} events from {report['segments']} segments"
                  f" in {report['seconds']:.1f} s", highlight=False)  # fmt: skip
    return 0


def cmd_archives(settings: Settings, args: argparse.Namespace) -> int:
    segments = archives.archived_segments(settings)
    if args.json:
        print(json.dumps(segments, default=str))
        return 0
    for s in segments:
        console.print(
            f"{s['segment_id']}  {s['first_time']:%Y-%m-%d} … {s['last_time']:%Y-%m-%d}"
            f"  {s['first_aggregate']} … {s['last_aggregate']}  {s['events']:,} events"
            f"  {s['bytes']:,} bytes  {s['url']}/{s['path']}",
            highlight=False,
        )
    total = sum(s["events"] for s in segments)
    console.print(f"{len(segments)} segments, {total:,} events", highlight=False)
    return 0
