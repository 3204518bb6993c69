"""Validation of replay requests: every argument checked before anything is written."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared import errors, sources, store
from shared.jobs import OnError, ReplayType
from shared.scope import Scope
from shared.slicing import MAX_SLICES, SliceBy
from shared.store import shorten
from shared.throttle import MIN_EVENTS_PER_SECOND

REPLAY_TYPES = tuple(ReplayType)
SLICE_BY = tuple(SliceBy)
ON_ERROR = tuple(OnError)
MAX_AGGREGATE_ID_LENGTH = store.MAX_AGGREGATE_ID
# A handler name is a Python string of our choosing; nothing longer can be registered in practice,
# and the bound keeps a hostile name out of the database and out of messages.
MAX_CONSUMER_LENGTH = 200
# `replay jobs --limit`: a screenful is 20; more than this is a query, not a listing.
MAX_LIST_LIMIT = 10_000
# Kafka's rule for topic names: ASCII letters, digits, '.', '_' and '-', at most 249 of them.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# The same for a consumer group or a decoder named by a job: Kafka allows more in a group id,
# but a name that needs quoting in a shell or a message is no help to anyone.
OPTION_NAME = TOPIC_NAME


@dataclass(frozen=True)
class ReplayRequest:
    consumer: str
    replay_type: ReplayType
    scope: Scope
    slices: int | None
    slice_by: SliceBy
    reset: bool
    on_error: OnError = OnError.FAIL
    max_events_per_second: float | None = None
    #: the registered name of the source the job reads (``shared.sources``)
    source: str = sources.DEFAULT
    #: a rebuild into shadow copies of the handler's tables, beside the live ones (shared.shadow)
    shadow: bool = False


def parse_timestamp(value: Any, name: str) -> datetime | None:
    """An aware datetime from a datetime or an ISO-8601 string; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise errors.InvalidRequest(
                f"{name} {shorten(value)} is not an ISO-8601 timestamp (e.g. 2026-03-01T00:00:00Z)"
            ) from None
    if not isinstance(value, datetime):
        raise errors.InvalidRequest(
            f"{name} must be a datetime or an ISO-8601 string, got {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise errors.InvalidRequest(
            f"{name} {value.isoformat()} has no time zone; give one (e.g. +00:00 or Z)"
        )
    return value


def _event_types(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise errors.InvalidRequest("event_types must be a list of event type names")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise errors.InvalidRequest(
                f"event type names must be non-empty strings, got {shorten(item)}"
            )
        # Text the event table could not hold is refused here, not by the driver (issue 11).
        name = store.check_text(item.strip(), "an event type", store.MAX_EVENT_TYPE)
        if name not in names:
            names.append(name)
    return tuple(names)


def _consumer(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise errors.InvalidRequest(f"consumer must be a handler name, got {shorten(value)}")
    try:
        return store.check_text(value, "the consumer", MAX_CONSUMER_LENGTH)
    except errors.InvalidRequest as exc:
        raise errors.InvalidRequest(str(exc)) from None


def _scope(
    replay_type: str, aggregate_id: Any, from_time: Any, to_time: Any, event_types: Any
) -> Scope:
    """The filters of a request, each checked, and as its replay type requires."""
    if replay_type == ReplayType.AGGREGATE:
        if not isinstance(aggregate_id, str) or not aggregate_id.strip():
            raise errors.InvalidRequest("replay type 'aggregate' needs an aggregate_id")
        store.check_text(aggregate_id.strip(), "aggregate_id", MAX_AGGREGATE_ID_LENGTH)
    elif aggregate_id is not None:
        raise errors.InvalidRequest(
            f"aggregate_id is only used with replay type 'aggregate', not {shorten(replay_type)}"
        )
    start = parse_timestamp(from_time, "from_time")
    end = parse_timestamp(to_time, "to_time")
    if start is not None and end is not None and start >= end:
        raise errors.InvalidRequest(
            f"from_time {start.isoformat()} must be before to_time {end.isoformat()}"
        )
    if replay_type == ReplayType.TIME_RANGE and start is None and end is None:
        raise errors.InvalidRequest("replay type 'time_range' needs from_time and/or to_time")
    types = _event_types(event_types)
    if replay_type == ReplayType.EVENT_TYPE and not types:
        raise errors.InvalidRequest("replay type 'event_type' needs at least one event type")
    return Scope(
        aggregate_id=aggregate_id.strip() if replay_type == ReplayType.AGGREGATE else None,
        from_time=start,
        to_time=end,
        event_types=types,
    )


def _topic(value: Any, source: sources.Source) -> str | None:
    """``topic``: required by a source that reads topics (Kafka), refused by the others."""
    if not source.reads_topics:
        if value is not None:
            raise errors.InvalidRequest(
                f"a topic is only for a source that reads topics, not {source.name!r}"
            )
        return None
    if not isinstance(value, str) or not TOPIC_NAME.fullmatch(value) or value in (".", ".."):
        raise errors.InvalidRequest(
            f"source {source.name!r} needs a topic: a name of 1 to 249 ASCII letters, digits,"
            f" '.', '_' or '-', got {shorten(value)}"
        )
    return value


def _topic_option(name: str, value: Any, source: sources.Source) -> str | None:
    """``group`` or ``decoder``: a name, only for a source that reads topics."""
    if value is None:
        return None
    if not source.reads_topics:
        raise errors.InvalidRequest(
            f"a {name} is only for a source that reads topics, not {source.name!r}"
        )
    if not isinstance(value, str) or not OPTION_NAME.fullmatch(value):
        raise errors.InvalidRequest(
            f"{name} must be a name of 1 to 249 ASCII letters, digits, '.', '_' or '-', got"
            f" {shorten(value)}"
        )
    return value


def _check_slices(slices: Any) -> None:
    if slices is not None and (
        isinstance(slices, bool) or not isinstance(slices, int) or not 1 <= slices <= MAX_SLICES
    ):
        raise errors.InvalidRequest(
            f"slices must be an integer from 1 to {MAX_SLICES}, got {shorten(slices)}"
        )


def _reading(scope: Scope, source: sources.Source, topic: Any, group: Any, decoder: Any) -> Scope:
    """``scope`` with what a source that reads topics reads: the topic, and optionally the
    consumer group and the decoder."""
    return dataclasses.replace(
        scope, topic=_topic(topic, source), group=_topic_option("group", group, source),
        decoder=_topic_option("decoder", decoder, source),
    )  # fmt: skip


def build_request(
    consumer: Any,
    *,
    replay_type: Any = ReplayType.FULL,
    aggregate_id: Any = None,
    from_time: Any = None,
    to_time: Any = None,
    event_types: Any = None,
    slices: Any = None,
    slice_by: Any = SliceBy.AGGREGATE,
    reset: Any = False,
    on_error: Any = OnError.FAIL,
    max_events_per_second: Any = None,
    source: Any = sources.DEFAULT,
    topic: Any = None,
    group: Any = None,
    decoder: Any = None,
    shadow: Any = False,
) -> ReplayRequest:
    """Check every argument that can be checked without the database or the registry.

    Raises an ``InvalidRequest`` subclass, on one line whatever the input: text PostgreSQL
    cannot hold (NUL, a lone surrogate, too long) is refused here, before anything is written,
    and a value quoted in a message is shortened. ``source`` must be registered in this process
    (sources of ``REPLAY_HANDLER_MODULES`` are once the handler registry was loaded)."""
    consumer = _consumer(consumer)
    found = sources.get(source)
    if replay_type not in REPLAY_TYPES:
        raise errors.InvalidRequest(
            f"unknown replay type {shorten(replay_type)} (choose from {', '.join(REPLAY_TYPES)})"
        )
    if slice_by not in SLICE_BY:
        raise errors.InvalidRequest(
            f"unknown slice_by {shorten(slice_by)} (choose from {', '.join(SLICE_BY)})"
        )
    scope = _scope(replay_type, aggregate_id, from_time, to_time, event_types)
    scope = _reading(scope, found, topic, group, decoder)
    _check_slices(slices)
    if on_error not in ON_ERROR:
        raise errors.InvalidRequest(
            f"unknown on_error policy {shorten(on_error)} (choose from {', '.join(ON_ERROR)})"
        )
    if not isinstance(reset, bool):
        raise errors.InvalidRequest(f"reset must be true or false, got {shorten(reset)}")
    _check_shadow(shadow, reset, scope, found.name)
    if reset and (
        replay_type not in (ReplayType.FULL, ReplayType.AGGREGATE)
        or scope.from_time or scope.to_time or scope.event_types
    ):  # fmt: skip
        raise errors.InvalidRequest(
            "reset (rebuild) is only defined for a full or one-aggregate replay without time or"
            " event-type filters: a handler's state for part of the events cannot be separated out"
        )
    rate = parse_rate(max_events_per_second)
    return ReplayRequest(
        consumer, ReplayType(replay_type), scope, slices, SliceBy(slice_by), reset,
        OnError(on_error), rate,
        found.name, shadow,
    )  # fmt: skip


def _check_shadow(shadow: Any, reset: bool, scope: Scope, source: str) -> None:
    if not isinstance(shadow, bool):
        raise errors.InvalidRequest(f"shadow must be true or false, got {shorten(shadow)}")
    if shadow and (not reset or scope != Scope() or source != sources.DEFAULT):
        raise errors.InvalidRequest(
            "a shadow rebuild is a full rebuild of the event table (reset, no aggregate, time or"
            " event-type filter, no other source): the shadow must hold the whole state to be"
            " swapped in"
        )


MAX_RATE = 100_000_000


def parse_rate(value: Any) -> float | None:
    """A speed limit in events per second: None, 0 or 0.0 (no limit), or a number from
    ``MIN_EVENTS_PER_SECOND`` (1: less would keep a worker waiting between single events) to
    ``MAX_RATE``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise errors.InvalidRequest(f"max_events_per_second must be a number, got {shorten(value)}")
    if value == 0:  # 0, 0.0 and -0.0: no limit
        return None
    if not MIN_EVENTS_PER_SECOND <= value <= MAX_RATE:  # NaN fails this too
        raise errors.InvalidRequest(
            f"max_events_per_second must be 0 (no limit) or from {MIN_EVENTS_PER_SECOND:g}"
            f" to {MAX_RATE:,} events/s, got {shorten(value)}"
        )
    return float(value)


def parse_job_id(value: Any) -> UUID:
    """A job id: a UUID, or its text (the form the API returns and the CLI takes). Anything
    else is ``NotFound``: no job can have that id."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise errors.NotFound(f"{shorten(value)} is not a job id (a UUID)") from None


def parse_limit(value: Any) -> int:
    """How many jobs a listing shows: an integer from 1 to ``MAX_LIST_LIMIT`` (PostgreSQL's
    LIMIT refuses a negative count, and a bigint overflows: issue 11)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIST_LIMIT:
        raise errors.InvalidRequest(
            f"limit must be an integer from 1 to {MAX_LIST_LIMIT:,}, got {shorten(value)}"
        )
    return value


def parse_timeout(value: Any, name: str = "timeout") -> float | None:
    """Seconds to wait: None (for ever) or a finite number >= 0. A negative or NaN timeout is a
    usage error, not a wait that expires at once (or never)."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
    ):
        raise errors.InvalidRequest(
            f"{name} must be a number of seconds, 0 or more, got {shorten(value)}"
        )
    return float(value)
