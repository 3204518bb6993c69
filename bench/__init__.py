"""The benchmarks: ``replay bench`` (``replay_bench``), ``replay bench-live`` (``live_latency``),
``replay bench-aggregate`` (``aggregate_load``) and ``replay bench-kafka`` (``kafka_bench``, its
topic in ``kafka_topic``); their last results are in ``results/``.

Their verbs are declared in ``commands`` and reach the ``replay`` command through the entry point
group ``event_replay.commands`` (pyproject.toml): this package imports the scheduler, never the
other way round.
"""
