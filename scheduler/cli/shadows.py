"""The verbs of shadow rebuilds (``replay submit --reset --shadow``, issue 16): ``diff``,
``cutover``, ``rollback``, ``discard``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from scheduler.cli.commands import Subcommands, add
from scheduler.cli.display import console
from scheduler.coordinator import Coordinator
from shared.settings import Settings


def add_commands(sub: Subcommands) -> None:
    s = add(sub, cmd_diff, "compare a shadow rebuild's tables with the live ones")
    s.add_argument("job_id")
    s.add_argument("--json", action="store_true", help="counts and examples as JSON")
    s = add(sub, cmd_cutover, "swap a ready shadow rebuild in (one transaction)")
    s.add_argument("job_id")
    s = add(sub, cmd_rollback, "swap the tables a cutover replaced back in")
    s.add_argument("job_id")
    s = add(sub, cmd_discard, "drop a shadow rebuild's side that is not live")
    s.add_argument("job_id")


def cmd_diff(settings: Settings, args: argparse.Namespace) -> int:
    report = Coordinator(settings).diff(args.job_id)
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    for line in diff_lines(report):
        console.print(line, highlight=False, markup=False)
    return 0


def diff_lines(report: dict[str, Any]) -> list[str]:
    """``replay diff`` as text: a line of counts per table, then its examples."""
    lines = [f"job {report['job_id']} ({report['phase'].replace('_', ' ')}): {report['compared']}"]
    for t in report["tables"]:
        columns = ", ".join(f"{c} {n:,}" for c, n in t["changed_columns"].items()) or "none"
        lines.append(
            f"{t['table']} (key {', '.join(t['key'])}): {t['live_rows']:,} rows live,"
            f" {t['shadow_rows']:,} other · only live {t['only_live']:,} · only other"
            f" {t['only_shadow']:,} · changed {t['changed']:,} (columns: {columns})"
        )
        for kind, examples in t["examples"].items():
            for e in examples:
                key = ", ".join(f"{k}={v}" for k, v in e["key"].items())
                what = f" [{', '.join(e['columns'])}]" if e.get("columns") else ""
                lines.append(f"  {kind.replace('_', ' ')}: {key}{what}")
                if e.get("columns"):
                    for c in e["columns"]:
                        lines.append(f"    {c}: {e['live'][c]} -> {e['shadow'][c]}")
    return lines


def cmd_cutover(settings: Settings, args: argparse.Namespace) -> int:
    job = Coordinator(settings).cutover(args.job_id)
    console.print(f"job {job['job_id']}: cut over (rollback: replay rollback {job['job_id']})")
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    job = Coordinator(settings).rollback(args.job_id)
    console.print(f"job {job['job_id']}: rolled back (the previous tables are live again)")
    return 0


def cmd_discard(settings: Settings, args: argparse.Namespace) -> int:
    job = Coordinator(settings).discard(args.job_id)
    console.print(f"job {job['job_id']}: discarded")
    return 0
