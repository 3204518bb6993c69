"""Celery configuration shared by the worker (which runs tasks) and the scheduler (which sends
them by name). The scheduler never imports the worker package: it only knows these names."""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.settings import Settings

SLICE_TASK = "replay.slice"
FINALIZE_TASK = "replay.finalize"
LIVE_TASK = "replay.live"
LIVE_STEP_TASK = "replay.live_step"
SHADOW_TASK = "replay.shadow"

# A sender (the coordinator, `replay submit|resume`) gives up on a broker or result backend that
# does not answer within this many seconds: it then fails the job it planned (or refuses before
# planning), where Celery's own retries would hold the command ~20 s (issue 11).
SENDER_TIMEOUT_SECONDS = 3
# Celery's result backend retries a lost Redis 20 times a second apart (its ``retry_policy``):
# right for a worker storing a result across a Redis restart, not for a command a user waits on.
SENDER_BACKEND_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        # JSON only: a serializer that builds objects from a shared broker's bytes runs code.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Checked against the visibility timeout in Settings: see MIN_RESULT_EXPIRES_SECONDS.
        "result_expires": settings.result_expires_seconds,
        "result_extended": True,
        # A slice task is acknowledged only when it ends, and redelivered if its worker dies
        # (SIGKILL, OOM) mid-slice; it then resumes from its checkpoint.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per process: a slow slice does not hold others hostage.
        "worker_prefetch_multiplier": 1,
        # Unacknowledged messages come back after this; see DEFAULT_VISIBILITY_TIMEOUT_SECONDS.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds,
            # How often workers sweep for messages whose visibility timeout ran out (kombu's
            # default is about every 100 s): often enough for a short timeout to mean something.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_seconds // 4)),
            "unacked_restore_throttle": 1 if settings.visibility_timeout_seconds < 600 else 10,
            # A broker that vanishes without closing the connection must not hang a publish.
            "socket_timeout": 30,
            "socket_connect_timeout": 10,
        },
        "result_backend_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds
        },
        # Celery's default is none: a result backend that drops SYNs would hang a connect for
        # minutes. Same bound as the broker's socket_connect_timeout above.
        "redis_socket_connect_timeout": 10,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.queue,
        "task_routes": {
            SLICE_TASK: {"queue": settings.queue},
            FINALIZE_TASK: {"queue": settings.queue},
            SHADOW_TASK: {"queue": settings.queue},
            LIVE_TASK: {"queue": settings.live_queue},
            LIVE_STEP_TASK: {"queue": settings.live_queue},
        },
        # The scheduler process (celery -A worker worker --beat -Q control) runs the reconciler
        # in a thread (worker.steps), and beat only for the live consumer, if configured.
        "beat_schedule": _beat_schedule(settings),
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }


def sender_config(settings: Settings) -> dict[str, Any]:
    """``celery_config`` for a process that only sends tasks and waits on nothing: a broker or
    result backend that does not answer fails the send within seconds (SENDER_TIMEOUT_SECONDS)."""
    config = celery_config(settings)
    config["broker_transport_options"] = {
        **config["broker_transport_options"],
        "socket_connect_timeout": SENDER_TIMEOUT_SECONDS,
    }
    config["result_backend_transport_options"] = {
        **config["result_backend_transport_options"],
        "retry_policy": SENDER_BACKEND_RETRY_POLICY,
    }
    config["redis_socket_connect_timeout"] = SENDER_TIMEOUT_SECONDS
    return config


def _beat_schedule(settings: Settings) -> dict[str, Any]:
    schedule: dict[str, Any] = {}
    if settings.live_beat_seconds:
        # The Celery-driven live consumer: a step for every live handler on the live queue.
        schedule["live"] = {
            "task": LIVE_STEP_TASK,
            "schedule": settings.live_beat_seconds,
            "options": {"queue": settings.live_queue, "expires": settings.live_beat_seconds},
        }
    return schedule


def control_app(settings: Settings) -> Celery:
    app = Celery("event_replay_control", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def close_app(app: Celery) -> None:
    """Close a client-side Celery app's connections, including the result backend's Redis
    client and the pub/sub connection it opens to follow the results of what it sent
    (``app.close()`` leaves both open)."""
    backend = app.backend
    consumer = getattr(backend, "result_consumer", None)
    if consumer is not None:
        # Forget the subscriptions first: AsyncResults collected later unsubscribe in __del__,
        # which on a closed pub/sub would open a new connection, never to be closed.
        getattr(consumer, "subscribed_to", set()).clear()
        consumer.stop()
    client = getattr(backend, "client", None)
    if client is not None:
        client.connection_pool.disconnect()
    app.close()
