"""The Order example domain: an online shop's orders as events, and what reads them.

* ``events``: what a well-formed Order event is (one definition for every reader);
* ``handlers``: ``order_summary`` and ``order_notifications`` (their tables are a contract:
  DESIGN.md);
* ``reducer``: the Order reducer of ``load_aggregate`` (and its snapshots);
* ``seed``: synthetic orders for demos, tests and benchmarks;
* ``verify``: an independent fold of the events into what ``order_summary`` should hold.

The handler registry imports this package by name, as it imports a user's module
(``shared.handlers.BUILTIN_MODULES``): importing it declares the handlers and the reducer.
"""

from examples.orders import handlers, reducer

__all__ = ["handlers", "reducer"]
