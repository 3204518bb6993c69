"""Starting the embedded PostgreSQL, Redis and Kafka as processes of ours (``local.embedded``
decides when): a data directory initialized with the stack's secret, the server started as its
user, and its process recorded (``local.pids``) as soon as it is identified."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path
from typing import Any

from local import credentials, kafka, pids, stackfile
from local.programs import (
    KAFKA,
    POSTGRES,
    REDIS,
    START_TIMEOUT_SECONDS,
    Binaries,
    pid_file,
    reason_in,
    run,
    server_user,
    uid,
)
from shared.errors import EmbeddedServerError


class Launcher:
    """Runs the servers' programs on the directories of one home."""

    def __init__(self, home_dir: Path, found: Binaries) -> None:
        self.home = home_dir
        self.bin = found
        self.pgdata = home_dir / "pg"
        self.redis_dir = home_dir / "redis"
        self.redis_log = self.redis_dir / "redis.log"
        self.postgres_exe = pids.binary(found.postgres_bin / "postgres")
        self.redis_exe = pids.binary(found.redis_server)
        # tansu, from event-replay[kafka]: None without that extra
        self.kafka_bin = kafka.binary()
        self.kafka_dir = home_dir / "kafka"
        self.kafka_log = self.kafka_dir / "tansu.log"

    def _adopt_legacy(self, state: dict[str, Any]) -> None:
        """Servers started before processes were recorded (a home made before issue 11): taken
        from their pid files only if they run our binary, as the user they ran as, with the
        command line they were given, so that `down` and the upgrade can stop them."""
        records = stackfile.records(state)
        if POSTGRES not in records:
            self._adopt_postmaster(records, uid(server_user(POSTGRES)), since=0)
        pid, _ = pid_file(self.redis_dir / "redis.pid")
        title = [f"{self.bin.redis_server} 127.0.0.1:{state.get('redis_port')}"]
        found = pids.adopt(pid, self.redis_exe, os.geteuid(), title.__eq__, since=0)
        if REDIS not in records and found is not None:
            records[REDIS] = found.to_json()

    def _adopt_postmaster(
        self, records: dict[str, Any], uid: int, *, since: int, port: int | None = None
    ) -> None:
        """Record the postmaster that postmaster.pid names, if it is ours. That file is the
        server user's to write: its pid is taken only for a process of that user running our
        postgres on this directory and ``port`` (by default the file's), as pg_ctl starts it,
        started at or after ``since``."""
        pid, written_port = pid_file(self.pgdata / "postmaster.pid")
        port = written_port if port is None else port
        expected = [
            *("-D", str(self.pgdata), "-c", "listen_addresses=127.0.0.1"),
            *("-c", f"port={port}", "-c", "unix_socket_directories="),
        ]
        found = pids.adopt(pid, self.postgres_exe, uid, lambda a: a[1:] == expected, since=since)
        if found is not None:
            records[POSTGRES] = found.to_json()

    # --- PostgreSQL ---------------------------------------------------------------------------
    def _start_postgres(self, state: dict[str, Any], port: int, secret: str) -> None:
        owner = server_user(POSTGRES)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(owner, secret)
        pidfile = self.pgdata / "postmaster.pid"
        pid, _ = pid_file(pidfile)
        if pid and pids.identify(pid, self.postgres_exe, uid(owner)) is not None:
            raise EmbeddedServerError(
                f"a PostgreSQL this stack did not start runs on {self.pgdata} (pid {pid}):"
                " stop it, then try again"
            )
        # What is left is a crash's: its pid is dead, a zombie PostgreSQL's own check would
        # take for alive, or reused by another process.
        pidfile.unlink(missing_ok=True)
        log = self.pgdata / "server.log"
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
        since = pids.start_time(os.getpid()) or 0
        try:
            self._run(
                [
                    str(self.bin.postgres_bin / "pg_ctl"),
                    *("-D", str(self.pgdata), "-l", str(log), "-o", options),
                    *("-w", "-t", str(int(START_TIMEOUT_SECONDS)), "-s", "start"),
                ],
                owner,
                what="start PostgreSQL",
                log=log,
            )
        finally:
            # Also when pg_ctl failed or was interrupted: a postmaster that came up anyway is
            # then recorded, and stopped by the cleanup.
            self._adopt_postmaster(stackfile.records(state), uid(owner), since=since, port=port)
        if POSTGRES not in stackfile.records(state):
            raise EmbeddedServerError(
                f"PostgreSQL started, but no process of ours runs it; see {log}"
            )

    def _initdb(self, owner: pwd.struct_passwd | None, secret: str) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedServerError(
                f"{self.pgdata} is not empty and is not a PostgreSQL data directory;"
                " move it away or set REPLAY_HOME"
            )
        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if owner is not None:
            credentials.check_reachable(self.pgdata, owner)
            os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)
        with credentials.password_file(self.home, secret, owner) as pwfile:
            self._run(
                [
                    str(self.bin.postgres_bin / "initdb"),
                    *("-D", str(self.pgdata), "-U", "postgres"),
                    *("--auth=scram-sha-256", f"--pwfile={pwfile}"),
                    *("--encoding=UTF8", "--locale=C", "--no-instructions"),
                ],
                owner,
                what="initialize PostgreSQL",
                log=None,
            )

    def _set_postgres_password(self, owner: pwd.struct_passwd | None, secret: str) -> None:
        """Give ``postgres`` the secret as its password, in single-user mode (the server is
        stopped): the SCRAM verifier, computed here, is all that crosses, on stdin."""
        statement = f"ALTER ROLE postgres PASSWORD '{credentials.scram_verifier(secret)}'\n"
        argv = [str(self.bin.postgres_bin / "postgres"), "--single", "-D", str(self.pgdata)]
        out = self._run([*argv, "postgres"], owner, what="set the PostgreSQL password",
                        log=None, stdin=statement)  # fmt: skip
        if "ERROR" in out:
            raise EmbeddedServerError(f"could not set the PostgreSQL password: {reason_in(out)}")

    # --- Redis --------------------------------------------------------------------------------
    def _start_redis(self, state: dict[str, Any], port: int, secret: str) -> None:
        owner = server_user(REDIS)
        credentials.own_dir(self.redis_dir, owner)
        log = self.redis_log
        pidfile = self.redis_dir / "redis.pid"
        pidfile.unlink(missing_ok=True)
        config = self.redis_dir / "redis.conf"
        credentials.write_private(
            config, credentials.redis_config(self.redis_dir, port, secret), owner
        )
        since = pids.start_time(os.getpid()) or 0
        self._run([str(self.bin.redis_server), str(config)], owner, what="start Redis", log=log)
        # Redis retitles itself `BINARY 127.0.0.1:PORT`; its pid file is written after it forks.
        title = [f"{self.bin.redis_server} 127.0.0.1:{port}"]
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        found = None
        while found is None and time.monotonic() < deadline:
            pid, _ = pid_file(pidfile)
            found = pids.adopt(pid, self.redis_exe, uid(owner), title.__eq__, since=since)
            time.sleep(0 if found else 0.02)
        if found is None:
            raise EmbeddedServerError(f"Redis started, but no process of ours runs it; see {log}")
        stackfile.records(state)[REDIS] = found.to_json()
        while not credentials.redis_answers(port, secret):
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded Redis did not answer on 127.0.0.1:{port} within"
                    f" {START_TIMEOUT_SECONDS:g} s; see {log}"
                )
            time.sleep(0.02)

    # --- Kafka --------------------------------------------------------------------------------
    def _start_kafka(self, state: dict[str, Any], port: int) -> None:
        """tansu, in memory, on 127.0.0.1:``port``. It does not detach itself, so a shell starts
        it in the background and says its pid: it outlives ``replay up`` without being a child
        that command must wait for."""
        if self.kafka_bin is None:
            raise EmbeddedServerError(
                "no embedded Kafka here: pip install 'event-replay[kafka]' (it brings tansu)"
            )
        owner = server_user(KAFKA)
        credentials.own_dir(self.kafka_dir, owner)
        log = self.kafka_log
        argv = kafka.command(self.kafka_bin, port)
        since = pids.start_time(os.getpid()) or 0
        background = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
        out = self._run(["/bin/sh", "-c", background, "sh", str(log), *argv], owner,
                        what="start Kafka (tansu)", log=None)  # fmt: skip
        pid = int(out.split()[-1]) if out.split() and out.split()[-1].isdigit() else 0
        # The shell's child runs the shell for an instant before it runs tansu: wait for that.
        exe = pids.binary(self.kafka_bin)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        found = None
        while found is None and pid and time.monotonic() < deadline:
            found = pids.adopt(pid, exe, uid(owner), argv.__eq__, since=since)
            time.sleep(0 if found else 0.01)
        if found is None:
            raise EmbeddedServerError(f"Kafka (tansu) did not start; see {log}")
        stackfile.records(state)[KAFKA] = found.to_json()
        bootstrap = f"127.0.0.1:{port}"
        while not kafka.answers(bootstrap):
            if not pids.alive(found):
                raise EmbeddedServerError(f"embedded Kafka (tansu) exited at start; see {log}")
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"embedded Kafka (tansu) did not answer on {bootstrap} within"
                    f" {START_TIMEOUT_SECONDS:g} s; see {log}"
                )
            time.sleep(0.02)

    def _run(
        self,
        argv: list[str],
        owner: pwd.struct_passwd | None,
        *,
        what: str,
        log: Path | None,
        stdin: str | None = None,
    ) -> str:
        """Run a server program as ``owner`` in the home; its output, or an EmbeddedServerError."""
        return run(argv, owner, cwd=self.home, what=what, log=log, stdin=stdin)
