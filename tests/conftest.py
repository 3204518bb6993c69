"""Fixtures and hooks shared by the suites; each suite's conftest provides its own ``settings``.

The session's servers (issue 13) are resolved when it starts (``tests/suite_servers.py``): the
test variables, else the local servers, else the embedded ones, started for the session and
stopped at its end. The report header says which, in one line. A session without them stops at
once, with one line that says what to start or install. A session of unit tests only needs no
servers and resolves none.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local import embedded
from shared import db
from shared.settings import Settings
from tests import suite_servers, support

UNIT_TESTS = support.ROOT / "tests" / "unit"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "machine_server(*servers): acts on the machine's own PostgreSQL ('postgres') or Redis"
        " ('redis') itself, e.g. restarts it; skipped when the suite runs on another server of"
        " that kind (the embedded one)",
    )


def _needs_servers(config: pytest.Config) -> bool:
    """Whether any test selected by the command line may need a server: all but tests/unit."""
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if not path.is_relative_to(UNIT_TESTS):
            return True
    return False


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _needs_servers(session.config):
        return
    try:
        support.start_servers()
    except suite_servers.Unavailable as exc:
        # A UsageError is pytest's one line ("ERROR: ...") and exit code 4, nothing else
        # printed (pytest.exit prints its message twice).
        raise pytest.UsageError(f"the tests have no servers: {exc}") from None


def pytest_report_header(config: pytest.Config) -> str:
    found = support._servers
    return found.line if found is not None else "servers: none (unit tests only: they need none)"


@pytest.hookimpl(trylast=True)  # after the suites' conftests marked their items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    found = support._servers
    if found is None:
        return
    for item in items:
        # Collected first: the marker added below goes to the front of the item's own markers.
        wanted = {server for mark in item.iter_markers("machine_server") for server in mark.args}
        for server in sorted(wanted):
            if found.is_machines(server):
                continue
            name = embedded.NAMES[server]
            reason = (
                f"acts on the machine's {name} ({suite_servers.MACHINE[server]}), and the"
                f" suite's {name} is {found.chosen[server]}"
            )
            # First of the item's skipif marks: this reason wins over a test's own.
            item.add_marker(pytest.mark.skipif(True, reason=reason), append=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    support.stop_servers()


@pytest.fixture
def conn(settings: Settings) -> Iterator[db.Connection]:
    """An autocommit connection to the suite's database."""
    with db.connect(settings) as c:
        yield c
