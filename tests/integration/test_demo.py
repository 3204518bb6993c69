"""``replay demo`` end to end, as a user runs it (smaller than its default, to keep CI short)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared import db
from shared.settings import Settings
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def test_demo_runs_the_whole_story_and_verifies_it(settings: Settings, tmp_path: Path) -> None:
    name = f"{settings.database_name}_demo"
    # The demo writes its worker logs into REPLAY_HOME: a test's own, never the user's .replay/.
    home = tmp_path / "home"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "demo", "--aggregates", "400",
             "--events-per-aggregate", "25", "--database", name],
            env={**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT),
                 "REPLAY_HOME": str(home)},
            capture_output=True, text=True, timeout=240, cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        assert "seeded 10,000 events" in out
        assert "started 2 worker processes" in out
        assert "10,000/10,000 events" in out
        assert "-> OK" in out and "0 differ" in out
        assert "events/s" in out
        assert f"logs in {home}/" in " ".join(out.split())
        assert sorted(p.name for p in home.iterdir()) == ["demo-1.log", "demo-2.log"]
        # one job, one rate: the bar's, the summary's and the figures' are the same number
        after_seed = out.split("4. full rebuild", 1)[1]
        rates = set(re.findall(r"([\d,]+) events/s", after_seed))
        assert len(rates) == 1 and "the job's rate" in after_seed, out
        # the closing hint: replay by its path, the demo's database named
        job_id = re.search(r"^job ([0-9a-f-]{36}) completed", out, re.M)[1]  # type: ignore[index]
        assert f" status {job_id} --database {name}" in out
    finally:
        db.drop_database(settings, name)
