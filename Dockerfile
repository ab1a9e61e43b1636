# syntax=docker/dockerfile:1
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Build a wheel of the service and of every dependency.
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime: the wheels only, a non-root user, no build tools or caches.
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PORT=8000 \
    WEB_CONCURRENCY=2 \
    ASGILOOK_STORAGE_PATH=/var/lib/asgilook
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels asgilook \
    && useradd --system --uid 10001 --home-dir /var/lib/asgilook --create-home asgilook
USER 10001
WORKDIR /var/lib/asgilook
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/images?limit=1', timeout=2)"]
CMD ["sh", "-c", "exec uvicorn service.asgi:app --host 0.0.0.0 --port \"$PORT\" --workers \"$WEB_CONCURRENCY\" --proxy-headers --forwarded-allow-ips='*'"]
