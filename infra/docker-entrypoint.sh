#!/bin/sh
# Start the command with an empty Prometheus multiprocess directory: files left by an earlier
# run would be added to this run's metrics.
set -eu
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    rm -rf "$PROMETHEUS_MULTIPROC_DIR"
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
exec "$@"
