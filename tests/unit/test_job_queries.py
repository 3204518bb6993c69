"""The named queries of jobs and slices (shared/queries/jobs.sql, slices.sql), read without a
database: each is used, and statuses travel as parameters, never spelled in the SQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import queries
from shared.jobs import STATUS_PARAMS, Status, params

ROOT = Path(__file__).resolve().parents[2]
FILES = ("jobs", "slices")


def _source() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "shared").glob("*.py"))


@pytest.mark.parametrize("file", FILES)
def test_every_query_is_used(file: str) -> None:
    source = _source()
    unused = [name for name in queries.load(file) if f'"{name}"' not in source]
    assert unused == []


@pytest.mark.parametrize("file", FILES)
def test_no_status_is_spelled_in_the_sql(file: str) -> None:
    spelled = {
        (name, s.value)
        for name, text in queries.load(file).items()
        for s in Status
        if re.search(rf"'{s.value}'", text)
    }
    assert spelled == set()


def test_every_status_a_query_names_is_a_parameter() -> None:
    named = {
        m
        for file in FILES
        for text in queries.load(file).values()
        for m in re.findall(r"%\((\w+)\)s", text)
    }
    statuses = {s.value for s in Status} | {"active", "final"}
    assert named & statuses <= set(STATUS_PARAMS)
    assert params(job_id=1)["active"] == [Status.PENDING, Status.RUNNING]
    assert set(params()["final"]) == {Status.COMPLETED, Status.FAILED, Status.CANCELLED}
