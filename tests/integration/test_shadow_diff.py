"""``compare_table`` on column types beyond the example read model's: a composite primary key,
and columns whose type has no equality operator (json, point) or one that is not equality (box
compares areas), which a diff compares as text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.db import Connection
from shared.shadow_diff import compare_table

pytestmark = pytest.mark.integration

TABLE = """CREATE TABLE {schema}.odd (
    tenant text, n int, doc json, at point, area box, tags json[], total numeric,
    PRIMARY KEY (tenant, n))"""
ROWS = [
    ("a", 1, '{"x": 1}', "(1,1)", "((0,0),(1,1))", ['{"t": 1}'], 1),
    ("a", 2, '{"x": 2}', "(2,2)", "((0,0),(2,2))", ['{"t": 2}'], 2),
    ("b", 1, '{"x": 3}', "(3,3)", "((0,0),(3,3))", ['{"t": 3}'], 3),
    ("b", 2, '{"x": 4}', "(4,4)", "((0,0),(4,4))", ['{"t": 4}'], 4),
]


@pytest.fixture
def sides(conn: Connection) -> Iterator[None]:
    for schema in ("diff_live", "diff_other"):
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(TABLE.format(schema=schema))
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {schema}.odd VALUES (%s, %s, %s, %s, %s, %s::json[], %s)", ROWS
            )
    yield
    for schema in ("diff_live", "diff_other"):
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_columns_without_equality_and_a_composite_key(conn: Connection, sides: None) -> None:
    assert compare_table(conn, "diff_live", "diff_other", "odd")["changed"] == 0
    conn.execute("""UPDATE diff_other.odd SET doc = '{"x": 9}' WHERE (tenant, n) = ('a', 2)""")
    conn.execute("UPDATE diff_other.odd SET at = '(9,9)' WHERE (tenant, n) = ('b', 1)")
    # the same area, another box: `=` on box would call them equal
    conn.execute("UPDATE diff_other.odd SET area = '((1,1),(2,2))' WHERE (tenant, n) = ('a', 1)")
    conn.execute("""UPDATE diff_other.odd SET tags = ARRAY['{"t": 0}']::json[] WHERE n = 2""")
    conn.execute("DELETE FROM diff_other.odd WHERE (tenant, n) = ('b', 2)")
    conn.execute("INSERT INTO diff_other.odd (tenant, n, total) VALUES ('c', 1, 5)")
    found = compare_table(conn, "diff_live", "diff_other", "odd")
    assert found["key"] == ["tenant", "n"]
    assert (found["only_live"], found["only_shadow"], found["changed"]) == (1, 1, 3)
    assert found["changed_columns"] == {"doc": 1, "at": 1, "area": 1, "tags": 1}
    changed = {(e["key"]["tenant"], e["key"]["n"]): e["columns"]
               for e in found["examples"]["changed"]}  # fmt: skip
    assert changed == {("a", 1): ["area"], ("a", 2): ["doc", "tags"], ("b", 1): ["at"]}
    assert [e["key"] for e in found["examples"]["only_live"]] == [{"tenant": "b", "n": 2}]
    assert [e["key"] for e in found["examples"]["only_shadow"]] == [{"tenant": "c", "n": 1}]
