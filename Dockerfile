# event-replay: one image for the worker, the scheduler (beat), Flower and the `replay` CLI.
#
# BASE_IMAGE: any Debian-like image. The default is the official Python image (Docker Hub);
# where no registry is reachable, scripts/stack builds localhost/debian-base:bookworm with
# debootstrap and passes it here, and this file installs Debian's Python 3.11 on it.
# Dependencies come from PyPI, or, when the build mounts a wheelhouse at /wheelhouse
# (scripts/stack: `podman build -v <wheels>:/wheelhouse`), from it alone.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/replay/bin:$PATH

RUN if ! command -v python3 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/replay \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin replay

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
RUN if [ -d /wheelhouse ]; then \
        ls /wheelhouse/*.whl >/dev/null || { echo "/wheelhouse holds no wheel" >&2; exit 1; }; \
        pip install --no-index --find-links /wheelhouse .; \
    else \
        pip install .; \
    fi \
    && rm -rf /src

WORKDIR /home/replay
# Flower's task history (compose mounts a volume here; a new volume takes this owner).
RUN mkdir /home/replay/flower && chown replay:replay /home/replay/flower
USER replay

# Celery does a warm shutdown on SIGTERM: it stops taking tasks and finishes the running ones.
STOPSIGNAL SIGTERM
CMD ["celery", "-A", "worker", "worker", "-Q", "replay", "--loglevel", "INFO"]
