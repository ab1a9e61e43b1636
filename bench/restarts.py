"""Requests on new connections through SIGHUP restarts: `python bench/restarts.py [RESTARTS]`.

For each HTTP protocol (uvicorn's httptools, then the service's `service.http.protocol`), runs
the service with 2 workers on the embedded store, 6 client threads each opening a new connection
per GET /healthz, and restarts every worker RESTARTS times in a row (SIGHUP to the master, each
restart complete before the next). Prints the requests answered and those that failed: a
connection a retiring worker had accepted but not yet read is reset by uvicorn's protocol.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import Server  # noqa: E402
from tests.servers import HTTP_PROTOCOL, wait_until  # noqa: E402
from tests.test_restarts import worker_pids  # noqa: E402

CLIENTS = 6


def restarted(protocol: str, restarts: int, directory: Path) -> tuple[int, list[str]]:
    """Answered requests and failures, through `restarts` restarts with `protocol`."""
    # NOTE: a long healthcheck timeout: a replacement's startup, on a host this loaded.
    master = Server(
        "uvicorn",
        [sys.executable, "-m", "uvicorn", "service.asgi:app", "--app-dir", str(REPO),
         "--port", "{port}", "--workers", "2", "--http", protocol, "--log-level", "warning"],
        {"ASGILOOK_STORAGE_PATH": str(directory / "data"), "ASGILOOK_LOG_LEVEL": "WARNING",
         "UVICORN_TIMEOUT_WORKER_HEALTHCHECK": "20"},
        directory,
    )  # fmt: skip
    url = f"{master.url}/healthz"
    answered, failures, stop = [0], [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                with httpx.Client(timeout=10) as http:  # a new connection per request
                    answered[0] += http.get(url).status_code == 200
            except httpx.HTTPError as error:
                failures.append(repr(error))

    try:
        master.wait("/healthz")
        pid = master.process.pid
        wait_until(lambda: len(worker_pids(pid)) == 2, 60, "2 workers")
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for _ in range(restarts):
            old = worker_pids(pid)
            master.process.send_signal(signal.SIGHUP)
            wait_until(lambda old=old: retired(pid, old), 60, "new workers")
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        stop.set()
        master.stop()
    return answered[0], failures


def retired(master: int, old: set[int]) -> bool:
    """The restart is complete: two workers, none of them an old one."""
    workers = worker_pids(master)
    return len(workers) == 2 and not workers & old


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("restarts", type=int, nargs="?", default=15)
    args = parser.parse_args()
    for protocol in ["httptools", HTTP_PROTOCOL]:
        with tempfile.TemporaryDirectory() as directory:
            answered, failures = restarted(protocol, args.restarts, Path(directory))
        print(f"{protocol}: {args.restarts} restarts, {answered} answered, "
              f"{len(failures)} failed {failures[:3]}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
