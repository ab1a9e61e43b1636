# syntax=docker/dockerfile:1
# ASGILook: `docker build -t asgilook .` then see infra/README.md.
# BASE_IMAGE must provide python3 (3.11+) with venv; CI substitutes a Debian made with debootstrap.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Build: wheels of the service and its dependencies, installed into a virtual environment.
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/asgilook
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/asgilook/bin/pip wheel --wheel-dir /wheels . \
    && /opt/asgilook/bin/pip install --no-index --find-links /wheels asgilook \
    && /opt/asgilook/bin/pip uninstall --yes pip

# Runtime: the virtual environment only; no compiler, pip, wheels or caches.
FROM ${BASE_IMAGE}
ENV PATH=/opt/asgilook/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    # Image work fragments glibc's per-thread arenas; two keep RSS flat, and blocks over 1 MiB
    # (decoded images, source JPEGs) are mapped, so freeing them returns them to the system:
    # about 25 MB less per worker under thumbnail misses, for about 6 % of their throughput and
    # 15 ms more per upload (bench/RESULTS.md).
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=1048576 \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000 \
    UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN=25 \
    UVICORN_HTTP=service.http.protocol:HttpProtocol \
    WEB_CONCURRENCY=2 \
    FORWARDED_ALLOW_IPS=127.0.0.1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/asgilook-metrics \
    ASGILOOK_STORAGE_PATH=/var/lib/asgilook
COPY --from=build /opt/asgilook /opt/asgilook
COPY infra/docker-entrypoint.sh /usr/local/bin/asgilook-entrypoint
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/asgilook --create-home asgilook
USER 10001:10001
WORKDIR /var/lib/asgilook
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['UVICORN_PORT'] + '/healthz', timeout=2)"]
ENTRYPOINT ["asgilook-entrypoint"]
CMD ["uvicorn", "service.asgi:app", "--proxy-headers", "--no-access-log"]
