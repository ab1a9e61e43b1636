"""The gallery page, in a real browser (Debian's Chromium, driven by Playwright), against real
uvicorn with S3 (moto) and Redis."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from . import samples
from .servers import MotoS3, Uvicorn

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]
ARGUMENTS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def server(moto: MotoS3, bucket: str, redis_url: str) -> Iterator[Uvicorn]:
    started = Uvicorn(
        {
            "ASGILOOK_S3_BUCKET": bucket,
            "ASGILOOK_S3_ENDPOINT_URL": moto.url,
            "ASGILOOK_REDIS_URL": redis_url,
            "ASGILOOK_ANONYMOUS_WRITES": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    ).start()
    yield started
    started.close()


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGUMENTS)
        yield launched
        launched.close()


def test_the_page_is_small_strict_and_cached(server: Uvicorn) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in page.text  # no inline script
    total = len(page.content)
    for name in ("gallery.js", "gallery.css"):
        asset = httpx.get(f"{server.url}/static/{name}")
        assert asset.status_code == 200
        again = httpx.get(
            f"{server.url}/static/{name}", headers={"If-None-Match": asset.headers["ETag"]}
        )
        assert again.status_code == 304
        total += len(asset.content)
    assert total < 100 * 1024, f"{total} bytes"
    assert httpx.get(f"{server.url}/static/nothing.js").status_code == 404


def test_upload_live_updates_and_the_viewer(
    server: Uvicorn,
    browser,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    existing = httpx.post(f"{server.url}/images", content=samples.jpeg((640, 480))).json()
    errors: list[str] = []
    first = browser.new_page(viewport={"width": 1280, "height": 900})
    first.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    first.on("pageerror", lambda error: errors.append(str(error)))
    first.goto(server.url)
    # The first page of the listing, by itself, with real src and srcset.
    tile = first.locator(f'#grid li[data-id="{existing["id"]}"] img')
    tile.wait_for(timeout=2000)
    assert tile.get_attribute("src") and "320w" in (tile.get_attribute("srcset") or "")

    second = browser.new_page()
    second.goto(server.url)
    expect(second.locator("#grid li")).to_have_count(1, timeout=2000)

    # Three files through the file input: a progress bar each, then three tiles.
    files = []
    for index in range(3):
        path = tmp_path / f"photo-{index}.jpg"
        path.write_bytes(samples.jpeg((400 + index * 10, 300)))
        files.append(str(path))
    first.set_input_files("#files", files)
    expect(first.locator("#uploads li")).to_have_count(3)
    expect(first.locator("#uploads li progress")).to_have_count(3)
    expect(first.locator("#uploads li span:last-child")).to_have_text(
        ["uploaded"] * 3, timeout=10_000
    )
    expect(first.locator("#grid li")).to_have_count(4)
    # ...and live, without a reload, on the other page.
    expect(second.locator("#grid li")).to_have_count(4, timeout=5000)

    # A file that is not an image: its message.
    text = tmp_path / "notes.txt"
    text.write_text("not an image at all\n" * 10)
    first.set_input_files("#files", str(text))
    first.locator("#uploads .error").wait_for(timeout=5000)
    assert "not supported" in first.locator("#uploads .error").inner_text()

    # The viewer: open, arrows, Escape.
    first.locator("#grid li button").first.click()
    expect(first.locator("#viewer")).to_have_attribute("open", "")
    shown = first.locator("#full").get_attribute("src")
    first.keyboard.press("ArrowRight")
    expect(first.locator("#full")).not_to_have_attribute("src", shown or "")
    first.keyboard.press("Escape")
    expect(first.locator("#viewer")).not_to_have_attribute("open", "")

    # A delete elsewhere disappears live.
    assert httpx.delete(f"{server.url}{existing['image']}").status_code == 204
    expect(first.locator("#grid li")).to_have_count(3, timeout=5000)
    expect(second.locator("#grid li")).to_have_count(3, timeout=5000)
    first.screenshot(path=str(tmp_path / "gallery-desktop.png"))
    assert not [error for error in errors if "415" not in error], errors


def test_no_serious_accessibility_violations(server: Uvicorn, browser) -> None:  # type: ignore[no-untyped-def]
    """axe-core (through axe-playwright-python): no serious or critical violation, with tiles
    shown and with the viewer open. (Its script is injected, so this page skips the CSP.)"""
    from axe_playwright_python.sync_playwright import Axe

    httpx.post(f"{server.url}/images", content=samples.jpeg((640, 480)))
    page = browser.new_page(bypass_csp=True)
    page.goto(server.url)
    expect(page.locator("#grid li")).to_have_count(1, timeout=2000)
    for state in ("grid", "viewer"):
        if state == "viewer":
            page.locator("#grid li button").first.click()
        results = Axe().run(page)
        serious = [
            f"{violation['id']}: {violation['help']}"
            for violation in results.response["violations"]
            if violation["impact"] in ("serious", "critical")
        ]
        assert not serious, (state, serious)
