"""Flower's configuration for event-replay (``replay flower``; ``celery -A worker flower
--conf=scheduler/flowerconfig.py``; docker-compose's ``flower``).

Flower reads this file after its ``FLOWER_*`` environment variables and before its command line:
so whatever may be chosen per deployment is read from the environment here, and ``--port``,
``--address`` on the command line still win.

* The task list shows what a replay is doing: a slice task's arguments are its label (``slice 3
  of 8 · 12,500 events · aggregates … · job <id>``, found by searching the job id), and its
  result, while it runs, its progress (``1,500/12,500 events (12%) · 3,400 events/s · ETA 3
  s``; state PROGRESS); a slice that failed is FAILURE with its error line.
* Authentication is required: Flower refuses to start without ``FLOWER_BASIC_AUTH`` (or OAuth,
  ``FLOWER_AUTH``): it shows task arguments, results and tracebacks and can revoke tasks. With
  it, the HTTP API (``/api/...``) takes the same credentials.
* Task history persists across restarts (``FLOWER_DB``, default ``.replay/flower.db``).
"""

import os
import sys

if not (os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH")):
    sys.exit(
        "event-replay: Flower needs a password: set FLOWER_BASIC_AUTH=user:password"
        " (it shows task arguments and results, and can revoke tasks)"
    )

address = os.environ.get("FLOWER_ADDRESS", "127.0.0.1")
port = int(os.environ.get("FLOWER_PORT", "5555"))
# A slice's args are its label and its result its progress: they come first.
tasks_columns = "name,state,args,result,received,runtime,worker,uuid"
persistent = True
db = os.environ.get("FLOWER_DB", os.path.join(".replay", "flower.db"))
os.makedirs(os.path.dirname(db) or ".", exist_ok=True)
# Saved every 30 s as well as on a clean stop: a killed Flower loses at most that much history.
state_save_interval = 30_000
