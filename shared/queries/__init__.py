"""Static SQL, kept as SQL: the ``.sql`` files beside this module, each a set of named queries.

A query starts at a line ``-- name: <query_name>`` and runs to the next such line; the comment
lines right after the name say what it does. A module loads its file once, at import::

    QUERIES = queries.load("jobs")
    conn.execute(QUERIES["insert_job"], params)

Values always travel as query parameters (``%(name)s``). A query whose identifiers vary (a
handler's table) holds ``{placeholders}`` that the caller fills with ``db.sql.Identifier``
through ``db.sql.SQL(QUERIES[...]).format(...)``; nothing is assembled from values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class Queries(Mapping[str, str]):
    """The named queries of one ``.sql`` file."""

    def __init__(self, file: str, queries: dict[str, str]) -> None:
        self.file = file
        self._queries = queries

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise KeyError(f"no query {name!r} in shared/queries/{self.file}.sql") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)


def parse(file: str, text: str) -> Queries:
    """The queries of ``text``; a file with a duplicate name or text before its first name is
    refused (a query that cannot be found by its name would be dead SQL)."""
    parts = _NAME.split(text)
    if parts[0].strip() and not all(
        line.startswith("--") or not line.strip() for line in parts[0].splitlines()
    ):
        raise ValueError(f"shared/queries/{file}.sql: SQL before the first '-- name:' line")
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"shared/queries/{file}.sql: two queries are named {name!r}")
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return Queries(file, queries)


@cache
def load(file: str) -> Queries:
    """The queries of ``shared/queries/<file>.sql``, read once per process."""
    text = resources.files(__package__).joinpath(f"{file}.sql").read_text(encoding="utf-8")
    return parse(file, text)
