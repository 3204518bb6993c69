"""Event sources, and the registry that finds them by the name a job records.

The built-in sources are the PostgreSQL ``event`` table (``postgres``, the default of every job)
and a Kafka topic (``kafka``, imported the first time a job names it: its client is the optional
extra ``event-replay[kafka]``). More are found like handlers: a module listed in
``REPLAY_HANDLER_MODULES`` declares its source class with ``@source``, and every process that
loads its handler registry (the coordinator, each worker) knows it from then on.
"""

from __future__ import annotations

import importlib

from shared.errors import ConfigurationError, InvalidRequest
from shared.sources.interface import Batch, Checkpoint, Folded, SliceReader, Source
from shared.sources.postgres import PostgresSource
from shared.store import shorten

__all__ = [
    "DEFAULT",
    "Batch",
    "Checkpoint",
    "Folded",
    "SliceReader",
    "Source",
    "get",
    "names",
    "source",
]

DEFAULT = PostgresSource.name

_SOURCES: dict[str, Source] = {}
#: built-in sources that are imported when first named (their modules register them)
BUILT_IN = {"kafka": "shared.sources.kafka"}


def source(cls: type[Source]) -> type[Source]:
    """Class decorator: make a source known by its ``name`` to this process."""
    if not cls.name:
        raise ConfigurationError(f"source {cls.__qualname__} has no name")
    existing = _SOURCES.get(cls.name)
    if existing is not None and type(existing) is not cls:
        raise ConfigurationError(
            f"two sources are named {cls.name!r}: {type(existing).__qualname__} and"
            f" {cls.__qualname__}"
        )
    _SOURCES[cls.name] = cls()
    return cls


source(PostgresSource)


def get(name: str) -> Source:
    """The source registered as ``name``; ``InvalidRequest`` (one line) if there is none."""
    if not isinstance(name, str):
        found = None
    elif name not in _SOURCES and name in BUILT_IN:
        importlib.import_module(BUILT_IN[name])
        found = _SOURCES.get(name)
    else:
        found = _SOURCES.get(name)
    if found is None:
        raise InvalidRequest(
            f"unknown source {shorten(name)} (registered: {', '.join(names())}; more come from"
            " the modules of REPLAY_HANDLER_MODULES)"
        )
    return found


def names() -> list[str]:
    """The sources this process can find: the registered ones and the built-in ones."""
    return sorted({*_SOURCES, *BUILT_IN})
