"""deploy/stack.py's pure parts (scripts/stack check, run by CI, is the stack itself run)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from deploy import checks, stack

ROOT = Path(__file__).resolve().parents[2]


def test_the_stacks_settings_are_made_once_private_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "STATE", tmp_path)
    assert stack._settings("p") != stack._settings("p")  # not kept until the stack is up
    assert not (tmp_path / "p.env").exists()
    first = stack._settings("p", keep=True)
    assert set(first) == {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"}
    assert stat.S_IMODE((tmp_path / "p.env").stat().st_mode) == 0o600
    assert stack._settings("p") == first  # the same passwords for up, replay and down
    kept = stack._settings("p", keep=True, FLOWER_PORT="6000")
    assert kept == {**first, "FLOWER_PORT": "6000"}
    assert stack._settings("p")["FLOWER_PORT"] == "6000"
    assert stack._settings("other") != first


def test_a_job_id_is_found_in_what_submit_prints() -> None:
    job = "e67d6f47-a49b-4dbc-8db0-b1cb61228918"
    assert checks.JOB_ID.search(f"{job}\n").group(1) == job
    assert checks.JOB_ID.search(f"job {job}: 12 slices, 300,000 events").group(1) == job


def test_every_image_of_the_compose_file_defaults_to_the_public_one() -> None:
    """The registry path stays the default: scripts/stack only sets variables."""
    compose = (ROOT / "docker-compose.yml").read_text()
    images = re.findall(r"^\s+image: (.+)$", compose, re.M)
    assert images == [
        "${REPLAY_IMAGE:-event-replay:latest}",
        "${REPLAY_POSTGRES_IMAGE:-docker.io/library/postgres:16}",
        "${REPLAY_REDIS_IMAGE:-docker.io/library/redis:7}",
    ]
    assert "BASE_IMAGE: ${REPLAY_BASE_IMAGE:-docker.io/library/python:3.11-slim}" in compose
    assert "ARG BASE_IMAGE=docker.io/library/python:3.11-slim" in (ROOT / "Dockerfile").read_text()
    assert set(stack.LOCAL_IMAGES) == {
        "REPLAY_IMAGE",
        "REPLAY_POSTGRES_IMAGE",
        "REPLAY_REDIS_IMAGE",
    }
