# syntax=docker/dockerfile:1
# One image for all four Accord services; compose.yaml (or Kubernetes) picks the entry point:
# `python -m accord_<svc> [serve|migrate]`.

FROM python:3.11-slim AS builder

# Bytecode is compiled here because the runtime user cannot write next to the sources; copy
# mode because the uv cache is a separate mount; never fetch a Python, use the image's.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv

WORKDIR /app

# Third-party dependencies first, from the lock and the member manifests only, so editing
# source does not reinstall them.
COPY pyproject.toml uv.lock ./
COPY libs/accord-api/pyproject.toml libs/accord-api/
COPY libs/accord-kit/pyproject.toml libs/accord-kit/
COPY services/orchestrator/pyproject.toml services/orchestrator/
COPY services/policy/pyproject.toml services/policy/
COPY services/executor/pyproject.toml services/executor/
COPY services/audit/pyproject.toml services/audit/
COPY cli/pyproject.toml cli/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-install-workspace

# Then the workspace members themselves.
COPY libs libs
COPY services services
COPY cli cli
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages


FROM python:3.11-slim AS runtime

# Debian's Chromium for browser jobs (Playwright drives it through executable_path); fonts so
# pages render text; CA certificates for HTTPS jobs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-liberation ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Chromium wants a writable home for its profile and crash reports.
RUN groupadd --system --gid 10001 accord \
    && useradd --system --uid 10001 --gid accord --create-home --home-dir /home/accord \
        --shell /usr/sbin/nologin accord

WORKDIR /app
# The venv holds editable installs that point at /app/<member>/src, so both keep their paths.
# Owned by root: the service user can read and run the code but not change it.
COPY --from=builder /app /app

ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ACCORD_EXECUTOR_BROWSER_EXECUTABLE=/usr/bin/chromium

USER accord

# gRPC 50051-50054 and metrics 9451-9454 (orchestrator, policy, executor, audit).
EXPOSE 50051 50052 50053 50054 9451 9452 9453 9454
