"""Live events over Server-Sent Events: image.created and image.deleted, with ids to resume
from, on both deployments; several workers agree, and shutdown does not wait for clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import falcon.testing
import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.app import create_app
from service.settings import Settings

from . import samples
from .servers import RedisServer, Uvicorn


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[falcon.testing.ASGIConductor]:
    """The app, with heartbeats often enough that a closed stream ends at once."""
    quick = Settings(**{**settings.model_dump(), "event_heartbeat": 0.2}, _env_file=None)
    async with falcon.testing.ASGIConductor(create_app(quick)) as conductor:
        yield conductor


class Events:
    """An /events stream read as a client does: SSE fields, event by event."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer = ""

    async def next(self, timeout: float = 5.0) -> dict[str, str]:
        async with asyncio.timeout(timeout):
            while "\n\n" not in self._buffer:
                chunk = await self._stream.read()
                if not chunk:
                    await asyncio.sleep(0.01)
                self._buffer += chunk.decode()
        block, self._buffer = self._buffer.split("\n\n", 1)
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.strip()
        return fields

    async def next_event(self, timeout: float = 5.0) -> dict[str, str]:
        """The next message with an event, heartbeats skipped."""
        while "event" not in (message := await self.next(timeout)):
            pass
        return message


async def test_uploads_and_deletes_are_published_with_ids_to_resume_from(
    client: falcon.testing.ASGIConductor,
) -> None:
    async with client.simulate_get_stream("/events") as result:
        assert result.headers["Content-Type"].startswith("text/event-stream")
        assert result.headers["Cache-Control"] == "no-cache"
        assert result.headers["X-Accel-Buffering"] == "no"
        events = Events(result.stream)
        assert (await events.next())["retry"] == "3000"  # at once, before any event

        created = (await client.simulate_post("/images", body=samples.jpeg((256, 192)))).json
        message = await events.next_event()
        assert message["event"] == "image.created"
        assert json.loads(message["data"]) == created
        assert (await client.simulate_get("/images")).json == [created]  # as the listing has it
        first_id = message["id"]

        assert (await client.simulate_delete(created["image"])).status_code == 204
        message = await events.next_event()
        assert message["event"] == "image.deleted"
        assert json.loads(message["data"]) == {"id": created["id"]}
        second_id = message["id"]
        assert second_id != first_id

        metrics = (await client.simulate_get("/metrics")).text
        assert re.search(r"^asgilook_event_subscribers \d", metrics, re.MULTILINE)

    # A client coming back gets exactly what it missed, then the live feed.
    async with client.simulate_get_stream("/events", headers={"Last-Event-ID": first_id}) as result:
        events = Events(result.stream)
        missed = await events.next_event()
        assert (missed["event"], missed["id"]) == ("image.deleted", second_id)
        again = (await client.simulate_post("/images", body=samples.jpeg((128, 96)))).json
        live = await events.next_event()
        assert (live["event"], json.loads(live["data"])["id"]) == ("image.created", again["id"])


@pytest.mark.parametrize("last_event_id", ["0-1", "garbage", "1"])
async def test_an_id_older_than_the_history_is_told_to_reload(
    client: falcon.testing.ASGIConductor, settings: Any, last_event_id: str
) -> None:
    for _ in range(3):
        await client.simulate_post("/images", body=samples.jpeg((64, 64)))
    headers = {"Last-Event-ID": last_event_id}
    async with client.simulate_get_stream("/events", headers=headers) as result:
        message = await Events(result.stream).next_event()
    if last_event_id == "1" and settings.redis_url is None:
        # The embedded log's ids count from 1: after event 1 come the two others.
        assert message["event"] == "image.created"
    else:
        assert message["event"] == "reset"


def _sse_reader(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
    return connection


def _read_until(connection: socket.socket, needle: bytes, seconds: float = 10) -> bytes:
    received = b""
    deadline = time.monotonic() + seconds
    while needle not in received and time.monotonic() < deadline:
        received += connection.recv(65536)
    return received


@pytest.mark.slow
@pytest.mark.parametrize("with_redis", [False, True])
def test_every_subscriber_of_every_worker_sees_every_event_and_shutdown_does_not_wait(
    tmp_path: Path, request: pytest.FixtureRequest, with_redis: bool
) -> None:
    environment = {"ASGILOOK_STORAGE_PATH": str(tmp_path / "data"), "ASGILOOK_EVENT_HEARTBEAT": "1"}
    if with_redis:
        environment["ASGILOOK_REDIS_URL"] = request.getfixturevalue("redis_url")
    server = Uvicorn(environment, workers=2).start()
    with contextlib.ExitStack() as closing:
        closing.callback(server.close)
        readers = [_sse_reader(server.port) for _ in range(12)]  # new connections: both workers
        for reader in readers:
            assert b"retry: 3000" in _read_until(reader, b"retry:")
        url = f"ws://127.0.0.1:{server.port}/events/ws"
        sockets = [closing.enter_context(connect(url)) for _ in range(6)]
        time.sleep(0.3)
        uploaded = []
        for _ in range(3):
            with httpx.Client(base_url=server.url) as http:
                uploaded.append(http.post("/images", content=samples.jpeg((64, 64))).json()["id"])
        for reader in readers:
            received = _read_until(reader, uploaded[-1].encode())
            positions = [received.find(image_id.encode()) for image_id in uploaded]
            assert all(position > 0 for position in positions), received[-500:]
            assert positions == sorted(positions)  # in order
        for feed in sockets:
            received = [json.loads(feed.recv(timeout=10))["data"]["id"] for _ in uploaded]
            assert received == uploaded
        # SIGTERM with every subscriber connected: the streams end, the server stops.
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(15)
        assert time.monotonic() - started < 5, "shutdown waited for the event streams"
        for reader in readers:
            reader.close()
        for feed in sockets:
            with pytest.raises(ConnectionClosed) as closed:
                feed.recv(timeout=5)
            # NOTE: going away (ours), or service restart (uvicorn's, when it closes first).
            assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)


def _resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_a_thousand_idle_subscribers_cost_little_memory(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2500:  # the server, a child, inherits it
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    server = Uvicorn({"ASGILOOK_STORAGE_PATH": str(tmp_path / "data")}).start()
    readers: list[socket.socket] = []
    try:
        with _sse_reader(server.port) as first:  # the path warmed once
            _read_until(first, b"retry:")
        assert server.process is not None
        before = _resident_bytes(server.process.pid)
        for _ in range(1000):
            readers.append(_sse_reader(server.port))
        for reader in readers:
            assert b"retry:" in _read_until(reader, b"retry:")
        metrics = httpx.get(f"{server.url}/metrics").text
        connected = float(re.search(r"^asgilook_event_subscribers (\S+)", metrics, re.M).group(1))  # type: ignore[union-attr]
        assert connected >= 1000
        growth = _resident_bytes(server.process.pid) - before
        each = growth / 1000 / 1024
        print(f"1,000 idle subscribers: +{growth / 2**20:.1f} MiB ({each:.1f} KiB each)")
        assert growth < 48 * 2**20, f"{growth / 2**20:.0f} MiB for 1,000 idle subscribers"
    finally:
        for reader in readers:
            reader.close()
        server.close()


async def test_a_subscriber_that_does_not_read_is_dropped_at_its_queue_bound(
    tmp_path: Path,
) -> None:
    """The hub's own logic: 50 subscribers that never read, while 300 events pass."""
    from service.events.hub import EventHub
    from service.events.logs import LocalEventLog
    from service.metrics import Metrics

    metrics = Metrics()
    async with EventHub(LocalEventLog(tmp_path / "events.sqlite3", 10_000), metrics, 64) as hub:
        slow = [await hub.subscribe(None) for _ in range(50)]
        reader = await hub.subscribe(None)
        received = []

        async def read() -> None:
            async for item in reader.events(heartbeat_seconds=5):
                if item is not None:
                    received.append(item)
                if len(received) == 300:
                    return

        reading = asyncio.create_task(read())
        for number in range(300):
            await hub.publish("image.created", {"n": number})
        await asyncio.wait_for(reading, 10)
        assert [event.data["n"] for event in received] == list(range(300))  # all, in order
        assert all(subscription.dropped for subscription in slow)
        assert metrics.event_subscribers._value.get() <= 1  # the gauge's value


@pytest.mark.skipif(not RedisServer.real, reason="needs a real redis-server to stop")
async def test_without_redis_the_stream_still_opens_and_uploads_still_succeed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer().start()
    settings = Settings(
        _env_file=None, storage_path=tmp_path, redis_url=server.url, event_heartbeat=0.2
    )
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        server.stop()
        headers = {"Last-Event-ID": "1-0"}
        async with client.simulate_get_stream("/events", headers=headers) as result:
            assert (await Events(result.stream).next_event())["event"] == "reset"
        created = await client.simulate_post("/images", body=samples.jpeg((64, 64)))
        assert created.status_code == 201
    assert "image.created not published" in caplog.text


async def test_the_same_feed_over_a_websocket(client: falcon.testing.ASGIConductor) -> None:
    async with client.simulate_ws("/events/ws") as feed:
        created = (await client.simulate_post("/images", body=samples.jpeg((256, 192)))).json
        message = await asyncio.wait_for(feed.receive_json(), 5)
        assert message == {"event": "image.created", "id": message["id"], "data": created}
        await client.simulate_delete(created["image"])
        deleted = await asyncio.wait_for(feed.receive_json(), 5)
        assert (deleted["event"], deleted["data"]) == ("image.deleted", {"id": created["id"]})
        await feed.send_text("anything a client sends is ignored")
        await feed.send_data(b"\x00")

    # Resuming after an id, as Last-Event-ID does; then live.
    resume = f"last_event_id={message['id']}"
    async with client.simulate_ws("/events/ws", query_string=resume) as feed:
        assert await asyncio.wait_for(feed.receive_json(), 5) == deleted
    async with client.simulate_ws("/events/ws", query_string="last_event_id=0-1") as feed:
        assert await asyncio.wait_for(feed.receive_json(), 5) == {"event": "reset"}
    # A client gone is forgotten at once, not at its next event.
    metrics = (await client.simulate_get("/metrics")).text
    assert re.search(r"^asgilook_event_subscribers 0", metrics, re.MULTILINE), metrics
