"""Live append-to-handled latency, idle / during a replay / during a throttled replay:
the same as ``replay bench-live`` (see scheduler/live_bench.py)."""

import sys

from scheduler.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-live", *sys.argv[1:]]))
