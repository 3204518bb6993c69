"""``replay diff``: a shadow's tables against the live ones, table by table, on each table's
primary key (issue 16). Set-based, in the database: one full join per table counts the rows only
in live, only in the shadow, and changed (and, per column, how many rows differ there), and three
small queries fetch a few examples of each. Nothing is read into Python but the counts and the
examples, so it stays fast and flat in memory on a million-row read model.

Before a cutover the shadow (caught up first with what was committed since its last catch-up) is
compared with live; after a cutover, live (the rebuilt tables) with the previous tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from shared import queries
from shared.db import Connection, sql
from shared.errors import InvalidJobState, InvalidRequest, NotFound
from shared.handlers import Registry
from shared.shadow import Phase, Shadow, catch_up

QUERIES = queries.load("shadow")
EXAMPLES = 5


def diff(conn: Connection, registry: Registry, job_id: UUID) -> dict[str, Any]:
    """The difference between a shadow and live: ``{"job_id", "phase", "compared", "tables":
    [{"table", "key", "live_rows", "shadow_rows", "only_live", "only_shadow", "changed",
    "changed_columns": {column: rows}, "examples": {kind: [...]}}]}``."""
    row = conn.execute(QUERIES["shadow"], {"job_id": job_id}).fetchone()
    if row is None:
        raise NotFound(f"job {job_id} is not a shadow rebuild (replay submit --reset --shadow)")
    found = Shadow.of(row)
    if found.phase in (Phase.READY, Phase.ROLLED_BACK):
        catch_up(conn, registry.get(found.consumer), found)
        other, compared = found.shadow_schema, "live vs shadow"
    elif found.phase is Phase.CUT_OVER:
        other, compared = found.old_schema, "live (rebuilt) vs previous"
    else:
        raise InvalidJobState(
            f"cannot diff job {job_id}: its shadow is {found.phase.value.replace('_', ' ')}"
            " (it must be ready, cut over or rolled back)"
        )
    tables = [compare_table(conn, found.live_schema, other, t) for t in found.tables]
    return {
        "job_id": str(job_id), "phase": found.phase.value, "compared": compared,
        "tables": tables,
    }  # fmt: skip


def compare_table(conn: Connection, live: str, other: str, table: str) -> dict[str, Any]:
    """One table of ``diff``: ``live``.``table`` against ``other``.``table``."""
    names = {"schema": live, "table": table}
    key = [r["name"] for r in conn.execute(QUERIES["primary_key"], names)]
    if not key:
        raise InvalidRequest(f"table {live}.{table} has no primary key: rows cannot be matched")
    columns = [r for r in conn.execute(QUERIES["columns"], names) if r["name"] not in key]
    values = [r["name"] for r in columns]
    as_text = frozenset(r["name"] for r in columns if not r["comparable"])
    join = _Join(sql.Identifier(live, table), sql.Identifier(other, table), key, values, as_text)
    totals = _counts(conn, join)
    changed_columns = {c: totals[f"col_{i}"] for i, c in enumerate(values) if totals[f"col_{i}"]}
    return {
        "table": table, "key": key,
        "live_rows": totals["live_rows"], "shadow_rows": totals["shadow_rows"],
        "only_live": totals["only_live"], "only_shadow": totals["only_shadow"],
        "changed": totals["changed"], "changed_columns": changed_columns,
        "examples": _examples(conn, join, totals),
    }  # fmt: skip


@dataclass(frozen=True)
class _Join:
    """A live table (l) fully joined to its counterpart (s) on the primary key."""

    left: sql.Identifier
    right: sql.Identifier
    key: list[str]
    values: list[str]
    #: the columns compared as text (their type has no equality: json, xml, point, …)
    as_text: frozenset[str] = frozenset()

    @property
    def first(self) -> sql.Identifier:
        return sql.Identifier(self.key[0])

    def source(self) -> sql.Composable:
        on = sql.SQL(" AND ").join(
            sql.SQL("l.{c} = s.{c}").format(c=sql.Identifier(c)) for c in self.key
        )
        return sql.SQL("{l} l FULL JOIN {r} s ON {on}").format(l=self.left, r=self.right, on=on)

    def both(self) -> sql.Composable:
        return sql.SQL("l.{k} IS NOT NULL AND s.{k} IS NOT NULL").format(k=self.first)

    def kinds(self) -> dict[str, sql.Composable]:
        """What makes a row of the join only live, only in the other table, or changed."""
        return {
            "only_live": sql.SQL("s.{k} IS NULL").format(k=self.first),
            "only_shadow": sql.SQL("l.{k} IS NULL").format(k=self.first),
            "changed": self.changed(),
        }

    def changed(self) -> sql.Composable:
        differs = sql.SQL(" OR ").join(self.differs(c) for c in self.values)
        return sql.SQL("{both} AND ({differs})").format(
            both=self.both(), differs=differs if self.values else sql.SQL("false")
        )

    def differs(self, column: str) -> sql.Composable:
        c = sql.Identifier(column)
        if column in self.as_text:
            return sql.SQL("l.{c}::text IS DISTINCT FROM s.{c}::text").format(c=c)
        return sql.SQL("l.{c} IS DISTINCT FROM s.{c}").format(c=c)


def _counts(conn: Connection, join: _Join) -> Any:
    k, both = join.first, join.both()
    counts = [
        sql.SQL("count(l.{k}) AS live_rows, count(s.{k}) AS shadow_rows").format(k=k),
        sql.SQL("count(*) FILTER (WHERE s.{k} IS NULL) AS only_live").format(k=k),
        sql.SQL("count(*) FILTER (WHERE l.{k} IS NULL) AS only_shadow").format(k=k),
        sql.SQL("count(*) FILTER (WHERE {c}) AS changed").format(c=join.changed()),
    ]
    # a few keys of each kind, gathered in the same pass: the examples are then fetched by key
    key_of = sql.SQL("coalesce(l.{k}, s.{k})").format(k=k)
    for kind, cond in join.kinds().items():
        counts.append(
            sql.SQL("(array_agg({key} ORDER BY {key}) FILTER (WHERE {c}))[1:{n}] AS {a}").format(
                key=key_of, c=cond, n=sql.Literal(EXAMPLES), a=sql.Identifier(f"{kind}_keys")
            )
        )
    for i, column in enumerate(join.values):
        counts.append(
            sql.SQL("count(*) FILTER (WHERE {both} AND {differs}) AS {a}").format(
                both=both, differs=join.differs(column), a=sql.Identifier(f"col_{i}")
            )
        )
    query = sql.SQL("SELECT {counts} FROM {source}").format(
        counts=sql.SQL(", ").join(counts), source=join.source()
    )
    totals = conn.execute(query).fetchone()
    assert totals is not None
    return totals


def _examples(conn: Connection, join: _Join, totals: Any) -> dict[str, list[dict[str, Any]]]:
    """The rows of the keys that ``_counts`` gathered, by an index lookup each."""
    order = sql.SQL(", ").join(
        sql.SQL("coalesce(l.{c}, s.{c})").format(c=sql.Identifier(c)) for c in join.key
    )
    examples: dict[str, list[dict[str, Any]]] = {}
    for kind, cond in join.kinds().items():
        keys = totals[f"{kind}_keys"] or []
        if not keys:
            examples[kind] = []
            continue
        side = "s" if kind == "only_shadow" else "l"
        query = sql.SQL(
            "SELECT to_jsonb(l) AS live, to_jsonb(s) AS shadow FROM {source}"
            " WHERE {side}.{k} = ANY(%(keys)s) AND {cond} ORDER BY {order} LIMIT {n}"
        ).format(
            source=join.source(), side=sql.Identifier(side), k=join.first, cond=cond,
            order=order, n=sql.Literal(EXAMPLES),
        )  # fmt: skip
        rows = conn.execute(query, {"keys": keys})
        examples[kind] = [_example(r, join.key, join.values) for r in rows]
    return examples


def _example(row: Any, key: list[str], values: list[str]) -> dict[str, Any]:
    live, shadow = row["live"], row["shadow"]
    side = live if live is not None else shadow
    example: dict[str, Any] = {"key": {k: side[k] for k in key}, "live": live, "shadow": shadow}
    if live is not None and shadow is not None:
        example["columns"] = [c for c in values if live.get(c) != shadow.get(c)]
    return example
