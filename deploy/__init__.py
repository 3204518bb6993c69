"""The compose stack (docker-compose.yml) run for real on podman, on a machine with no image
registry: ``scripts/stack`` runs ``python -m deploy``.

    scripts/stack images              build the images here (a Debian base by debootstrap)
    scripts/stack up [--workers N]    the stack up: PostgreSQL, Redis, migrate, N worker
                                      containers, the live worker, the scheduler, Flower
    scripts/stack replay ARGS...      the `replay` CLI in a container on the stack's network
    scripts/stack down                everything removed: containers, pod, network, volumes
    scripts/stack check               CI: images, up, a rebuild checked against an independent
                                      fold, then a worker container killed and Redis restarted
                                      mid-job, each checked again; down, nothing left
    scripts/stack bench               1,000,000 events rebuilt with 1 worker container, then 3

Every container is a host of its own on the stack's bridge network (podman-compose
``--in-pod false``); only Flower publishes a port, on 127.0.0.1. The images:
localhost/debian-base:bookworm (debootstrap --variant=minbase from the Debian mirror apt uses),
and on it event-replay (Debian's Python 3.11; the project's dependencies from a wheelhouse
made here, so the build downloads nothing from PyPI), event-replay-postgres (PostgreSQL 15)
and event-replay-redis (Redis 7), from Debian's packages. REPLAY_STACK_IMAGES=registry keeps
compose's own image names (python:3.11-slim, postgres:16, redis:7) for a machine that can pull.
"""
