"""Fixtures shared by the suites; each suite's conftest provides its own ``settings``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import db
from shared.settings import Settings


@pytest.fixture
def conn(settings: Settings) -> Iterator[db.Connection]:
    """An autocommit connection to the suite's database."""
    with db.connect(settings) as c:
        yield c
