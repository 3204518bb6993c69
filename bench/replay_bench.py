"""Benchmark: this project vs the seed design's algorithm vs the hardware, in one run.

    .venv/bin/python bench/replay_bench.py [--aggregates 10000 --events-per-aggregate 100]

is the same as ``replay bench``; see scheduler/bench.py for what is measured.
"""

import sys

from scheduler.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
