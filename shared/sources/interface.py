"""What a replay needs of the place its events come from: the ``Source`` interface.

A source plans a job's scope, frozen when the job is planned, into slices with exact counts
(``freeze``, ``count``, ``plan``), and reads one slice in batches after a checkpoint
(``reader``), in per-aggregate order where the handler requires it. Nothing here knows a table,
a topic or a file: the runner and the coordinator drive every source through these methods only,
and handlers receive the same ``Event`` mapping from all of them. See README, "Writing a source".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from uuid import UUID

from shared.db import Connection, sql
from shared.handlers import Event
from shared.scope import Scope, SliceBounds
from shared.slicing import PlannedSlice, SliceBy

Checkpoint = dict[str, Any]


@dataclass
class Batch:
    """One batch of a slice, in the slice's order."""

    events: list[Event]
    #: events of ``events`` that the handler's last completed full rebuild applied already (only a
    #: source with ``coverage`` fills it)
    covered: set[UUID] = field(default_factory=set)
    #: events of ``events`` the source could not decode (a poison message), each with the error:
    #: it goes to the job's ``on_error`` policy as if the handler had failed on it, and the
    #: handler never sees it
    poison: dict[UUID, Exception] = field(default_factory=dict)


@dataclass(frozen=True)
class Folded:
    """What a set-based fold of one batch did: how many events, and the last one's position."""

    count: int
    last: Mapping[str, Any]


@dataclass
class SliceReader:
    """Reads one slice of a job, batch by batch, each strictly after the checkpoint it is given.

    ``read`` runs inside the batch's transaction on the connection it is given, so that the
    handler's writes and the new checkpoint commit with it. Reading the same checkpoint twice
    returns the same batch (the scope is frozen): that is what makes a crash re-read at most one
    batch and a retry apply nothing twice. ``Source.reader`` builds one from the slice's
    description below (a subclass adds fields of its own with defaults).
    """

    scope: Scope
    bounds: SliceBounds
    #: what ``Source.freeze`` returned when the job was planned
    frozen: str
    batch_size: int
    #: only for a source with ``coverage``: the frozen scope of the handler's last completed
    #: full rebuild (its events are flagged in ``Batch.covered``)
    covered: str | None = None

    #: whether ``fold`` exists: a handler's ``rebuild_sql`` run over the batch where it lies
    can_fold: ClassVar[bool] = False

    def open(self, conn: Connection) -> None:
        """Before an attempt's first batch, outside any transaction: get ready to read (the
        event table stages the archived events of the slice). By default nothing."""

    def close(self, conn: Connection) -> None:
        """After an attempt's last batch, whatever its outcome: release what ``open`` took."""

    def stale(self, conn: Connection) -> bool:
        """After a batch failed as a transient error: whether what ``open`` got ready is out of
        date (the event table's archive moved since): the slice then closes and opens the
        reader again and goes on, instead of its task being retried. By default False."""
        return False

    def read(self, conn: Connection, checkpoint: Checkpoint | None, limit: int) -> Batch:
        """The next ``limit`` events after ``checkpoint`` (the slice's start if None); an empty
        batch when the slice is done."""
        raise NotImplementedError

    def checkpoint_after(self, event: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint (JSON-able) that resumes right after ``event`` of this slice."""
        raise NotImplementedError

    def query(
        self, checkpoint: Checkpoint | None, limit: int | None = None
    ) -> tuple[sql.Composable, dict[str, Any]]:
        """Optional (``can_fold``): the next batch after ``checkpoint`` as one SELECT and its
        parameters, for set-based work in the database (with a ``_covered`` column when
        ``covered`` is set)."""
        raise NotImplementedError(f"{type(self).__name__} has no batch SELECT")

    def committed(self, job_id: UUID, checkpoint: Checkpoint) -> None:
        """After a batch's transaction committed ``checkpoint`` (the truth, in PostgreSQL): a
        source may tell its own system, best effort (a Kafka source commits the offset to the
        job's consumer group, for Kafka's tools). Must not raise; nothing depends on it."""

    def fold(
        self, conn: Connection, checkpoint: Checkpoint | None, fold_sql: str, limit: int
    ) -> Folded | None:
        """Optional (``can_fold``): apply ``fold_sql`` to the next batch in one statement;
        None when the slice is done."""
        raise NotImplementedError(f"{type(self).__name__} cannot fold batches in SQL")


class Source:
    """A place events are replayed from. Subclass it, set ``name``, and register the class with
    ``shared.sources.source``; a job names its source and every worker finds it by that name.

    What a source must guarantee:

    * a frozen scope: what ``freeze`` returns pins the events of the job; nothing appended later
      is counted or read;
    * exact counts: the events ``plan`` counts for a slice are exactly those its reader returns;
    * checkpoints only forward: a batch starts strictly after its checkpoint, in a fixed order;
    * per-aggregate order in slices by aggregate: every aggregate lies wholly in one slice and
      its events come in ``sequence_num`` order;
    * ``event_id`` is a UUID, unique in the source (it keys the processed markers).
    """

    name: ClassVar[str] = ""
    #: how this source can cut a scope (``SliceBy``); a request for another is refused
    slice_by: ClassVar[tuple[SliceBy, ...]] = (SliceBy.AGGREGATE,)
    #: True when the frozen scope of a full rebuild can stand for the events it applied: the
    #: rebuild writes no per-event markers, later catch-ups and live processing take its events
    #: as processed, and a reset of one aggregate can find that aggregate's markers. Only the
    #: source whose events live processing and the marker housekeeping see can say so.
    coverage: ClassVar[bool] = False
    #: True when an event's ``aggregate_id`` and ``sequence_num`` are the event table's: what a
    #: handler processed is then kept per aggregate (a watermark, ``idempotency``), not per
    #: event. Only the event table itself can say so.
    progress: ClassVar[bool] = False
    #: True when a job of this source names a topic (``Scope.topic``): required then, and
    #: refused for the other sources
    reads_topics: ClassVar[bool] = False
    #: what reads one slice: ``reader`` builds one from the slice's description
    reader_class: ClassVar[type[SliceReader]] = SliceReader

    def freeze(self, conn: Connection) -> str:
        """Pin the events that exist now, as text stored on the job. Called first in the
        planning transaction (REPEATABLE READ, on the jobs' database)."""
        raise NotImplementedError

    def prepare(self, conn: Connection, scope: Scope, frozen: str) -> str:
        """In the planning transaction, right after ``freeze``: get what planning ``scope``
        needs (the event table stages the archived events of the scope, so that they are
        counted with its own) and return the frozen scope, which may now say so. By default
        ``frozen`` as it is."""
        return frozen

    def missing_event_types(self, conn: Connection, event_types: tuple[str, ...]) -> list[str]:
        """The given event types that no event of the source has."""
        raise NotImplementedError

    def known_event_types(self, conn: Connection, limit: int = 30) -> list[str]:
        """Some event types the source has, for an error message."""
        raise NotImplementedError

    def narrow(
        self,
        conn: Connection,
        scope: Scope,
        frozen: str,
        slice_by: SliceBy,
        handler_name: str,
        job_id: UUID,
    ) -> str:
        """For a catch-up (a job without reset), in the planning transaction right after
        ``freeze``: the frozen scope narrowed to what ``handler_name`` has not processed, which
        ``count``, ``plan`` and the readers then cover (the event table's skips what the
        handler's watermarks say; see 0011_catch_up_starts). By default the scope as frozen:
        the claim in each batch skips what was processed."""
        return frozen

    def count(self, conn: Connection, scope: Scope, frozen: str) -> int:
        """The number of events in ``scope`` as frozen."""
        raise NotImplementedError

    def plan(
        self, conn: Connection, scope: Scope, frozen: str, slice_by: SliceBy, slices: int
    ) -> list[PlannedSlice]:
        """Cut ``scope`` as frozen into about ``slices`` slices of about equal, exact counts
        (empty slices left out; none for an empty scope)."""
        raise NotImplementedError

    def reader(
        self,
        scope: Scope,
        bounds: SliceBounds,
        frozen: str,
        batch_size: int,
        covered: str | None = None,
    ) -> SliceReader:
        """The reader of one slice: a ``reader_class`` of these arguments (the ``SliceReader``
        fields). Override it only for a reader that needs more than the slice's description."""
        return self.reader_class(scope, bounds, frozen, batch_size, covered)

    def events(self, conn: Connection, event_ids: Sequence[UUID | str]) -> list[Event]:
        """The events of ``event_ids`` that the source has, in per-aggregate order (retrying
        parked events; live processing reads the event table's this way)."""
        raise NotImplementedError

    def reread(
        self, conn: Connection, scope: Scope, parked: Sequence[Mapping[str, Any]]
    ) -> list[Event]:
        """The parked events ``parked`` (rows of ``slices.parked_events``: ``event_id`` and what
        was kept of the event, its ``metadata`` included) read again, for ``retry-parked``. By
        default by id (``events``); a source without an event table finds them by their
        metadata. An event that cannot be decoded again raises ``MalformedEvent``."""
        return self.events(conn, [p["event_id"] for p in parked])

    def describe_parked(self, parked: Mapping[str, Any]) -> str:
        """Where a parked event lies, in a few words, for ``replay parked`` ('' if its id is
        enough)."""
        return ""

    def describe_bounds(self, bounds: SliceBounds) -> str:
        """A slice's bounds in a few words, for its label in Flower."""
        return bounds.describe()

    def describe_checkpoint(self, checkpoint: Checkpoint | None) -> str:
        """A checkpoint in a few words, for ``replay status``."""
        if checkpoint is None:
            return "start"
        return ", ".join(f"{k} {v}" for k, v in checkpoint.items())
