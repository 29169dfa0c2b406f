# syntax=docker/dockerfile:1
# Index Builder's image: `index-builder serve` by default; the same image runs the job
# worker (`index-builder worker`), the scheduler and one-off commands.
#   docker build -t index-builder:0.1.0 .
# Three stages: the dashboard's chart library (npm ci, as the Makefile's JS_STAMP does),
# the Python environment (with the PostgreSQL catalog and gs:// extras), and a slim
# runtime holding only those two, run as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- 1. the dashboard's JavaScript: plotly.js's partial bundle (package-lock.json pins it)
FROM ${NODE_IMAGE} AS js
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# ---- 2. the Python environment in /app/.venv, the package installed from /app/src
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /app/.venv
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# editable: the package stays at /app/src, so the dashboard finds the bundle of stage 1
# in /app/node_modules (api/dashboard.py: NPM_BUNDLE, three folders above the package)
RUN /app/.venv/bin/pip install --editable '.[postgres,gcs]' \
    && /app/.venv/bin/index-builder --version

# ---- 3. the runtime
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 indexbuilder \
    && useradd --system --uid 10001 --gid indexbuilder --home-dir /app \
       --shell /usr/sbin/nologin indexbuilder \
    && mkdir -p /data /exports && chown indexbuilder:indexbuilder /data /exports
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/src /app/src
COPY --from=js /app/node_modules/plotly.js-basic-dist-min /app/node_modules/plotly.js-basic-dist-min
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INDEX_BUILDER_API_HOST=0.0.0.0 \
    INDEX_BUILDER_API_PORT=8000 \
    INDEX_BUILDER_DATABASE=/data/index_builder.duckdb \
    INDEX_BUILDER_EXPORT_DIR=/exports \
    INDEX_BUILDER_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8000
# liveness of the API process (a worker or scheduler container turns it off)
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('INDEX_BUILDER_API_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=4).status != 200)"]
CMD ["index-builder", "serve"]
