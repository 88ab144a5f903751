# syntax=docker/dockerfile:1
# gatewatch sidecar image.
#   - slim Debian base, two stages: nothing of the build (pip cache, wheels) in the image
#   - runtime dependencies pinned by requirements.lock (scripts/lock-deps.sh regenerates it)
#   - runs as an unprivileged user and writes only to $GATEWATCH_STATE_DIR (a volume) and
#     /tmp, so it runs with a read-only root filesystem
#   - tini is PID 1: it forwards SIGTERM to gatewatch (graceful drain) and reaps zombies
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/gatewatch
WORKDIR /src
COPY requirements.lock ./
# --no-deps: the lock is the complete set; `pip check` below proves it is consistent
RUN /opt/gatewatch/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml setup.py README.md ./
COPY agent ./agent
# the default rule pack: setup.py maps it into the package (agent/default_rules), as for any `pip install .`
COPY rules ./rules
RUN /opt/gatewatch/bin/pip install --no-deps . \
    && /opt/gatewatch/bin/pip check \
    && /opt/gatewatch/bin/python -m compileall -q /opt/gatewatch/lib

FROM ${PYTHON_IMAGE}
ARG TINI_VERSION=0.19.0-1+b3
RUN apt-get update \
    && apt-get install -y --no-install-recommends "tini=${TINI_VERSION}" \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 gatewatch \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin gatewatch \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/gatewatch
COPY --from=build /opt/gatewatch /opt/gatewatch
ENV PATH=/opt/gatewatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWATCH_STATE_DIR=/var/lib/gatewatch
WORKDIR /var/lib/gatewatch
# ECS copies the owner and mode of a VOLUME path into a bind mount at that path, so the
# non-root user can write its state and /tmp even on Fargate with a read-only root.
VOLUME ["/var/lib/gatewatch", "/tmp"]
USER 10001:10001
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "gatewatch"]
CMD ["run"]
