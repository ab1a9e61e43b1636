"""Fixtures: settings, a moto S3 server, Redis, generated images and the app in one lifespan."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import falcon.testing
import pytest

from service.app import create_app
from service.settings import Settings

from . import samples
from .servers import FaultyProxy, MotoS3, RedisServer


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ASGILOOK_* or .env of the developer's leaks in; moto accepts any credentials."""
    import os

    for name in list(os.environ):
        if name.startswith(("ASGILOOK_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoS3]:
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto: MotoS3) -> str:
    name = f"asgilook-{uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def proxy(moto: MotoS3) -> Iterator[FaultyProxy]:
    """moto behind a proxy that a test can make fail or refuse connections."""
    faulty = FaultyProxy(moto.port)
    yield faulty
    faulty.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture(params=["s3+redis", "embedded"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Every API test runs on both deployments: bucket + Redis, and local disk + memory."""
    common = {"storage_path": tmp_path / "data", "min_thumb_size": 64}
    if request.param == "embedded":
        return Settings(_env_file=None, **common)
    moto: MotoS3 = request.getfixturevalue("moto")
    return Settings(
        _env_file=None,
        s3_bucket=request.getfixturevalue("bucket"),
        anonymous_writes=True,  # the access tests configure keys
        s3_endpoint_url=moto.url,
        redis_url=request.getfixturevalue("redis_url"),
        **common,
    )


def sequential_ids() -> Callable[[], UUID]:
    """UUIDv7-shaped ids that increase by one, so tests know every Location in advance."""
    counter = itertools.count(1)
    return lambda: UUID(f"01936a00-0000-7000-8000-{next(counter):012x}")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[falcon.testing.ASGIConductor]:
    app = create_app(settings, new_id=sequential_ids())
    async with falcon.testing.ASGIConductor(app) as conductor:
        yield conductor


@pytest.fixture(scope="session")
def photo_12mp() -> bytes:
    return samples.jpeg((4000, 3000))
