"""The benchmarks: ``replay bench`` (``replay_bench``), ``replay bench-live`` (``live_latency``)
and ``replay bench-aggregate`` (``aggregate_load``); their last results are in ``results/``.

Their verbs are declared in ``commands`` and reach the ``replay`` command through the entry point
group ``event_replay.commands`` (pyproject.toml): this package imports the scheduler, never the
other way round.
"""
