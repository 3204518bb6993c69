"""Handlers: the consumers a replay feeds, and the registry that finds them by name.

A handler is idempotent by construction of this project, not by its own effort: the replay loop
claims each event in ``processed_event`` in the same transaction as the handler's writes, and calls
the handler only with events it has just claimed. A handler therefore only has to:

* apply events to its own state through the connection it is given (the batch's transaction);
* leave external side effects (emails, payments, webhooks) alone when ``is_replay`` is true;
* say whether it needs the events of one aggregate in ``sequence_num`` order (the default);
* know how to ``reset`` its state for a rebuild.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypedDict
from uuid import UUID

from shared.db import Connection, first_line
from shared.errors import ConfigurationError, InvalidRequest
from shared.store import shorten


class Event(TypedDict):
    """An event as a handler receives it: the ``event`` table's columns by name."""

    event_id: UUID
    aggregate_id: str
    aggregate_type: str
    event_type: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    sequence_num: int
    occurred_at: datetime


class IdempotentEventHandler:
    """Base class of every handler. Subclass it, set ``name``, and override ``handle``
    (or ``handle_batch`` for speed) and ``reset``.

    ``name`` is the ``consumer`` of a replay job and the ``handler_name`` of its processed
    markers: renaming a handler makes every event look unprocessed to it.
    """

    name: ClassVar[str] = ""
    #: True (the default) when the events of one aggregate must arrive in sequence_num order;
    #: only handlers that declare False may be replayed in time slices.
    requires_order: ClassVar[bool] = True
    #: Whether the live consumer (``replay live``) hands new events to this handler.
    live: ClassVar[bool] = True
    #: Optional, for handlers whose state lives in the same PostgreSQL: one data-modifying
    #: statement that applies a whole batch, read from a relation named ``batch`` (the event
    #: columns, in slice order), exactly as ``handle_batch`` would. Full rebuilds use it, and no
    #: event travels to Python; if it fails on a batch, that batch goes through ``handle_batch``.
    #: No ``%`` in it (it is composed with the batch query's parameters).
    rebuild_sql: ClassVar[str | None] = None
    #: The tables this handler's state lives in (unqualified names, as its SQL writes them): what
    #: a shadow rebuild (``shared.shadow``) copies, compares and swaps. None declared: no shadow.
    tables: ClassVar[tuple[str, ...]] = ()

    def setup(self, conn: Connection) -> None:
        """Create this handler's tables if they are missing (run by ``replay migrate``)."""

    def handle(self, conn: Connection, event: Event, *, is_replay: bool) -> None:
        """Apply one event. Called only for events not processed before by this handler."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    def handle_batch(self, conn: Connection, events: Sequence[Event], *, is_replay: bool) -> None:
        """Apply several events, in order, in the caller's transaction.

        Events of one aggregate come in ``sequence_num`` order. Override for set-based writes;
        the default calls ``handle`` for each event.
        """
        for event in events:
            self.handle(conn, event, is_replay=is_replay)

    def reset(self, conn: Connection, aggregate_id: str | None) -> None:
        """Clear this handler's state before a rebuild: all of it (``aggregate_id`` None) or
        that of one aggregate. The replay clears the processed markers itself."""
        raise NotImplementedError(f"{type(self).__name__} does not support reset")


class Registry:
    """Handlers by name: the built-in ones plus those of ``REPLAY_HANDLER_MODULES``."""

    def __init__(self) -> None:
        self._handlers: dict[str, IdempotentEventHandler] = {}

    def register(self, handler: IdempotentEventHandler) -> None:
        if not handler.name:
            raise ConfigurationError(f"{type(handler).__name__} has no name")
        existing = self._handlers.get(handler.name)
        if existing is not None and type(existing) is not type(handler):
            raise ConfigurationError(
                f"two handlers are named {handler.name!r}: "
                f"{type(existing).__qualname__} and {type(handler).__qualname__}"
            )
        self._handlers[handler.name] = handler

    def get(self, name: str) -> IdempotentEventHandler:
        try:
            return self._handlers[name]
        except KeyError:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise InvalidRequest(
                f"unknown consumer {shorten(name)} (registered: {known})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __iter__(self) -> Iterator[IdempotentEventHandler]:
        return iter([self._handlers[n] for n in self.names()])


# Handlers declared with @handler in any imported module; a Registry copies them.
_DECLARED: list[type[IdempotentEventHandler]] = []


def handler(cls: type[IdempotentEventHandler]) -> type[IdempotentEventHandler]:
    """Class decorator: make a handler class known to every registry built after its import."""
    if cls not in _DECLARED:
        _DECLARED.append(cls)
    return cls


#: imported like a user's module (by name): the Order example's handlers and reducer
BUILTIN_MODULES = ("examples.orders",)


def load_registry(modules: Iterable[str] = ()) -> Registry:
    """Import the built-in handler modules and ``modules``, and register what they declare."""
    for module in (*BUILTIN_MODULES, *modules):
        try:
            importlib.import_module(module)
        except Exception as exc:
            # Not only ImportError: a module that raises anything on import (a SyntaxError, a
            # NameError, its own RuntimeError) is a configuration error too, on one line.
            reason = first_line(exc) if isinstance(exc, ImportError) else _describe(exc)
            raise ConfigurationError(
                f"cannot import handler module {shorten(module)} (REPLAY_HANDLER_MODULES): {reason}"
            ) from exc
    registry = Registry()
    for cls in _DECLARED:
        registry.register(cls())
    return registry


def _describe(exc: BaseException) -> str:
    """``SyntaxError: invalid syntax (mod.py, line 1)``: the type and the first line."""
    return f"{type(exc).__name__}: {first_line(exc)}"
