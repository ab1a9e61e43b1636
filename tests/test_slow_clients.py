"""Uploads cut short or sent too slowly are not uploads: nothing decoded, queued or stored."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from . import samples
from .servers import Uvicorn

pytestmark = pytest.mark.slow

UPLOAD_TIMEOUT = 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Uvicorn]:
    started = Uvicorn(
        {
            "ASGILOOK_STORAGE_PATH": str(tmp_path / "data"),
            "ASGILOOK_UPLOAD_TIMEOUT": str(UPLOAD_TIMEOUT),
            "ASGILOOK_RATE_LIMIT_UPLOADS": "",  # hundreds of uploads from one address
            "ASGILOOK_LOG_FORMAT": "json",
        }
    ).start()
    yield started
    started.close()


def image_work(server: Uvicorn) -> dict[str, float]:
    """Uploads whose image work began (their header read), and image jobs refused for a full
    queue, from /metrics."""
    exposition = httpx.get(f"{server.url}/metrics").text

    def value(pattern: str) -> float:
        found = re.search(f"^{pattern} (\\S+)", exposition, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    return {
        "decoded": value(r'asgilook_image_render_seconds_count\{operation="identify"\}'),
        "refused": value(r"asgilook_image_work_refused_total"),
    }


def open_upload(server: Uvicorn, head: str) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port))
    connection.sendall(f"POST /images HTTP/1.1\r\nHost: test\r\n{head}\r\n".encode())
    return connection


def read_response(connection: socket.socket) -> tuple[str, bytes]:
    connection.settimeout(UPLOAD_TIMEOUT * 2)
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length:
        body += connection.recv(65536)
    return head.decode(), body


def test_bodies_cut_short_by_a_disconnect_are_abandoned(server: Uvicorn) -> None:
    photo = samples.jpeg((640, 480))
    for _ in range(95):  # Content-Length promised, 30 bytes sent, gone
        with open_upload(server, "Content-Length: 100000\r\n") as connection:
            connection.sendall(photo[:30])
    for _ in range(95):  # chunked: half a photo, then gone without the last chunk
        with open_upload(server, "Transfer-Encoding: chunked\r\n") as connection:
            half = photo[: len(photo) // 2]
            connection.sendall(b"%x\r\n%s\r\n" % (len(half), half))
    time.sleep(0.5)

    assert image_work(server) == {"decoded": 0, "refused": 0}
    assert httpx.get(f"{server.url}/images").json() == []
    # A whole upload still works, and is the only image work done.
    assert httpx.post(f"{server.url}/images", content=photo).status_code == 201
    assert image_work(server)["decoded"] == 1
    server.stop()
    assert server.output().count("upload abandoned: the client disconnected") == 190


def test_trickling_uploads_get_408_and_do_not_hold_up_other_requests(server: Uvicorn) -> None:
    with httpx.Client(base_url=server.url) as http:
        image = http.post("/images", content=samples.jpeg((640, 480))).json()
        thumbnail = image["thumbnails"][0]
        assert http.get(thumbnail).status_code == 200  # cached from now on

    tricklers = [open_upload(server, "Content-Length: 100000\r\n") for _ in range(200)]
    try:
        started = time.monotonic()
        slowest = 0.0
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while time.monotonic() - started < UPLOAD_TIMEOUT - 0.5:
                for connection in tricklers:
                    connection.sendall(b"\xff")
                for path in (thumbnail, "/healthz"):
                    asked = time.monotonic()
                    answer = http.get(path)
                    slowest = max(slowest, time.monotonic() - asked)
                    assert answer.status_code == 200
                time.sleep(0.1)
        # Not a benchmark: a generous bound that a blocked event loop or full queue would break.
        assert slowest < 1.0, f"a GET took {slowest:.2f} s while uploads trickled in"

        for connection in tricklers:
            head, body = read_response(connection)
            assert head.startswith("HTTP/1.1 408 "), head
            assert json.loads(body)["title"] == "Upload too slow"
    finally:
        for connection in tricklers:
            connection.close()
    assert image_work(server) == {"decoded": 1, "refused": 0}  # only the photo uploaded above
    assert len(httpx.get(f"{server.url}/images").json()) == 1
