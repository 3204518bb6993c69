"""Building the images and running the stack: podman and podman-compose, driven (see the
package's docstring)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".stack"
VENV_BIN = ROOT / ".venv" / "bin"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROJECT = "event-replay"

BASE_IMAGE = "localhost/debian-base:bookworm"
LOCAL_IMAGES = {
    "REPLAY_IMAGE": "localhost/event-replay:latest",
    "REPLAY_POSTGRES_IMAGE": "localhost/event-replay-postgres:15",
    "REPLAY_REDIS_IMAGE": "localhost/event-replay-redis:7",
}
#: Debian bookworm's Python: the wheelhouse is resolved for it (its markers, e.g. redis's
#: async-timeout below 3.11.3), not for the Python that runs this script
IMAGE_PYTHON = "3.11.2"
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH")
HEALTH_SECONDS = 120
#: no step of the stack may take longer (a job that hangs fails CI instead of stalling it)
COMMAND_SECONDS = 900


class StackError(Exception):
    """A step of the stack that did not do what it must (the message says which)."""


# --- running things ------------------------------------------------------------------------------
def environment(project: str = PROJECT) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "deploy" / "containers.conf"))
    if not env["CONTAINERS_CONF"]:
        del env["CONTAINERS_CONF"]  # podman's own defaults
    if os.environ.get("REPLAY_STACK_IMAGES", "local") != "registry":
        for name, image in LOCAL_IMAGES.items():
            env.setdefault(name, image)
        env.setdefault("REPLAY_BASE_IMAGE", BASE_IMAGE)
    for name, value in _settings(project).items():
        env.setdefault(name, value)
    env.setdefault("NO_COLOR", "1")
    return env


def _settings(project: str, *, keep: bool = False, **more: str) -> dict[str, str]:
    """The stack's own settings, kept in .stack/<project>.env (mode 600) by ``up``
    (``keep``) so that `up`, `replay` and `down` agree: its passwords, made once unless the
    environment has them (those are not written), and what ``up`` was given (``more``)."""
    path = STATE / f"{project}.env"
    kept: dict[str, str] = {}
    if path.exists():
        pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        kept = dict(pairs)
    made = {
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "REDIS_PASSWORD": secrets.token_hex(24),
        "FLOWER_BASIC_AUTH": f"admin:{secrets.token_hex(16)}",
    }
    wanted = {k: v for k, v in {**made, **kept, **more}.items() if k not in os.environ}
    if keep and wanted != kept:
        STATE.mkdir(exist_ok=True)
        written = path.with_suffix(".tmp")
        fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.writelines(f"{k}={v}\n" for k, v in wanted.items())
        os.replace(written, path)
    return wanted


def run(*cmd: str | Path, env: dict[str, str] | None = None, capture: bool = False) -> str:
    shown = " ".join(str(c) for c in cmd)
    print(f"stack: {shown}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(
            [str(c) for c in cmd], env=env or environment(), text=True,
            stdout=subprocess.PIPE if capture else None, check=False, timeout=COMMAND_SECONDS,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise StackError(f"{shown}: still running after {COMMAND_SECONDS} s") from None
    if done.returncode != 0:
        raise StackError(f"{shown}: exit {done.returncode}")
    return done.stdout or ""


def quiet(*cmd: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], env=env or environment(), text=True, capture_output=True,
        check=False, timeout=COMMAND_SECONDS,
    )  # fmt: skip


def compose(project: str, *args: str, capture: bool = False) -> str:
    """podman-compose on docker-compose.yml, every container a host of its own (no pod)."""
    return run(
        VENV_BIN / "podman-compose", "--in-pod", "false", "-p", project, "-f", COMPOSE_FILE,
        *args, env=environment(project), capture=capture,
    )  # fmt: skip


def container(project: str, service: str, index: int = 1) -> str:
    return f"{project}_{service}_{index}"


# --- images --------------------------------------------------------------------------------------
def tools() -> None:
    """podman, runc and debootstrap (Debian's packages, as root), podman-compose (PyPI)."""
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if missing:
        if os.geteuid() != 0:
            raise StackError(
                f"missing {', '.join(missing)}: apt-get install podman runc debootstrap"
            )
        run("apt-get", "install", "-y", "-q", "podman", "runc", "debootstrap")
    if not (VENV_BIN / "podman-compose").exists():
        run(VENV_BIN / "pip", "install", "-q", "-e", f"{ROOT}[stack]")


def _mirror() -> str:
    """The Debian mirror apt uses here (its sources), else deb.debian.org."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if path.exists():
            found = re.search(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b", path.read_text())
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def base_image() -> None:
    if quiet("podman", "image", "exists", BASE_IMAGE).returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="debian-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run("debootstrap", "--variant=minbase", "bookworm", rootfs, _mirror())
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, env=environment(), check=False,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        assert tar.stdout is not None
        tar.stdout.close()  # so that tar ends if the import did not read it all
        if tar.wait() != 0 or imported.returncode != 0:
            raise StackError(f"could not import the debootstrapped root as {BASE_IMAGE}")


def wheelhouse() -> Path:
    """The project's wheel and its dependencies' for the image's Python, from this machine's
    package index: the image build installs from these alone."""
    wheels = STATE / "wheelhouse"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    pip = VENV_BIN / "pip"
    run(pip, "wheel", "-q", "--no-deps", "--wheel-dir", wheels, ROOT)
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' leftovers
    (project,) = wheels.glob("event_replay-*.whl")
    run(
        pip, "download", "-q", "--only-binary=:all:", "--python-version", IMAGE_PYTHON,
        "--dest", wheels, project, "setuptools>=68", "wheel", "async-timeout>=4.0.3",
    )  # fmt: skip
    return wheels


def images() -> None:
    tools()
    if os.environ.get("REPLAY_STACK_IMAGES") == "registry":
        compose(PROJECT, "build")
        return
    base_image()
    started = time.monotonic()
    run(
        "podman", "build", "-q", "-t", LOCAL_IMAGES["REPLAY_IMAGE"],
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-v", f"{wheelhouse()}:/wheelhouse:ro", ROOT,
    )  # fmt: skip
    for service, name in (("postgres", "REPLAY_POSTGRES_IMAGE"), ("redis", "REPLAY_REDIS_IMAGE")):
        run(
            "podman", "build", "-q", "-t", LOCAL_IMAGES[name],
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", ROOT / "deploy" / service,
        )  # fmt: skip
    print(f"stack: images built in {time.monotonic() - started:.0f} s", file=sys.stderr)


# --- the stack -----------------------------------------------------------------------------------
def up(project: str = PROJECT, workers: int = 1, **settings: str) -> None:
    """The stores first, healthy; the schema; then the app containers (podman 4.3 cannot wait
    for compose's health conditions: this does, in that order). ``settings``: variables of the
    compose file, kept for the stack's later commands."""
    _settings(project, keep=True, **settings)
    compose(project, "up", "-d", "--no-build", "postgres", "redis")
    _healthy(project, "postgres", "redis")
    compose(project, "run", "--rm", "-T", "migrate")
    scale(project, workers)


def scale(project: str, workers: int) -> None:
    compose(
        project, "up", "-d", "--no-build", "--no-deps", "--scale", f"worker={workers}",
        "worker", "live-worker", "scheduler", "flower",
    )  # fmt: skip
    _ready(project, [container(project, "worker", i) for i in range(1, workers + 1)])


def _healthy(project: str, *services: str) -> None:
    deadline = time.monotonic() + HEALTH_SECONDS
    for service in services:
        name = container(project, service)
        while quiet("podman", "healthcheck", "run", name).returncode != 0:
            if time.monotonic() > deadline:
                raise StackError(f"{name} is not healthy after {HEALTH_SECONDS} s")
            time.sleep(0.5)


def _ready(project: str, workers: list[str]) -> None:
    """Every worker container's Celery has said it is ready."""
    deadline = time.monotonic() + HEALTH_SECONDS
    for name in workers:
        while " ready." not in quiet("podman", "logs", name).stderr:
            if time.monotonic() > deadline:
                raise StackError(f"{name}'s worker is not ready after {HEALTH_SECONDS} s")
            time.sleep(0.5)


#: stopped first by ``down``: podman-compose removes a scaled service's second container as an
#: orphan, after Redis, and a worker whose broker is gone waits for it until podman kills it
APP_SERVICES = ("flower", "scheduler", "live-worker", "worker")


def down(project: str = PROJECT) -> None:
    """Everything of the stack removed, and checked: no container, pod, network or volume."""
    apps = quiet("podman", "ps", "--filter", f"name=^{project}_({'|'.join(APP_SERVICES)})_[0-9]+$",
                 "--format", "{{.Names}}").stdout.split()  # fmt: skip
    if apps:  # best effort: down removes whatever this leaves
        quiet("podman", "stop", "--time", "30", *apps)
    compose(project, "down", "-v", "--remove-orphans")
    left = leftovers(project)
    if left:
        raise StackError(f"left behind by down: {', '.join(left)}")
    (STATE / f"{project}.env").unlink(missing_ok=True)


def leftovers(project: str) -> list[str]:
    label = f"label=io.podman.compose.project={project}"
    return [thing for thing in podman_things(label) if thing.split()[1].startswith(project)]


def podman_things(*filters: str) -> set[str]:
    """Every container, pod, network and volume podman has (that ``filters`` pick)."""
    found: set[str] = set()
    for kind, listing, field in (
        ("container", ["ps", "-a"], "{{.Names}}"), ("pod", ["pod", "ls"], "{{.Name}}"),
        ("network", ["network", "ls"], "{{.Name}}"), ("volume", ["volume", "ls"], "{{.Name}}"),
    ):  # fmt: skip
        options = [x for f in filters for x in ("--filter", f)]
        listed = quiet("podman", *listing, *options, "--format", field)
        if listed.returncode != 0:
            raise StackError(f"podman {' '.join(listing)}: {listed.stderr.strip()}")
        names = listed.stdout
        found |= {f"{kind} {n}" for n in names.split()}
    return found


def replay(project: str, *args: str, capture: bool = False) -> str:
    """The `replay` CLI in a one-off container on the stack's network (compose's migrate
    service: the app image and its environment)."""
    return compose(project, "run", "--rm", "-T", "migrate", "replay", *args, capture=capture)


def sql(project: str, query: str) -> list[list[str]]:
    """A query on the stack's database, from inside its PostgreSQL container."""
    out = quiet(
        "podman", "exec", container(project, "postgres"), "psql", "-U", "postgres", "-d",
        "replay", "-AtF", "\t", "-c", query,
    )  # fmt: skip
    if out.returncode != 0:
        raise StackError(f"psql: {out.stderr.strip()}")
    return [line.split("\t") for line in out.stdout.splitlines()]
