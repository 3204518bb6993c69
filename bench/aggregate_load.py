"""Load time of one aggregate with and without snapshots: ``replay bench-aggregate``."""

import sys

from scheduler.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-aggregate", *sys.argv[1:]]))
