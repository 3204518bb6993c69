"""What the stack is checked with: a rebuild against an independent fold, interrupted by a
killed worker container or a restarted Redis (``check``, run by CI), and the scale-out
measure (``bench``)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from deploy.stack import (
    PROJECT,
    ROOT,
    StackError,
    compose,
    container,
    down,
    environment,
    images,
    podman_things,
    quiet,
    replay,
    run,
    scale,
    sql,
    up,
)  # fmt: skip
from shared.jobs import Status

JOB_SECONDS = 600
#: events/s of the rebuilds a check interrupts: 300,000 events take 15 s, 30 % of them 4.5 s
INTERRUPTED_RATE = 20_000
JOB_ID = re.compile(r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b")
ENDED = {Status.COMPLETED, Status.FAILED, Status.CANCELLED}


VERIFY = (
    "from examples.orders.verify import verify_order_summary\n"
    "from shared import db\n"
    "from shared.settings import Settings\n"
    "with db.connect(Settings.from_env()) as conn:\n"
    "    v = verify_order_summary(conn)\n"
    "print(f'{v.actual_rows} rows; {v.missing_or_different} missing or different,"
    " {v.unexpected} unexpected')\n"
    "raise SystemExit(0 if v.ok else 1)\n"
)


def verify(project: str) -> None:
    """The read model against an independent fold of the events (examples/orders/verify.py),
    run in a container of the stack."""
    compose(project, "run", "--rm", "-T", "migrate", "python", "-c", VERIFY)


def submit(project: str, *args: str) -> str:
    out = replay(project, "submit", "order_summary", "--reset", *args, capture=True)
    found = JOB_ID.search(out)
    if found is None:
        raise StackError(f"no job id in the submit's output: {out!r}")
    return found.group(1)


def progress(project: str, job_id: str) -> tuple[str, int, int, int]:
    """The job's status, events processed, total, and the slices' summed attempts."""
    (row,) = sql(
        project,
        "SELECT j.status, coalesce(sum(s.processed_count), 0), j.total_events,"
        " coalesce(sum(s.attempts), 0) FROM replay_job j LEFT JOIN replay_slice s USING (job_id)"
        f" WHERE j.job_id = '{job_id}' GROUP BY j.job_id",
    )
    return row[0], int(row[1]), int(row[2]), int(row[3])


def wait_for(project: str, job_id: str, at_least: float = 1.0) -> tuple[str, int, int, int]:
    """Until the job has processed ``at_least`` of its events (1.0: until it has ended)."""
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        state = progress(project, job_id)
        status, done, total, _ = state
        if at_least < 1.0 and total and done >= at_least * total and status not in ENDED:
            return state
        if status in ENDED:
            if at_least < 1.0:  # what was to interrupt it would come too late: no test at all
                raise StackError(f"job {job_id} ended before {at_least:.0%} could be seen")
            return state
        time.sleep(0.2)
    raise StackError(
        f"job {job_id} did not get there in {JOB_SECONDS} s: {progress(project, job_id)}"
    )


def completed(project: str, job_id: str) -> tuple[str, int, int, int]:
    state = wait_for(project, job_id)
    if state[0] != Status.COMPLETED:
        raise StackError(f"job {job_id} ended {state[0]}: {state}")
    verify(project)
    return state


def check(events_per_aggregate: int = 100, aggregates: int = 3000) -> dict[str, Any]:
    """What CI runs: see the module's docstring. The interrupted rebuilds are throttled
    (--max-rate), so that they run long enough to be interrupted at a third."""
    project = f"{PROJECT}-ci"
    fast = {
        "REPLAY_HEARTBEAT_SECONDS": "2", "REPLAY_STALE_SECONDS": "6",
        "REPLAY_RECONCILE_SECONDS": "3", "FLOWER_PORT": str(_free_port()),
    }  # fmt: skip
    report: dict[str, Any] = {}
    images()
    started = time.monotonic()
    with _stack(project, workers=2, **fast):
        report["up_seconds"] = round(time.monotonic() - started, 1)
        report["flower"] = flower_asks_for_a_password(project)
        replay(
            project, "seed", "--aggregates", str(aggregates),
            "--events-per-aggregate", str(events_per_aggregate),
        )  # fmt: skip
        report["rebuild"] = completed(
            project, submit(project, "--wait", "--timeout", str(JOB_SECONDS))
        )
        report["worker_killed"] = _interrupted(project, ("kill", container(project, "worker")))
        restart = ("restart", "-t", "2", container(project, "redis"))
        report["redis_restarted"] = _interrupted(project, restart)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report), flush=True)
    return report


def flower_asks_for_a_password(project: str) -> str:
    """Flower, on its published port (127.0.0.1 only), refuses a request without the password
    and shows its workers page with it."""
    settings = environment(project)
    url = f"http://127.0.0.1:{settings['FLOWER_PORT']}/workers"
    token = base64.b64encode(settings["FLOWER_BASIC_AUTH"].encode()).decode()
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            raise StackError(f"Flower answered {url} without a password")
        except urllib.error.HTTPError as refused:
            if refused.code != 401:
                raise StackError(f"Flower answered {refused.code} without a password") from None
            break
        except OSError:  # not listening yet
            if time.monotonic() > deadline:
                raise StackError(f"Flower does not answer at {url}") from None
            time.sleep(0.5)
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=5) as page:
        if page.status != 200 or b"Flower" not in page.read():
            raise StackError(f"Flower's {url} did not show with the password")
    return "401 without the password, 200 with it"


def _interrupted(project: str, podman: tuple[str, ...]) -> tuple[str, int, int, int]:
    """A throttled rebuild, ``podman`` run at a third of it, then it must complete exactly. A
    killed worker's slices must have run again (the reconciler re-dispatched them)."""
    job = submit(project, "--max-rate", str(INTERRUPTED_RATE))
    wait_for(project, job, at_least=0.3)
    run("podman", *podman)
    state = completed(project, job)
    (slices,) = sql(project, f"SELECT count(*) FROM replay_slice WHERE job_id = '{job}'")
    if podman[0] == "kill" and state[3] <= int(slices[0]):
        raise StackError(f"no slice of job {job} ran again after {podman[-1]} was killed")
    return state


@contextlib.contextmanager
def _stack(project: str, workers: int, **extra: str) -> Iterator[None]:
    """The stack up for a check, and down whatever happens (its logs printed on a failure)."""
    with contextlib.suppress(StackError):
        down(project)  # what a killed earlier run left
    before = podman_things()
    try:
        up(project, workers, **extra)
        yield
    except BaseException:
        for name in quiet("podman", "ps", "-a", "--format", "{{.Names}}").stdout.split():
            if name.startswith(f"{project}_"):
                logs = quiet("podman", "logs", "--tail", "30", name)
                print(f"--- {name}\n{logs.stdout}{logs.stderr}", file=sys.stderr)
        raise
    finally:
        try:
            down(project)
        except StackError as failed:
            if sys.exc_info()[1] is None:  # else the first failure is the one to report
                raise
            print(f"stack: {failed}", file=sys.stderr)
    left = podman_things() - before  # anonymous volumes too, which carry no compose label
    if left:
        raise StackError(f"left behind: {', '.join(sorted(left))}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench(
    runs: int = 3, aggregates: int = 10_000, sizes: tuple[int, ...] = (1, 3)
) -> list[dict[str, Any]]:
    """A full rebuild of 1,000,000 events with 1 worker container, then 3 (2 processes each),
    ``runs`` times each; medians by the jobs' own timestamps, each run checked against the
    fold."""
    project = f"{PROJECT}-bench"
    images()
    rows: list[dict[str, Any]] = []
    with _stack(project, workers=sizes[0], FLOWER_PORT=str(_free_port())):
        replay(project, "seed", "--aggregates", str(aggregates), "--events-per-aggregate", "100")
        for workers in sizes:
            scale(project, workers)
            seconds = []
            for _ in range(runs):
                job = submit(project, "--wait", "--timeout", str(JOB_SECONDS))
                completed(project, job)
                (row,) = sql(
                    project,
                    "SELECT extract(epoch FROM completed_at - created_at), total_events"
                    f" FROM replay_job WHERE job_id = '{job}'",
                )
                seconds.append(float(row[0]))
            median = statistics.median(seconds)
            rows.append({
                "worker_containers": workers, "processes": 2 * workers, "events": int(row[1]),
                "runs": runs, "median_seconds": round(median, 2),
                "events_per_second": round(int(row[1]) / median),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "bench" / "results" / "stack.json"
    out.write_text(
        json.dumps(
            {
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "cpus": os.cpu_count(),
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    return rows
