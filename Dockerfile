# event-replay: one image for the worker, the scheduler (beat), Flower and the `replay` CLI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin replay

# Install the distribution (runtime dependencies only, no dev extras), then drop the sources so
# the installed package is the only copy on the path.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY worker ./worker
COPY scheduler ./scheduler
COPY local ./local
COPY examples ./examples
COPY bench ./bench
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /home/replay
# Flower's task history (compose mounts a volume here; a new volume takes this owner).
RUN mkdir /home/replay/flower && chown replay:replay /home/replay/flower
USER replay

# Celery does a warm shutdown on SIGTERM: it stops taking tasks and finishes the running ones.
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "worker", "worker", "-Q", "replay", "--loglevel", "INFO"]
