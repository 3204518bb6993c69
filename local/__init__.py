"""Running this project on one machine: the servers and processes a developer, the demo, the
benchmarks and the tests start for themselves.

* ``servers``: which PostgreSQL, Redis and Kafka a command uses (environment, local, else
  embedded; a command starts no Kafka broker, it only finds the one ``replay up`` runs);
* ``kafka``: the embedded Kafka broker (tansu, in memory) of ``event-replay[kafka]``;
* ``embedded``: the embedded PostgreSQL and Redis of ``event-replay[embedded]``, shared by every
  command and stopped when the last one ends (``launcher`` starts them, ``programs`` finds and
  runs their binaries, ``stackfile`` remembers them, ``credentials`` holds their secret);
* ``pids``: processes we started, and signals that reach only them;
* ``workers``: real ``celery worker`` processes started and stopped for the demo and benchmarks.

Only entry points import this package (the ``replay`` command, the Celery app, the benchmarks);
the library in ``shared`` never does: a deployment runs its own servers and workers.
"""
