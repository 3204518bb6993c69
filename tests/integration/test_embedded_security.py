"""The embedded servers are closed by default (issue 11).

Every check is made by a real process: ``replay up``/``down`` are real commands, and the
"attacker" is the real unprivileged local user ``nobody`` (``setpriv``), with the system's
``psql`` and ``redis-cli`` (the project's venv need not be readable by ``nobody``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from local import embedded, pids, stackfile
from tests.integration import test_embedded
from tests.integration.test_embedded import assert_nothing_left, replay

pytestmark = test_embedded.pytestmark
stack_home = test_embedded.stack_home
bare_env = test_embedded.bare_env

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
as_root_with_nobody = pytest.mark.skipif(
    os.geteuid() != 0
    or not all(shutil.which(tool) for tool in ("setpriv", "psql", "redis-cli"))
    or not Path("/usr/bin/psql").exists(),
    reason="needs root (to become nobody), setpriv, /usr/bin/psql and redis-cli",
)


def up(env: dict[str, str]) -> dict[str, str]:
    """``replay up``; the URLs it exports."""
    done = replay(env, "up")
    assert done.returncode == 0, done.stderr
    return dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())


@pytest.fixture
def running(bare_env: dict[str, str], stack_home: Path) -> Iterator[dict[str, str]]:
    """A stack that ``replay up`` started; the URLs it exported. ``replay down`` after."""
    yield up(bare_env)
    assert replay(bare_env, "down").returncode == 0
    assert_nothing_left(stack_home)


def status(home: Path) -> dict[str, object]:
    return embedded.EmbeddedStack(home, embedded.binaries()).status()  # type: ignore[arg-type]


def as_nobody(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AS_NOBODY, *argv], env={"PATH": "/usr/bin:/bin", **(env or {})},
                          capture_output=True, text=True, timeout=30, cwd="/")  # fmt: skip


def secret_of(home: Path) -> str:
    return (home / "secret").read_text().strip()


@as_root_with_nobody
def test_another_local_user_needs_the_secret(running: dict[str, str], stack_home: Path) -> None:
    ports = status(stack_home)
    secret = secret_of(stack_home)
    pg = ["/usr/bin/psql", "-w", "-h", "127.0.0.1", "-p", str(ports["postgres_port"]),
          "-U", "postgres", "-d", "replay", "-tAc", "SELECT current_user"]  # fmt: skip
    refused = as_nobody(*pg)
    assert refused.returncode != 0 and "no password supplied" in refused.stderr, refused
    guessed = as_nobody(*pg, env={"PGPASSWORD": "postgres"})
    assert "password authentication failed" in guessed.stderr, guessed
    allowed = as_nobody(*pg, env={"PGPASSWORD": secret})
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "postgres"), allowed

    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(ports["redis_port"])]
    assert "NOAUTH" in as_nobody(*cli, "SET", "owned", "1").stdout
    assert "WRONGPASS" in as_nobody(*cli, "PING", env={"REDISCLI_AUTH": "guess"}).stderr
    assert as_nobody(*cli, "PING", env={"REDISCLI_AUTH": secret}).stdout.strip() == "PONG"
    # The file write of issue 11 (CONFIG SET dir / dbfilename, then SAVE): CONFIG is gone, for
    # a client that has the password too.
    for env in ({}, {"REDISCLI_AUTH": secret}):
        configured = as_nobody(*cli, "CONFIG", "SET", "dir", "/tmp", env=env)
        assert "unknown command" in configured.stdout.lower(), configured
    # And nobody cannot read the secret.
    assert as_nobody("/bin/cat", str(stack_home / "secret")).returncode != 0


def test_a_client_with_the_secret_works_and_config_is_refused(running: dict[str, str]) -> None:
    client = redis.Redis.from_url(running["REPLAY_REDIS_URL"])
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.flushdb() is True  # the tests flush their DBs
        for dangerous in (["CONFIG", "GET", "dir"], ["DEBUG", "SLEEP", "0"], ["MODULE", "LIST"],
                          ["REPLICAOF", "NO", "ONE"], ["ACL", "LIST"]):  # fmt: skip
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(*dangerous)
    finally:
        client.close()
    with psycopg.connect(running["REPLAY_DATABASE_URL"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_secret_is_private_and_printed_nowhere(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    done = replay(bare_env, "up")
    assert done.returncode == 0, done.stderr
    try:
        secret = secret_of(stack_home)
        assert len(secret) >= 32
        mode = (stack_home / "secret").stat()
        assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.geteuid()
        config = (stack_home / "redis" / "redis.conf").stat()
        assert stat.S_IMODE(config.st_mode) == 0o600
        root = os.geteuid() == 0
        assert config.st_uid == (pwd.getpwnam("redis").pw_uid if root else os.geteuid())
        # Only the exports carry it (for `eval "$(replay up)"`); no message, no command line.
        assert secret in done.stdout and secret not in done.stderr
        jobs = replay(bare_env, "jobs")
        assert jobs.returncode == 0 and secret not in jobs.stdout + jobs.stderr
        stack, _ = embedded.EmbeddedStack(stack_home, embedded.binaries()).peek()  # type: ignore[arg-type]
        assert secret not in repr(stack) + stack.describe("postgres") + stack.describe("redis")
        assert [p for p in Path("/proc").glob("[0-9]*/cmdline") if secret in _read(p)] == []
    finally:
        assert replay(bare_env, "down").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="the servers change user only under root")
def test_under_root_the_servers_run_unprivileged(running: dict[str, str], stack_home: Path) -> None:
    found = status(stack_home)
    for server, user in (("postgres", "postgres"), ("redis", "redis")):
        uids = _uids(int(found[server]))  # type: ignore[arg-type]
        assert 0 not in uids, (server, uids)
        assert uids == {pwd.getpwnam(user).pw_uid}
    assert (stack_home / "pg").stat().st_uid == pwd.getpwnam("postgres").pw_uid
    assert (stack_home / "redis").stat().st_uid == pwd.getpwnam("redis").pw_uid


def test_down_signals_no_process_that_only_looks_like_a_server(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    up(bare_env)
    before = status(stack_home)
    pgdata, port = stack_home / "pg", before["redis_port"]
    # Bystanders whose command lines hold what the old substring match looked for.
    redis_like = subprocess.Popen(
        ["bash", "-c", f'exec -a "redis-server 127.0.0.1:{port}" sleep 300'],
        start_new_session=True,
    )
    pg_like = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "-D", str(pgdata)],
        start_new_session=True,
    )
    try:
        # The servers die (a crash); their pids files and records now point at the bystanders:
        # the pid files as the servers' user could write them, the records as a reused pid
        # (wrong start time) and a process of another binary would look.
        for pid in (before["postgres"], before["redis"]):
            os.kill(int(pid), signal.SIGKILL)  # type: ignore[arg-type]
        (pgdata / "postmaster.pid").write_text(f"{pg_like.pid}\n{pgdata}\n0\n{port}\n")
        (stack_home / "redis" / "redis.pid").write_text(f"{redis_like.pid}\n")
        state_file = stack_home / "stack.json"
        postgres_bin = embedded.binaries().postgres_bin  # type: ignore[union-attr]
        state = stackfile.read_state(state_file)
        reused = pids.start_time(redis_like.pid)
        state["processes"] = {
            **state["processes"],  # the embedded Kafka's record, if it runs, stays true
            "redis": {"pid": redis_like.pid, "started": (reused or 0) - 1,
                      "exe": pids.binary(Path("/bin/sleep")), "uid": os.geteuid()},
            "postgres": {"pid": pg_like.pid, "started": pids.start_time(pg_like.pid),
                         "exe": pids.binary(postgres_bin / "postgres"),
                         "uid": os.geteuid()},
        }  # fmt: skip
        stackfile.write_state(state_file, state)

        down = replay(bare_env, "down")
        assert down.returncode == 0, down.stderr
        # Neither is taken for a server (the embedded Kafka, if it runs, is one and stops).
        assert "PostgreSQL" not in down.stdout and "Redis" not in down.stdout, down.stdout
        assert (redis_like.poll(), pg_like.poll()) == (None, None)
        # Nor taken for running servers: `up` starts real ones, and `down` stops only those.
        again = replay(bare_env, "up")
        started = again.stderr.count(", started")
        assert again.returncode == 0 and started == len(test_embedded.UP_SERVERS), again.stderr
        assert replay(bare_env, "down").returncode == 0
        assert (redis_like.poll(), pg_like.poll()) == (None, None)
    finally:
        for bystander in (redis_like, pg_like):
            bystander.kill()
            bystander.wait()
    assert_nothing_left(stack_home)


def test_a_home_from_before_the_secret_is_upgraded_in_place(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    pg_port, redis_port = legacy_stack(stack_home)
    old = status(stack_home)  # the old servers are found (from their pid files) ...
    assert None not in (old["postgres"], old["redis"])

    urls = up(bare_env)  # ... stopped, and started again closed, with the data
    new = status(stack_home)
    assert {old["postgres"], old["redis"]}.isdisjoint({new["postgres"], new["redis"]})
    assert (new["postgres_port"], new["redis_port"]) == (pg_port, redis_port)
    admin_url = urls["REPLAY_DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    client = redis.Redis.from_url(urls["REPLAY_REDIS_URL"])
    try:
        assert client.get("kept") == b"yes"
    finally:
        client.close()
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres").close()
    hba = (stack_home / "pg" / "pg_hba.conf").read_text()
    assert "trust" not in hba and "scram-sha-256" in hba
    assert replay(bare_env, "down").returncode == 0
    assert_nothing_left(stack_home)


def test_a_deleted_secret_is_replaced_and_the_old_one_stops_working(
    bare_env: dict[str, str], stack_home: Path
) -> None:
    old = up(bare_env)
    (stack_home / "secret").unlink()  # while the servers run
    new = up(bare_env)
    assert new != old and secret_of(stack_home) in new["REPLAY_DATABASE_URL"]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(old["REPLAY_DATABASE_URL"]).close()
    psycopg.connect(new["REPLAY_DATABASE_URL"]).close()
    client = redis.Redis.from_url(old["REPLAY_REDIS_URL"])
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()
    assert replay(bare_env, "down").returncode == 0
    assert_nothing_left(stack_home)


def legacy_stack(home: Path) -> tuple[int, int]:
    """A home as the code before issue 11 made it, its servers running: PostgreSQL with trust
    auth (as ``postgres`` under root), Redis without a password as the calling user, no secret
    and no recorded processes. A row and a key in them. Returns the ports."""
    found = embedded.binaries()
    assert found is not None
    pg_port, redis_port = test_embedded.unused_port(), test_embedded.unused_port()
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    pgdata, redis_dir = home / "pg", home / "redis"
    pgdata.mkdir(mode=0o700, parents=True)
    redis_dir.mkdir(mode=0o700)
    if owner:
        os.chown(pgdata, owner.pw_uid, owner.pw_gid)
    bin_dir = found.postgres_bin
    _run([str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
          "--encoding=UTF8", "--locale=C", "--no-instructions"], owner)  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -c port={pg_port} -c unix_socket_directories=''"
    _run([str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(pgdata / "server.log"),
          "-o", options, "-w", "-s", "start"], owner)  # fmt: skip
    _run([str(found.redis_server), "--bind", "127.0.0.1", "--port", str(redis_port),
          "--daemonize", "yes", "--dir", str(redis_dir),
          "--pidfile", str(redis_dir / "redis.pid"), "--logfile", str(redis_dir / "redis.log"),
          "--appendonly", "yes", "--save", ""], None)  # fmt: skip
    (home / "stack.json").write_text(
        f'{{"postgres_port": {pg_port}, "redis_port": {redis_port}, "pinned": true, "users": []}}\n'
    )
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres") as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    client = redis.Redis(host="127.0.0.1", port=redis_port, db=2)
    try:
        for _ in range(200):
            try:
                client.set("kept", "yes")
                break
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    return pg_port, redis_port


def _run(argv: list[str], owner: pwd.struct_passwd | None) -> None:
    as_owner = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []} if owner else {}
    subprocess.run(argv, check=True, capture_output=True, timeout=120, **as_owner)  # type: ignore[call-overload]


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _uids(pid: int) -> set[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return {int(uid) for uid in line.split()[1:]}
