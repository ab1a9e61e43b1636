"""Redis through Sentinel (ASGILOOK_REDIS_URL=redis+sentinel://...): the cache, events and rate
limits work through it, and follow a failover of the primary without a restart or an error."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import falcon.testing
import httpx
import pytest
import redis

from service.access.keys import entry
from service.app import create_app
from service.settings import Settings, load_settings

from . import samples
from .sentinels import SentinelRedis
from .servers import MotoS3, Uvicorn, wait_until
from .test_cli import run

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server (apt-get install redis-server)"
)

KEY, LOADER_KEY, LATER_KEY = "k-uploader-0123456789", "k-loader-0123456789", "k-later-0123456789"
KEYS = ",".join(
    [
        entry("alice", "uploader", KEY),
        entry("loader", "uploader", LOADER_KEY),
        entry("later", "uploader", LATER_KEY),
    ]
)


@pytest.fixture
def sentinels() -> Iterator[SentinelRedis]:
    cluster = SentinelRedis().start()
    yield cluster
    cluster.stop()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://127.0.0.1:26379,127.0.0.2:26379/mymaster",
        "redis+sentinel://:secret@sentinel-a,sentinel-b:5000/mymaster/2",
    ],
)
def test_a_sentinel_url_is_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ASGILOOK_REDIS_URL", url)
    assert load_settings().redis_url == url


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel:///mymaster",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:port/mymaster",
        "redis+sentinel://127.0.0.1:26379/mymaster/zero",
    ],
)
def test_a_bad_sentinel_url_is_named(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ASGILOOK_REDIS_URL", url)
    with pytest.raises(SystemExit, match="ASGILOOK_REDIS_URL: Value error, "):
        load_settings()


async def test_cache_events_and_rate_limits_go_through_sentinel(
    sentinels: SentinelRedis, moto: MotoS3, bucket: str
) -> None:
    settings = Settings(
        _env_file=None,
        s3_bucket=bucket,
        s3_endpoint_url=moto.url,
        redis_url=sentinels.url,
        api_keys=KEYS,
        rate_limit_uploads="2/minute",
        min_thumb_size=16,
    )
    auth = {"Authorization": f"Bearer {KEY}"}
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        ready = await client.get("/readyz")
        assert ready.json == {"status": "ready", "storage": "ok", "cache": "ok"}
        created = await client.post("/images", body=samples.jpeg((128, 96)), headers=auth)
        assert created.status_code == 201
        thumbnail = created.json["thumbnails"][0]
        first, second = await client.get(thumbnail), await client.get(thumbnail)
        assert (first.headers["X-ASGILook-Cache"], second.headers["X-ASGILook-Cache"]) == (
            "Miss",
            "Hit",
        )
        async with client.simulate_get_stream("/events") as stream:
            assert b"retry:" in await stream.stream.read()  # subscribed
            created = await client.post("/images", body=samples.jpeg((128, 96)), headers=auth)
            text = ""
            async with asyncio.timeout(5):
                while created.json["id"] not in text:
                    text += (await stream.stream.read()).decode()
        assert "event: image.created" in text
        # Two uploads so far: the limit of 2 a minute is reached, counted in Redis.
        third = await client.post("/images", body=samples.jpeg((64, 64)), headers=auth)
        assert third.status_code == 429
    with redis.Redis(port=sentinels.primary_port()) as primary:
        assert primary.exists("asgilook:events")  # the primary holds what the service wrote


def test_check_reaches_redis_through_sentinel(
    sentinels: SentinelRedis, moto: MotoS3, bucket: str
) -> None:
    environment = {
        "ASGILOOK_S3_BUCKET": bucket,
        "ASGILOOK_S3_ENDPOINT_URL": moto.url,
        "ASGILOOK_API_KEYS": KEYS,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    reached = run("check", env={**environment, "ASGILOOK_REDIS_URL": sentinels.url})
    assert reached.returncode == 0, reached.stdout + reached.stderr
    assert "Redis: ok" in reached.stdout
    elsewhere = sentinels.url.replace("/mymaster", "/unknown-service")
    unreachable = run("check", env={**environment, "ASGILOOK_REDIS_URL": elsewhere})
    assert unreachable.returncode == 1
    assert "Redis: unavailable: No master found for 'unknown-service'" in unreachable.stdout


@pytest.mark.slow
def test_a_failover_is_followed_without_errors(
    sentinels: SentinelRedis, moto: MotoS3, bucket: str
) -> None:
    app = Uvicorn(
        {
            "ASGILOOK_S3_BUCKET": bucket,
            "ASGILOOK_S3_ENDPOINT_URL": moto.url,
            "ASGILOOK_REDIS_URL": sentinels.url,
            "ASGILOOK_API_KEYS": KEYS,
            "ASGILOOK_RATE_LIMIT_UPLOADS": "20/minute",
            "ASGILOOK_MIN_THUMB_SIZE": "16",
            "ASGILOOK_LOG_LEVEL": "ERROR",
        },
        workers=2,
    ).start()
    try:
        with httpx.Client(base_url=app.url, timeout=10) as client:
            load = Load(client, samples.jpeg((256, 192)))
            load.start()
            time.sleep(2)
            killed = sentinels.kill_primary()
            killed_at = time.monotonic()
            promoted = sentinels.wait_for_promotion(killed)
            recovered = cache_recovery(client) + (time.monotonic() - killed_at)
            time.sleep(1)
            load.stop()
            print(
                f"\nfailover: promoted in {promoted:.1f} s; cache hits again "
                f"{recovered:.1f} s after the kill; requests: {dict(load.statuses)}"
            )
            assert load.failures == [], load.failures
            assert load.statuses[200] > 50
            assert recovered < promoted + 5
            # Rate limits are counted on the new primary again: 20 then 429.
            later = {"Authorization": f"Bearer {LATER_KEY}"}
            image = samples.jpeg((32, 32))
            answers = [client.post("/images", content=image, headers=later) for _ in range(21)]
            assert [answer.status_code for answer in answers] == [201] * 20 + [429]
            later = {"Authorization": f"Bearer {KEY}"}
            # Events go through the new primary: a subscriber sees an upload.
            assert published(client, lambda: client.post("/images", content=image, headers=later))
    finally:
        app.close()


class Load:
    """Steady requests from a thread: listings (misses, then hits), thumbnails, and an upload
    a second; any 5xx or transport error is a failure."""

    def __init__(self, client: httpx.Client, image: bytes) -> None:
        self._client = client
        self._image = image
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        auth = {"Authorization": f"Bearer {LOADER_KEY}"}
        thumbnails: list[str] = []
        deadline = time.monotonic() + 60  # bounded, whatever happens
        last_upload = 0.0
        count = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            count += 1
            if time.monotonic() - last_upload > 1:
                last_upload = time.monotonic()
                self._send("POST", "/images", content=self._image, headers=auth)
            else:
                self._send("GET", f"/images?limit={count % 7 + 1}")
                if thumbnails:
                    self._send("GET", thumbnails[count % len(thumbnails)])
            if not thumbnails:
                listing = self._client.get("/images").json()
                thumbnails = [url for image in listing for url in image["thumbnails"]]
            time.sleep(0.01)

    def _send(self, method: str, url: str, **options: object) -> None:
        try:
            answer = self._client.request(method, url, **options)  # type: ignore[arg-type]
        except httpx.TransportError as error:
            self.failures.append(f"{method} {url}: {error!r}")
            return
        self.statuses[answer.status_code] += 1
        if answer.status_code >= 500:
            self.failures.append(f"{method} {url}: {answer.status_code} {answer.text}")


def cache_recovery(client: httpx.Client, timeout: float = 30) -> float:
    """Seconds until a listing fetched twice is a cache hit the second time."""
    started = time.monotonic()
    limits = iter(range(100, 1000))

    def hits() -> bool:
        url = f"/images?limit={next(limits)}"
        client.get(url)
        return client.get(url).headers["X-ASGILook-Cache"] == "Hit"

    wait_until(hits, timeout, "cache hits")
    return time.monotonic() - started


def published(client: httpx.Client, upload: Callable[[], httpx.Response]) -> bool:
    """Whether a subscriber of /events sees the image that `upload` creates."""
    with client.stream("GET", "/events", timeout=5) as stream:
        lines = stream.iter_lines()
        assert next(lines) == ": connected"  # subscribed
        created = upload()
        assert created.status_code == 201, created.text
        return any(created.json()["id"] in line for line in lines)
