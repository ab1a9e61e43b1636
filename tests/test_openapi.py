"""The API described: GET /openapi.json (OpenAPI 3.1) matches the routes and what they answer,
GET /docs renders it, and schemathesis finds nothing the service does that the document does
not say, against real uvicorn on S3 (moto) and Redis, with keys."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi
import falcon.testing
import httpx
import pytest
from openapi_spec_validator import validate

from service.access import keys
from service.app import create_app
from service.settings import Settings
from service.web.openapi import describe_api

from . import samples
from .servers import MotoS3, Uvicorn

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ADMIN = keys.new_key()
ARTIFACTS = Path(os.environ.get("ASGILOOK_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[falcon.testing.ASGIConductor]:
    app = create_app(Settings(_env_file=None, storage_path=tmp_path))
    async with falcon.testing.ASGIConductor(app) as conductor:
        yield conductor


async def test_the_document_is_openapi_3_1(client: falcon.testing.ASGIConductor) -> None:
    result = await client.simulate_get("/openapi.json")
    assert result.headers["Content-Type"] == "application/json"
    validate(result.json)  # raises on any departure from the OpenAPI 3.1 schema
    assert result.json["openapi"] == "3.1.0"
    again = await client.simulate_get(
        "/openapi.json", headers={"If-None-Match": result.headers["ETag"]}
    )
    assert again.status_code == 304


async def test_every_documented_method_is_answered_and_no_other(
    client: falcon.testing.ASGIConductor,
) -> None:
    """Each path of the document, with made-up ids: a method it documents is taken (never
    405); any other gets 405, with an Allow header that lists exactly the documented ones."""
    document = (await client.simulate_get("/openapi.json")).json
    values = {"image_id": "01936c8e-7a04-7c1e-8b8a-3c1f7c0e9d11", "width": "4", "height": "3",
              "name": "gallery.js"}  # fmt: skip
    for path, item in document["paths"].items():
        url = path.format(**values)
        documented = {method.upper() for method in item if method != "parameters"}
        for method in METHODS:
            if (path, method) == ("/events", "GET"):
                continue  # a stream that does not end: tests/test_events.py
            result = await client.simulate_request(method, url)
            if method in documented:
                assert result.status_code != 405, (method, path)
            else:
                assert result.status_code == 405, (method, path, result.status_code)
                allowed = set(result.headers["Allow"].split(", "))
                assert allowed == documented, (path, allowed, documented)


async def test_options_is_documented_and_answered_only_with_cors(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, storage_path=tmp_path, cors_origins="https://a.example")
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        document = (await client.simulate_get("/openapi.json")).json
        assert all("options" in item for item in document["paths"].values())
        assert (await client.simulate_options("/images")).status_code == 200


def test_a_route_without_a_description_stops_the_app() -> None:
    class Anything:
        async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
            pass

    app = falcon.asgi.App()
    app.add_route("/undocumented", Anything())
    with pytest.raises(RuntimeError, match="GET /undocumented is routed but not described"):
        describe_api(app, "0", files={}, options=False)


async def test_an_upload_links_to_its_image_thumbnails_and_delete(
    client: falcon.testing.ASGIConductor,
) -> None:
    document = (await client.simulate_get("/openapi.json")).json
    links = document["paths"]["/images"]["post"]["responses"]["201"]["links"]
    created = (await client.simulate_post("/images", body=samples.jpeg((640, 480)))).json
    for name in ("GetImage", "GetThumbnail", "GetThumbnailWebp", "DeleteImage"):
        parameters = links[name]["parameters"]
        assert parameters["image_id"] == "$response.body#/id"
    # The pointers resolve in a real upload's answer.
    assert created["thumbnail_sizes"][0] == [320, 240]
    thumbnail = await client.simulate_get(f"/thumbnails/{created['id']}/320x240.jpeg")
    assert thumbnail.status_code == 200


@pytest.mark.slow
def test_schemathesis_finds_nothing_undocumented(moto: MotoS3, bucket: str, redis_url: str) -> None:
    """Every operation (the event streams aside: they never end), every check, stateful
    sequences through the links; bounded to 90 s of generation (it shares the cores with
    the other test process: alone, 45 s were enough for the 1,000 cases required), seeded."""
    server = Uvicorn(
        {
            "ASGILOOK_S3_BUCKET": bucket,
            "ASGILOOK_S3_ENDPOINT_URL": moto.url,
            "ASGILOOK_REDIS_URL": redis_url,
            "ASGILOOK_API_KEYS": keys.entry("root", "admin", ADMIN),
            "ASGILOOK_RATE_LIMIT_UPLOADS": "",
            "ASGILOOK_RATE_LIMIT_RENDERS": "",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    ).start()
    try:
        # NOTE: images large enough to have thumbnails, which generated uploads seldom are.
        for size in [(640, 480), (300, 500), (1000, 250)] * 2:
            created = httpx.post(
                f"{server.url}/images",
                content=samples.jpeg(size),
                headers={"Authorization": f"Bearer {ADMIN}"},
            )
            assert created.status_code == 201
        command = [
            str(Path(sys.executable).with_name("st")),
            "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
            "run", f"{server.url}/openapi.json",
            "--header", f"Authorization: Bearer {ADMIN}",
            "--exclude-path", "/events", "--exclude-path", "/events/ws",
            "--checks", "all",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", "20", "--max-time", "90", "--seed", "2",
            "--report", "junit", "--report-dir", str(ARTIFACTS / "schemathesis"),
        ]  # fmt: skip
        run: Any = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "NO_COLOR": "1"},
        )
        assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5000:]
        tested = re.search(r"(\d+) generated, \1 passed", run.stdout)
        assert tested and int(tested.group(1)) > 1000, run.stdout[-2000:]
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_docs_page_renders_the_document(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from .test_gallery import ARGUMENTS

    server = Uvicorn({"ASGILOOK_STORAGE_PATH": str(tmp_path)}).start()
    errors: list[str] = []
    try:
        with playwright.sync_playwright() as driver:
            chromium = shutil.which("chromium")
            browser = driver.chromium.launch(executable_path=chromium, args=ARGUMENTS)
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{server.url}/docs")
            operations = page.locator(".opblock")
            playwright.expect(operations.first).to_be_visible(timeout=10_000)
            assert operations.count() >= 30
            playwright.expect(page.get_by_text("Upload an image")).to_be_visible()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "docs.png"))
            browser.close()
    finally:
        server.close()
    assert not errors, errors
