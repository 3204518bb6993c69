"""``python -m tests.faults.archive_killer POINT URL BEFORE``: an archive run (the settings from
the environment) that SIGKILLs its own process at POINT of a segment's move:

* ``after-file``: the segment file is written (flushed), not yet read back;
* ``after-verify``: the file is read back and verified, the move's transaction not begun;
* ``in-commit``: inside the move's transaction, its events deleted and the segment listed, not
  committed.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from shared import db
from shared.archive import mover, segments
from shared.archive.stores import LocalStore
from shared.requests import parse_timestamp
from shared.settings import Settings


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(point: str, url: str, before: str) -> None:
    if point == "after-file":
        put = LocalStore.put

        def put_then_die(self: LocalStore, path: str, data: bytes) -> None:
            put(self, path, data)
            if path.endswith(".parquet"):
                die()

        LocalStore.put = put_then_die  # type: ignore[method-assign]
    elif point == "after-verify":
        verify = segments.verify

        def verify_then_die(*args: Any) -> None:
            verify(*args)
            die()

        segments.verify = verify_then_die  # type: ignore[assignment]
    elif point == "in-commit":
        insert = mover.QUERIES["bump_generation"]
        execute = db.TranslatingConnection.execute

        def execute_then_die(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            cur = execute(self, query, *args, **kwargs)
            if query == insert:
                die()
            return cur

        db.TranslatingConnection.execute = execute_then_die  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown point {point}")
    cutoff = parse_timestamp(before, "before")
    assert cutoff is not None
    with db.connect(Settings.from_env()) as conn:
        mover.archive(conn, url, cutoff, segment_events=5_000)


if __name__ == "__main__":
    main(*sys.argv[1:4])
