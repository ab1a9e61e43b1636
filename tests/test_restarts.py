"""Restarting every worker of one host under steady load: SIGHUP to uvicorn's master process.

With `--workers` 2 or more, uvicorn (0.51 and later) answers SIGHUP by replacing its workers one
at a time: it starts the replacement, waits until its lifespan startup is complete, and only then
sends the old worker SIGTERM, which stops accepting, closes its idle keep-alive connections and
lets the requests in flight finish. Every worker accepts from the one listening socket the master
bound, so a connection waiting to be accepted goes to whichever worker accepts next.

The load is what real clients send: keep-alive clients (an `httpx.Client` per thread, its pooled
connection reused) and clients opening a new connection per request; GETs of the listing, of an
image, of a thumbnail and of /healthz, and uploads.

Retries: when the retiring worker closes an idle keep-alive connection, a request the client
sent on it at that very moment (not yet read by the worker) gets a reset or an EOF instead of a
response. Every HTTP/1.1 server that closes an idle persistent connection has this race (RFC 9112
section 9.3.1: connections can be closed at any time, and clients ought to recover); uvicorn has
no setting that avoids it. Browsers and curl recover by resending, on a new connection, any
request whose reused connection broke before any response header arrived, POST included
(Chromium's HttpNetworkTransaction::ShouldResendRequest, Firefox's nsHttpTransaction, curl's
Curl_retry_request): such a request was never read, which RFC 9110 section 9.2.2 accepts as a
reason to resend a non-idempotent one (and the listing check below would see a duplicate upload).
These clients do the same, once, in that case only (RETRY_ON_REUSED_CONNECTION): a request on a
new connection, a timeout, or a failure after response headers is never resent. Without it, 2 of
30 runs of this test saw one such failure (a GET); under a saturating load, 17 of 72,500 requests
failed that way (5 of them POSTs); with it, none of 45 runs (91,000 requests) failed.

A request on a new connection, accepted by the retiring worker but not yet read as it stopped,
is answered: uvicorn's own protocol reset it (once in a CI run), the service's (http.protocol,
which the container and these servers run) does not; the last test shows it deterministically.
"""

from __future__ import annotations

import itertools
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.access import keys

from . import samples
from .servers import MotoS3, Uvicorn, wait_until

pytestmark = pytest.mark.slow

WARM_UP = 1.0  # seconds of load before the SIGHUP
AFTER = 1.5  # seconds of load once every worker is replaced
PAUSE = 0.01  # seconds each client waits between two of its requests
MAX_REQUESTS = 1500  # per client thread: the load is bounded even if the restart hangs
MAX_UPLOADS = 150  # per uploading thread
EXPECTED = {"GET": {200}, "POST": {201}}
KEEP_ALIVE_CLIENTS = 3
RETRY_ON_REUSED_CONNECTION = True  # as browsers and curl do: see the module's docstring
KEY = keys.new_key()  # uploads need one (against a bucket, the service refuses to start without)
AUTHORIZED = {"Authorization": f"Bearer {KEY}"}


@dataclass(frozen=True)
class Outcome:
    at: float
    method: str
    path: str
    status: int | None  # None: no response at all
    error: str | None
    reused: bool  # sent on a keep-alive connection that had already served a request
    resendable: bool = False  # reused, and it broke before any response header arrived

    @property
    def failed(self) -> bool:
        return self.status not in EXPECTED[self.method]

    def __str__(self) -> str:
        connection = "reused connection" if self.reused else "new connection"
        answer = self.error or f"status {self.status}"
        return f"{self.method} {self.path} on a {connection}: {answer}"


class Load:
    """Client threads sending requests until stopped (or MAX_REQUESTS each), every outcome kept."""

    def __init__(self, url: str, image: dict[str, Any]) -> None:
        self.url = url
        self.reads = ["/images", image["image"], image["thumbnails"][-1], "/healthz"]
        self.upload = samples.jpeg((256, 256))
        self.outcomes: list[Outcome] = []
        self.resent: list[Outcome] = []  # first attempts that failed and were sent again
        self.created: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._keep_alive_reads, args=(0,)),
            threading.Thread(target=self._keep_alive_reads, args=(1,)),
            threading.Thread(target=self._keep_alive_uploads),
            threading.Thread(target=self._new_connections),
        ]  # KEEP_ALIVE_CLIENTS of them keep a connection

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTHORIZED, timeout=10)

    def _send(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> None:
        outcome = self._attempt(client, method, path, **kwargs)
        if outcome.resendable and RETRY_ON_REUSED_CONNECTION:
            self.resent.append(outcome)
            outcome = self._attempt(client, method, path, **kwargs)
        self.outcomes.append(outcome)

    def _attempt(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> Outcome:
        events: list[str] = []
        trace = {"trace": lambda event, info: events.append(event)}
        try:
            response = client.request(method, path, extensions=trace, **kwargs)
        except httpx.HTTPError as error:
            reused = "connection.connect_tcp.started" not in events
            headers = "http11.receive_response_headers.complete" in events
            broken = isinstance(error, httpx.NetworkError | httpx.RemoteProtocolError)
            resendable = reused and not headers and broken
            return Outcome(time.monotonic(), method, path, None, repr(error), reused, resendable)
        if method == "POST" and response.status_code == 201:
            self.created.append(response.json())
        reused = "connection.connect_tcp.started" not in events
        return Outcome(time.monotonic(), method, path, response.status_code, None, reused)

    def _running(self, count: int) -> bool:
        return count < MAX_REQUESTS and not self._stop.wait(PAUSE)

    def _keep_alive_reads(self, offset: int) -> None:
        with self._client() as client:
            for count in itertools.count():
                if not self._running(count):
                    return
                self._send(client, "GET", self.reads[(count + offset) % len(self.reads)])

    def _keep_alive_uploads(self) -> None:
        with self._client() as client:
            for count in range(MAX_UPLOADS):
                if not self._running(count) or self._stop.wait(PAUSE * 4):
                    return
                self._send(client, "POST", "/images", content=self.upload)

    def _new_connections(self) -> None:
        uploads = 0
        for count in itertools.count():
            if not self._running(count):
                return
            with self._client() as client:  # a connection of its own for this request
                if count % 5 == 4 and uploads < MAX_UPLOADS:
                    uploads += 1
                    self._send(client, "POST", "/images", content=self.upload)
                else:
                    self._send(client, "GET", self.reads[count % len(self.reads)])


def worker_pids(master: int) -> set[int]:
    """The uvicorn workers: children of the master started by multiprocessing's spawn_main
    (its other child is multiprocessing's resource tracker)."""
    pids = set()
    for children in Path(f"/proc/{master}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:  # exited meanwhile
                continue
            if b"spawn_main" in command:
                pids.add(int(pid))
    return pids


@pytest.fixture(params=["embedded", "s3+redis"])
def environment(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    common = {
        "ASGILOOK_API_KEYS": keys.entry("load", "uploader", KEY),
        # The load is of a restart, not of the quotas: no rate limit (empty).
        "ASGILOOK_RATE_LIMIT_UPLOADS": "",
        "ASGILOOK_RATE_LIMIT_RENDERS": "",
        # A replacement not ready within this aborts the restart; the default, 5 s, is too short
        # for a busy CI host (workers under coverage, and this load).
        "UVICORN_TIMEOUT_WORKER_HEALTHCHECK": "20",
    }
    if request.param == "embedded":
        return common | {"ASGILOOK_STORAGE_PATH": str(tmp_path / "data")}
    moto: MotoS3 = request.getfixturevalue("moto")
    return common | {
        "ASGILOOK_S3_BUCKET": request.getfixturevalue("bucket"),
        "ASGILOOK_S3_ENDPOINT_URL": moto.url,
        "ASGILOOK_REDIS_URL": request.getfixturevalue("redis_url"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


@pytest.fixture
def server(environment: dict[str, str]) -> Iterator[Uvicorn]:
    server = Uvicorn(environment, workers=2).start()
    try:
        yield server
    finally:
        server.close()


def logged(server: Uvicorn, text: str) -> int:
    return server.output().count(text)


def test_sighup_restarts_every_worker_under_load_without_a_failed_request(
    server: Uvicorn,
) -> None:
    assert server.process is not None
    master = server.process.pid
    wait_until(lambda: logged(server, "Application startup complete") == 2, what="2 workers")
    old = worker_pids(master)
    assert len(old) == 2
    with httpx.Client(base_url=server.url) as http:
        image = http.post("/images", content=samples.jpeg((256, 256)), headers=AUTHORIZED).json()

    with Load(server.url, image) as load:
        time.sleep(WARM_UP)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: len(worker_pids(master) - old) == 2 == len(worker_pids(master)),
                   timeout=30, what="2 new workers")  # fmt: skip
        replaced = time.monotonic()
        time.sleep(AFTER)

    outcomes = load.outcomes
    failures = [outcome for outcome in outcomes if outcome.failed]
    during = [outcome for outcome in outcomes if signalled <= outcome.at <= replaced]
    summary = (
        f"{len(failures)} of {len(outcomes)} requests failed ({len(during)} during the "
        f"{replaced - signalled:.1f} s restart; {len(load.resent)} resent): "
        + "; ".join(map(str, failures[:5]))
    )
    assert not failures, summary
    # Resent: only requests caught on a keep-alive connection as its worker retired (each
    # retirement closes at most the one connection of each keep-alive client).
    assert all(signalled <= outcome.at <= replaced for outcome in load.resent), load.resent
    assert len(load.resent) <= 2 * KEEP_ALIVE_CLIENTS, load.resent
    # The load ran all along: before, through and after the restart, on both kinds of connection.
    assert min(outcome.at for outcome in outcomes) < signalled
    assert len(during) > 50, summary
    assert max(outcome.at for outcome in outcomes) > replaced + AFTER / 2, summary
    assert {outcome.reused for outcome in during} == {True, False}
    assert {outcome.method for outcome in during} == {"GET", "POST"}

    # The master stayed (running, the parent of both new workers); each old worker was retired
    # once its replacement's startup was complete.
    assert server.process.poll() is None
    assert len(worker_pids(master)) == 2 and not worker_pids(master) & old
    assert logged(server, "Received SIGHUP, restarting processes.") == 1
    after_sighup = server.output().split("Received SIGHUP, restarting processes.")[1]
    steps = re.findall(
        r"Application startup complete|Terminated child process \[(\d+)\]", after_sighup
    )
    assert steps[0::2] == ["", ""], after_sighup  # "": a replacement's startup is complete
    assert {int(pid) for pid in steps[1::2]} == old and len(steps) == 4, after_sighup

    # Every acknowledged upload is listed, by either new worker (new connections spread).
    acknowledged = {image["id"]} | {created["id"] for created in load.created}
    assert len(load.created) > 10
    for _ in range(6):
        with httpx.Client(base_url=server.url) as http:
            listing = http.get("/images", params={"limit": 1000})
        assert listing.status_code == 200
        assert {entry["id"] for entry in listing.json()} == acknowledged


def test_a_retiring_worker_answers_the_connection_it_accepted_last(tmp_path: Path) -> None:
    """A connection accepted just before the worker stops, its request not read yet, gets its
    answer (then the connection closes); a connection that sends nothing is closed after a
    grace, and the worker exits. uvicorn's own protocol resets the first (issue #2757)."""
    server = Uvicorn({"ASGILOOK_STORAGE_PATH": str(tmp_path / "data")}).start()
    try:
        assert server.process is not None
        late = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        # Answered on a connection opened after both: the worker has accepted them (in order).
        assert httpx.get(f"{server.url}/healthz").status_code == 200

        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "Shutting down" in server.output(), what="the worker's shutdown")
        late.sendall(b"GET /healthz HTTP/1.1\r\nHost: asgilook\r\n\r\n")
        answer = late.makefile("rb").read()  # to the end: the worker closes the connection

        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert b"\r\nconnection: close\r\n" in answer.lower(), answer
        assert idle.recv(1) == b""  # closed, without an answer: it asked for nothing
        server.process.wait(15)  # uvicorn ends by raising the signal it caught again
        assert "Application shutdown complete" in server.output()
    finally:
        late.close()
        idle.close()
        server.close()
