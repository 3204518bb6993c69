"""The benchmarks' ``replay`` verbs: ``bench``, ``bench-live``, ``bench-aggregate``,
``bench-kafka``. An entry point of the group ``event_replay.commands`` (pyproject.toml) hands
``add_commands`` to ``scheduler.cli``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import (
    aggregate_load,
    archive_bench,
    diff_bench,
    kafka_bench,
    live_latency,
    replay_bench,
)
from examples.orders import seed
from scheduler.cli.commands import Subcommands, add, check_count, scratch_arguments
from scheduler.cli.display import console
from shared.errors import InvalidRequest
from shared.requests import parse_rate
from shared.settings import Settings

# Bounds of the benchmarks' arguments: beyond them a run would not end in a working day.
MAX_BENCH_RUNS = 100
MAX_AGGREGATE_BENCH_RUNS = 100_000
MAX_PROBE_SECONDS = 3600
#: the Kafka bench's topic lives in the broker's memory (tansu): a few GB at most
MAX_KAFKA_BENCH_EVENTS = 10_000_000


def add_commands(sub: Subcommands) -> None:
    s = add(sub, cmd_bench, "measure against the seed algorithm and the hardware",
            migrates=True)  # fmt: skip
    s.add_argument("--aggregates", type=int, default=10_000)
    s.add_argument("--events-per-aggregate", type=int, default=100)
    s.add_argument("--baseline-sample", type=int, default=20_000)
    s.add_argument("--runs", type=int, default=3, help="runs per measure (medians are quoted)")
    scratch_arguments(s, "bench")
    s.add_argument("--output", default="bench/results/latest.json")
    s.add_argument("--keep-data", action="store_true", help="reuse the bench database if seeded")
    s.add_argument(
        "--measures",
        default="rebuild1,rebuild2,rebuild2py,catchup,incremental",
        help="project runs (baseline and ceiling always run):"
        " rebuild1,rebuild2,rebuild2py,catchup,incremental",
    )

    s = add(sub, cmd_bench_live, "live latency: idle, during a replay, throttled",
            migrates=True)  # fmt: skip
    s.add_argument("--aggregates", type=int, default=10_000)
    s.add_argument("--events-per-aggregate", type=int, default=100)
    s.add_argument("--rate", type=float, default=20_000, help="the throttled replay's limit")
    s.add_argument("--seconds", type=float, default=10, help="probing time per phase")
    s.add_argument("--output", default="bench/results/live_latency.json")
    s.add_argument("--force", action="store_true", help="drop <db>_livebench whatever it is")

    s = add(sub, cmd_bench_aggregate,
            "aggregate load time: snapshots, and scheduler.load_aggregate per call",
            migrates=True)  # fmt: skip
    s.add_argument("--runs", type=int, default=50)
    s.add_argument("--output", default="bench/results/aggregate_load.json")
    s.add_argument("--force", action="store_true", help="drop <db>_aggbench whatever it is")

    s = add(sub, cmd_bench_diff, "replay diff on a read model of 1,000,000 rows", migrates=True)
    s.add_argument("--rows", type=int, default=1_000_000)
    s.add_argument("--runs", type=int, default=3, help="comparisons (the median is quoted)")
    s.add_argument("--output", default="bench/results/diff.json")
    s.add_argument("--force", action="store_true", help="drop <db>_diffbench whatever it is")

    s = add(sub, cmd_bench_archive,
            "the archive tier: bytes per event, and a full rebuild from it against the event"
            " table", migrates=True)  # fmt: skip
    s.add_argument("--aggregates", type=int, default=10_000)
    s.add_argument("--events-per-aggregate", type=int, default=100)
    s.add_argument("--runs", type=int, default=1, help="rebuilds of each kind (medians)")
    s.add_argument("--output", default="bench/results/archive.json")
    s.add_argument("--force", action="store_true", help="drop <db>_archbench whatever it is")

    s = add(sub, cmd_bench_kafka,
            "the design's Kafka loop (kafka-python, a commit per message) against a Kafka job",
            migrates=True)  # fmt: skip
    s.add_argument("--events", type=int, default=100_000, help="messages both sides replay")
    s.add_argument("--keys", type=int, default=1_000, help="orders (message keys)")
    s.add_argument("--baseline-sample", type=int, default=20_000,
                   help="messages the design's loop replays (a burst of their own)")  # fmt: skip
    s.add_argument("--runs", type=int, default=3, help="runs of the project's job (medians)")
    scratch_arguments(s, "kafkabench")
    s.add_argument("--output", default="bench/results/kafka.json")


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    seed.validate(args.aggregates, args.events_per_aggregate)
    check_count("--runs", args.runs, MAX_BENCH_RUNS)
    check_count("--baseline-sample", args.baseline_sample, seed.MAX_EVENTS)
    config = replay_bench.BenchConfig(
        aggregates=args.aggregates, events_per_aggregate=args.events_per_aggregate,
        baseline_sample=args.baseline_sample, runs=args.runs, database=args.database,
        output=Path(args.output), keep_data=args.keep_data,
        measures=tuple(m.strip() for m in args.measures.split(",") if m.strip()),
        force=args.force,
    )  # fmt: skip
    unknown = set(config.measures) - set(replay_bench.MEASURES)
    if unknown:
        raise InvalidRequest(f"unknown --measures {', '.join(sorted(unknown))}")
    replay_bench.run(settings, config, console)
    return 0


def cmd_bench_live(settings: Settings, args: argparse.Namespace) -> int:
    seed.validate(args.aggregates, args.events_per_aggregate)
    parse_rate(args.rate)
    if not 0 < args.seconds <= MAX_PROBE_SECONDS:  # False for NaN too
        raise InvalidRequest(
            f"--seconds must be above 0 and at most {MAX_PROBE_SECONDS}, got {args.seconds}"
        )
    live_latency.run(
        settings, args.aggregates, args.events_per_aggregate, args.rate, args.seconds,
        Path(args.output), console, force=args.force,
    )  # fmt: skip
    return 0


def cmd_bench_aggregate(settings: Settings, args: argparse.Namespace) -> int:
    check_count("--runs", args.runs, MAX_AGGREGATE_BENCH_RUNS)
    aggregate_load.run(settings, args.runs, Path(args.output), console, force=args.force)
    return 0


def cmd_bench_diff(settings: Settings, args: argparse.Namespace) -> int:
    check_count("--rows", args.rows, seed.MAX_EVENTS)
    check_count("--runs", args.runs, MAX_BENCH_RUNS)
    diff_bench.run(settings, args.rows, args.runs, Path(args.output), console, force=args.force)
    return 0


def cmd_bench_archive(settings: Settings, args: argparse.Namespace) -> int:
    seed.validate(args.aggregates, args.events_per_aggregate)
    check_count("--runs", args.runs, MAX_BENCH_RUNS)
    archive_bench.run(
        settings, args.aggregates, args.events_per_aggregate, args.runs, Path(args.output),
        console, force=args.force,
    )  # fmt: skip
    return 0


def cmd_bench_kafka(settings: Settings, args: argparse.Namespace) -> int:
    check_count("--events", args.events, MAX_KAFKA_BENCH_EVENTS)
    check_count("--keys", args.keys, args.events)
    check_count("--baseline-sample", args.baseline_sample, MAX_KAFKA_BENCH_EVENTS)
    check_count("--runs", args.runs, MAX_BENCH_RUNS)
    config = kafka_bench.KafkaBenchConfig(
        events=args.events, keys=args.keys, baseline_sample=args.baseline_sample, runs=args.runs,
        database=args.database, output=Path(args.output), force=args.force,
    )  # fmt: skip
    kafka_bench.run(settings, config, console)
    return 0
