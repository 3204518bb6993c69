"""``replay flower``: Flower, configured for this project (``scheduler/flowerconfig.py``), on the
servers the other commands use (the environment, else the local ones, else the embedded stack).

The configuration requires a password (``FLOWER_BASIC_AUTH``), shows the columns that say what a
replay is doing (a slice's label and progress) and keeps the task history across restarts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from local import embedded
from shared.errors import ConfigurationError, InvalidRequest
from shared.settings import Settings

CONFIG = Path(__file__).with_name("flowerconfig.py")


def command(address: str, port: int) -> list[str]:
    """The Flower command line ``replay flower`` runs."""
    return [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--conf={CONFIG}",
            f"--address={address}", f"--port={port}"]  # fmt: skip


def environment(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Flower's environment: the servers resolved for this command, and its history kept beside
    the embedded stack's data (``.replay/flower.db``) unless ``FLOWER_DB`` says where."""
    base = dict(os.environ if env is None else env)
    if not (base.get("FLOWER_BASIC_AUTH") or base.get("FLOWER_AUTH")):
        raise ConfigurationError(
            "Flower needs a password: set FLOWER_BASIC_AUTH=user:password (it shows task"
            " arguments and results, and can revoke tasks)"
        )
    base.setdefault("FLOWER_DB", str(embedded.home(base) / "flower.db"))
    return {**base, **settings.as_env()}


def run(settings: Settings, address: str | None, port: int | None) -> int:
    """Run Flower until it stops (Ctrl-C); its exit code. The address and port default to
    ``FLOWER_ADDRESS`` and ``FLOWER_PORT``, else 127.0.0.1:5555."""
    env = environment(settings)
    address = address or env.get("FLOWER_ADDRESS") or "127.0.0.1"
    raw = str(port) if port is not None else env.get("FLOWER_PORT") or "5555"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise InvalidRequest(f"the Flower port must be from 1 to 65535, got {raw!r}")
    port = int(raw)
    Path(env["FLOWER_DB"]).parent.mkdir(parents=True, exist_ok=True)
    print(f"Flower on http://{address}:{port} (log in with FLOWER_BASIC_AUTH)", file=sys.stderr)
    try:
        return subprocess.call(command(address, port), env=env)
    except KeyboardInterrupt:
        return 0
