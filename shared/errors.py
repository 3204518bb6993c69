"""The project's error tree: a handful of classes, each one something a caller catches.

Every error a user can cause or meet is a ``ReplayError``; the CLI prints its message on one line
and exits with code 2 (3 for ``JobTimeout``). The message says what was wrong and what to do; the
class says what a caller can do about it::

    ReplayError
    ├── InvalidRequest          a request or argument that cannot be carried out as given;
    │   └── NotFound            raised before anything is written / no such job or aggregate
    ├── ActiveJobExists         the consumer has a pending or running job already
    ├── InvalidJobState         the operation does not apply to the job in its state
    ├── ConcurrencyConflict     an append that does not match the aggregate's stream
    ├── MalformedEvent          an event a handler cannot apply (handed to on_error)
    ├── JobTimeout              wait_for_job gave up before the job ended
    ├── ReplayFailed            a slice or job ended failed (the Celery task's error: FAILURE
    │                           in Flower; the job is resumable from its checkpoints)
    ├── ConfigurationError      a setting or environment variable that cannot be used
    ├── SourceLost              a source's server no longer has what a job froze (the slice fails)
    └── ServiceUnavailable      a server does not answer
        ├── DatabaseUnavailable     PostgreSQL (workers retry their task on it)
        ├── SourceUnavailable       a source's own server, e.g. a Kafka broker (the same)
        ├── BrokerUnavailable       the broker: the job was planned, `replay resume` sends it
        └── EmbeddedServerError     the embedded PostgreSQL or Redis failed to start or stop
"""

from __future__ import annotations


class ReplayError(Exception):
    """Base of every error this project raises on purpose."""


class InvalidRequest(ReplayError):
    """A replay request or CLI argument that cannot be carried out as given (an unknown handler,
    replay type or event type, a bad time range, slice count or seed, a reset of a scope that
    cannot be separated out, a database that demo or bench may not drop...). Raised before
    anything is written."""


class NotFound(InvalidRequest):
    """No job has this id, or no event has this aggregate id (or the sequence number asked)."""


class ActiveJobExists(ReplayError):
    """The consumer already has a pending or running job (one active job per consumer)."""


class InvalidJobState(ReplayError):
    """The operation does not apply to the job in its state: resume a completed job, or start a
    job while the handler's latest full rebuild is unfinished (resume it first)."""


class ConcurrencyConflict(ReplayError):
    """An append whose expected version does not match the aggregate's stream, or a bulk load
    that would write sequence numbers or event ids that exist already."""


class MalformedEvent(ReplayError):
    """An event whose payload a handler or reducer cannot apply (a missing or non-numeric field,
    a NaN or infinite amount). During a replay it is handed to the job's on_error policy."""


class JobTimeout(ReplayError):
    """wait_for_job gave up before the job reached a final state."""


class ReplayFailed(ReplayError):
    """A slice (or the job's finalization) ended failed: raised by the Celery task, after the
    failure was recorded in PostgreSQL, so that Flower shows the task as FAILURE with this
    one-line message. The job keeps its semantics: failed, resumable from its checkpoints."""


class ConfigurationError(ReplayError):
    """An environment variable or setting that cannot be used."""


class ServiceUnavailable(ReplayError):
    """A server this project needs does not answer (or none answers where one was looked for)."""


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL does not answer (or dropped the connection)."""


class SourceUnavailable(ServiceUnavailable):
    """The server of a source other than the event table (a Kafka broker) does not answer:
    refused at planning; while a slice reads, its task retries like on a PostgreSQL outage."""


class SourceLost(ReplayError):
    """A source's server no longer holds what a job froze (a Kafka topic deleted or recreated,
    offsets deleted by retention, a worker that reaches another broker): the slice fails, in
    one line, instead of retrying for ever."""


class BrokerUnavailable(ServiceUnavailable):
    """The Celery broker does not answer; the job was planned but could not be dispatched."""


class EmbeddedServerError(ServiceUnavailable):
    """An embedded PostgreSQL or Redis (``event-replay[embedded]``) failed to start or stop."""
