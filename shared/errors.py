"""The project's error tree.

Every error a user can cause or meet is a ``ReplayError``; the CLI prints its message on one line
and exits with code 2. ``InvalidRequest`` and its subclasses are raised before anything is written.
"""

from __future__ import annotations


class ReplayError(Exception):
    """Base of every error this project raises on purpose."""


# --- bad requests: raised by validation, before any row is written -------------------------------
class InvalidRequest(ReplayError):
    """A replay request (or CLI argument) that cannot be carried out as given."""


class UnknownHandler(InvalidRequest):
    """The consumer named is not a registered handler."""


class UnknownReplayType(InvalidRequest):
    """replay_type is not one of full, aggregate, time_range, event_type."""


class UnknownSliceBy(InvalidRequest):
    """slice_by is not one of aggregate, time."""


class MissingAggregateId(InvalidRequest):
    """An aggregate replay without an aggregate_id."""


class InvalidTimestamp(InvalidRequest):
    """A timestamp that is malformed or has no time zone."""


class InvalidTimeRange(InvalidRequest):
    """from_time is not before to_time, or a time_range replay has no bounds."""


class InvalidSliceCount(InvalidRequest):
    """slices is below 1 or above the supported maximum."""


class UnknownEventType(InvalidRequest):
    """An event type that no event in the store has (most likely a typo)."""


class MissingEventTypes(InvalidRequest):
    """An event_type replay without any event types."""


class OrderingRequired(InvalidRequest):
    """Time slicing was asked for a handler that needs per-aggregate order."""


class ResetNotSupported(InvalidRequest):
    """reset=True for a scope whose state cannot be separated out (time range, event types)."""


class UnknownErrorPolicy(InvalidRequest):
    """on_error is not one of fail, skip, park."""


class InvalidSeed(InvalidRequest):
    """Arguments of the synthetic data generator that make no sense."""


class UnsafeDatabase(InvalidRequest):
    """A command would drop a database it did not create (demo, bench: name it *_demo / *_bench,
    or pass --force)."""


# --- the event store ------------------------------------------------------------------------------
class ConcurrencyConflict(ReplayError):
    """An append whose expected version does not match the aggregate's stream."""


class DuplicateAggregates(ConcurrencyConflict):
    """A bulk load that would write sequence numbers that already exist."""


# --- events -------------------------------------------------------------------------------------
class MalformedEvent(ReplayError):
    """An event whose payload a handler or reducer cannot apply (a missing or non-numeric field,
    a NaN or infinite amount). During a replay it is handed to the job's on_error policy."""


# --- aggregates -----------------------------------------------------------------------------------
class AggregateNotFound(ReplayError):
    """No event has this aggregate id (or not the sequence number asked for)."""


class UnknownAggregateType(ReplayError):
    """No reducer is registered for the aggregate's type."""


class AggregateGap(ReplayError):
    """The aggregate's sequence numbers are not contiguous."""


# --- jobs -----------------------------------------------------------------------------------------
class JobNotFound(ReplayError):
    """No replay_job row has this id."""


class ActiveJobExists(ReplayError):
    """The consumer already has a pending or running job (one active job per consumer)."""


class InvalidJobState(ReplayError):
    """The operation does not apply to the job in its state (e.g. resume a completed job)."""


class RebuildUnfinished(InvalidJobState):
    """The handler's latest full rebuild did not complete: its events are neither processed nor
    free to be claimed by another job until it is resumed (or a new rebuild replaces it)."""


class JobTimeout(ReplayError):
    """wait_for_job gave up before the job reached a final state."""


class DemoVerificationFailed(ReplayError):
    """The demo's read model differs from the independent fold of the events."""


# --- infrastructure -------------------------------------------------------------------------------
class ServiceUnavailable(ReplayError):
    """A server this project needs does not answer."""


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL does not answer (or dropped the connection)."""


class BrokerUnavailable(ServiceUnavailable):
    """The Celery broker does not answer; the job was planned but could not be dispatched."""


class NoServers(ServiceUnavailable):
    """No server answers where one was looked for, and the embedded ones are not installed."""


class EmbeddedServerError(ServiceUnavailable):
    """An embedded PostgreSQL or Redis (``event-replay[embedded]``) failed to start or stop."""


class ConfigurationError(ReplayError):
    """An environment variable or setting that cannot be used."""
