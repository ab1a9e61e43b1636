"""End to end: real uvicorn processes, configured by environment variables only."""

from __future__ import annotations

import io
import json
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from service.access import keys

from . import samples
from .servers import REPO, MotoS3, SeaweedFS, Uvicorn, free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def serve() -> Iterator:  # type: ignore[type-arg]
    started: list[Uvicorn] = []

    def start(env: dict[str, str], workers: int = 1) -> Uvicorn:
        server = Uvicorn(env, workers).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def test_tutorial_flow_over_http_with_s3_and_redis(
    serve, moto: MotoS3, bucket: str, redis_url: str
) -> None:  # type: ignore[no-untyped-def]
    key = keys.new_key()
    server = serve(
        {
            "ASGILOOK_S3_BUCKET": bucket,
            "ASGILOOK_S3_ENDPOINT_URL": moto.url,
            "ASGILOOK_REDIS_URL": redis_url,
            "ASGILOOK_API_KEYS": keys.entry("tutorial", "uploader", key),
            "ASGILOOK_LOG_LEVEL": "DEBUG",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    authorized = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/images").json() == []
        created = http.post(
            "/images",
            content=samples.png_with_alpha((462, 462)),
            headers={"Content-Type": "image/png", **authorized},
        )
        assert created.status_code == 201
        image = created.json()
        assert created.headers["Location"] == image["image"]
        assert image["size"] == [462, 462]
        assert http.get("/images").json() == [image]

        full = http.get(image["image"])
        assert full.status_code == 200
        assert full.headers["Content-Type"] == "image/jpeg"
        assert int(full.headers["Content-Length"]) == len(full.content) > 1000

        thumbnail = image["thumbnails"][1]
        miss, hit = http.get(thumbnail), http.get(thumbnail)
        assert (miss.headers["X-ASGILook-Cache"], hit.headers["X-ASGILook-Cache"]) == (
            "Miss",
            "Hit",
        )
        assert hit.content == miss.content

        assert http.delete(image["image"]).status_code == 401
        assert http.delete(image["image"], headers=authorized).status_code == 204
        assert http.get(thumbnail).status_code == 404
        assert http.get("/images").json() == []
        assert http.put("/images").status_code == 405
    server.stop()
    # Neither the key nor its hash is logged, at any level.
    assert key not in server.output()
    assert keys.entry("tutorial", "uploader", key).rsplit(":", 1)[1] not in server.output()
    logged = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert any(line.get("key") == "tutorial" for line in logged)  # its name is, in the access log


def test_chunked_upload_over_the_limit_is_refused_while_it_streams(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    limit = 1024 * 1024
    server = serve(
        {"ASGILOOK_STORAGE_PATH": str(tmp_path / "data"), "ASGILOOK_MAX_UPLOAD_BYTES": str(limit)}
    )
    chunk, planned = b"\xff" * 65536, 400  # 25 MiB, chunked: no Content-Length
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.sendall(
            b"POST /images HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sent = 0
        while sent < planned and not select.select([connection], [], [], 0)[0]:
            connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += 1
        response = connection.recv(65536).decode()
    assert response.startswith("HTTP/1.1 413 ")
    assert "application/json" in response
    # Answered long before the body ended (loopback socket buffers hold a few MiB of it).
    assert sent < planned / 2


def test_memory_per_upload_stays_bounded(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = serve(
        {
            "ASGILOOK_STORAGE_PATH": str(tmp_path / "data"),
            "ASGILOOK_MAX_UPLOAD_BYTES": str(300 * 1024 * 1024),
        }
    )
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/images", content=samples.jpeg((256, 256))).status_code == 201
        before = server.peak_rss_bytes()
        upload_size = 160 * 1024 * 1024

        def body() -> Iterator[bytes]:
            block = b"not an image " * 5041  # ~64 KiB
            for _ in range(upload_size // len(block)):
                yield block

        assert http.post("/images", content=body()).status_code == 415
        growth = server.peak_rss_bytes() - before
    assert growth < 32 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.0f} MiB"


def test_a_form_upload_is_streamed_with_bounded_memory(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = serve(
        {
            "ASGILOOK_STORAGE_PATH": str(tmp_path / "data"),
            "ASGILOOK_MAX_UPLOAD_BYTES": str(300 * 1024 * 1024),
        }
    )

    class Garbage(io.RawIOBase):
        """160 MB made as it is read: httpx streams a file part in chunks."""

        left = 160 * 1024 * 1024

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
            size = min(len(buffer), self.left)
            buffer[:size] = b"n" * size
            self.left -= size
            return size

    with httpx.Client(base_url=server.url, timeout=60) as http:
        photo = {"file": ("photo.jpg", samples.jpeg((256, 256)), "image/jpeg")}
        created = http.post("/images", files=photo, data={"title": "a photo"})
        assert created.status_code == 201 and created.json()["name"] == "photo.jpg"
        before = server.peak_rss_bytes()
        refused = http.post("/images", files={"file": ("big.bin", Garbage())})
        assert refused.status_code == 415, refused.text
        growth = server.peak_rss_bytes() - before
    assert growth < 32 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.0f} MiB"


def s3_environment(moto: MotoS3, bucket: str) -> dict[str, str]:
    return {
        "ASGILOOK_S3_BUCKET": bucket,
        "ASGILOOK_S3_ENDPOINT_URL": moto.url,
        "ASGILOOK_ANONYMOUS_WRITES": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def test_a_30_mb_photo_upload_to_s3_adds_little_memory(serve, moto: MotoS3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    """An upright JPEG is streamed to S3 and copied minus its metadata in chunks: never whole."""
    server = serve(s3_environment(moto, bucket))
    photo = samples.jpeg((6000, 6000), quality=93)
    assert len(photo) > 30 * 1000 * 1000
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/images", content=samples.jpeg((256, 256))).status_code == 201
        before = server.peak_rss_bytes()
        created = http.post("/images", content=photo)
        growth = server.peak_rss_bytes() - before
        assert created.status_code == 201
        assert int(http.head(created.json()["image"]).headers["Content-Length"]) > 30_000_000
    assert growth < 64 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"ASGILOOK_CACHE_TTL": "an hour"}, ["ASGILOOK_CACHE_TTL", "'an hour'"]),
        # Secure by default: a bucket without keys needs anonymous writes said explicitly.
        ({"ASGILOOK_S3_BUCKET": "photos"}, ["ASGILOOK_API_KEYS", "ASGILOOK_ANONYMOUS_WRITES"]),
    ],
)
def test_invalid_settings_stop_startup_with_one_line(tmp_path, environment, named) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "service.asgi:app",
            "--app-dir",
            str(REPO),
            "--port",
            "0",
        ],
        cwd=tmp_path,
        env={**environment, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "ASGILOOK" in line]
    assert len(lines) == 1
    assert all(name in lines[0] for name in named), lines[0]


def test_embedded_workers_see_each_others_writes(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = serve({"ASGILOOK_STORAGE_PATH": str(tmp_path / "data")}, workers=2)

    def listed_ids() -> set[tuple[str, ...]]:
        # New connections spread over both workers; every answer must be the same.
        answers = set()
        for _ in range(24):
            with httpx.Client(base_url=server.url) as http:
                answers.add(tuple(entry["id"] for entry in http.get("/images").json()))
        return answers

    assert listed_ids() == {()}  # both workers now hold the empty listing in cache
    with httpx.Client(base_url=server.url) as http:
        image = http.post("/images", content=samples.jpeg((256, 256))).json()
    assert listed_ids() == {(image["id"],)}
    with httpx.Client(base_url=server.url) as http:
        assert http.delete(image["image"]).status_code == 204
    assert listed_ids() == {()}


def test_json_logs_carry_the_request_id_on_every_line(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = serve(
        {
            "ASGILOOK_STORAGE_PATH": str(tmp_path / "data"),
            "ASGILOOK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # down: logs a warning
            "ASGILOOK_LOG_FORMAT": "json",
        }
    )
    response = httpx.get(f"{server.url}/images", headers={"X-Request-ID": "trace-7"})
    assert response.headers["X-Request-ID"] == "trace-7"
    server.stop()
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("request_id") == "trace-7"]
    assert {line["logger"] for line in ours} == {"service.cache", "asgilook.access"}
    access = next(line for line in ours if line["logger"] == "asgilook.access")
    assert access["method"] == "GET"
    assert access["route"] == "/images"
    assert access["status"] == 200
    assert access["cache"] == "Miss"
    assert access["bytes"] == 2
    assert access["duration_ms"] > 0
    assert all("time" in line and "level" in line for line in lines)


def test_metrics_add_up_over_workers(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "metrics").mkdir()
    server = serve(
        {
            "ASGILOOK_STORAGE_PATH": str(tmp_path / "data"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        },
        workers=2,
    )
    for _ in range(30):
        with httpx.Client(base_url=server.url) as http:  # new connections reach both workers
            assert http.get("/images").status_code == 200
    pids = {path.name.rsplit("_", 1)[-1] for path in (tmp_path / "metrics").glob("counter_*.db")}
    assert len(pids) == 2
    exposition = httpx.get(f"{server.url}/metrics").text
    pattern = r'asgilook_http_requests_total\{method="GET",route="/images",status="200"\} (\S+)'
    assert float(re.search(pattern, exposition).group(1)) == 30


def test_sigterm_lets_an_upload_in_flight_finish(serve, moto: MotoS3, bucket: str) -> None:  # type: ignore[no-untyped-def]
    server = serve(s3_environment(moto, bucket))
    photo = samples.jpeg((4000, 3000), quality=97)  # 9 MB: still arriving at the SIGTERM
    with socket.create_connection(("127.0.0.1", server.port)) as connection:
        connection.sendall(
            b"POST /images HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(photo)
        )
        connection.sendall(photo[: len(photo) // 2])
        time.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        connection.sendall(photo[len(photo) // 2 :])
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 201 "), response[:300]
    # uvicorn re-raises SIGTERM once it has shut down cleanly.
    assert server.process.wait(30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.output()
    keys = [entry["Key"] for entry in moto.client().list_objects_v2(Bucket=bucket)["Contents"]]
    folders = ["eighth", "images", "index", "largest", "originals", "reduced"]
    assert sorted(key.split("/")[0] for key in keys) == folders


def test_two_workers_on_seaweedfs_and_redis_lose_nothing_across_a_restart(  # type: ignore[no-untyped-def]
    serve, redis_url: str, tmp_path
) -> None:
    """The production-like stage: a real S3 server (SigV4 checked) and a real Redis."""
    seaweed = SeaweedFS(tmp_path / "seaweed").start(bucket="images")
    try:
        (tmp_path / "metrics").mkdir()
        environment = {
            "ASGILOOK_S3_BUCKET": "images",
            "ASGILOOK_S3_ENDPOINT_URL": seaweed.url,
            "ASGILOOK_ANONYMOUS_WRITES": "true",
            "ASGILOOK_REDIS_URL": redis_url,
            "AWS_ACCESS_KEY_ID": SeaweedFS.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SeaweedFS.SECRET_KEY,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        }
        server = serve(environment, workers=2)
        uploads = [samples.jpeg((1200, 900)), samples.png_with_alpha((300, 300))]
        with httpx.Client(base_url=server.url) as http:
            created = [http.post("/images", content=body).json() for body in uploads]
        served: dict[str, bytes] = {}
        for _ in range(12):  # new connections: both workers answer reads
            with httpx.Client(base_url=server.url) as http:
                assert [entry["id"] for entry in http.get("/images").json()] == [
                    image["id"] for image in created
                ]
                for image in created:
                    body = http.get(image["image"]).content
                    assert served.setdefault(image["id"], body) == body
                    assert http.get(image["thumbnails"][-1]).status_code == 200
        workers = {path.name for path in (tmp_path / "metrics").glob("counter_*.db")}
        assert len(workers) == 2, "both workers must have answered"
        originals = seaweed.client().list_objects_v2(Bucket="images", Prefix="originals/")
        assert len(originals["Contents"]) == 2

        server.close()  # restart the service: nothing may be lost
        server = serve(environment, workers=2)
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/images").json() == created
            for image in created:
                assert http.get(image["image"]).content == served[image["id"]]
            assert http.delete(created[0]["image"]).status_code == 204
            assert [entry["id"] for entry in http.get("/images").json()] == [created[1]["id"]]
    finally:
        seaweed.stop()
