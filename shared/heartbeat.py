"""A running slice's pulse: ``slice_heartbeat.beat_at`` kept fresh from a background thread, so
that the reconciler can tell a slow batch from a dead worker (``replay_slice.heartbeat_at`` moves
with each batch; a slice's heartbeat is the later of the two, as ``get_job`` shows it)."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from uuid import UUID

from shared import db, queries

log = logging.getLogger(__name__)

# A row of its own (slice_heartbeat), not the slice's: see the query.
QUERIES = queries.load("heartbeat")


class Heartbeat:
    """Context manager: beats every ``interval`` seconds until exit."""

    def __init__(
        self,
        pool: db.Pool,
        job_id: UUID,
        slice_no: int,
        owner: UUID,
        interval: float,
    ) -> None:
        self._pool = pool
        self._params = {"job_id": job_id, "slice_no": slice_no, "owner": owner}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{job_id}-{slice_no}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(self._interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._beat()

    def _beat(self) -> None:
        try:
            with self._pool.connection(timeout=self._interval) as conn:
                conn.execute(QUERIES["beat"], self._params)
        except Exception as exc:  # an outage: the slice's own retry deals with it
            log.warning("heartbeat of slice %s/%s failed: %s", self._params["job_id"],
                        self._params["slice_no"], exc)  # fmt: skip
