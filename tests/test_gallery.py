"""The gallery page, in a real browser (Debian's Chromium, driven by Playwright), against real
uvicorn with S3 (moto) and Redis."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.access import keys

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


ARTIFACTS = Path(os.environ.get("ASGILOOK_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
KEYS = {name: keys.new_key() for name in ("alice", "root")}


@pytest.fixture
def start(moto: MotoS3, bucket: str, redis_url: str) -> Iterator[Callable[..., Uvicorn]]:
    """Starts the service on S3 (moto) and Redis, with more settings if given."""
    started: list[Uvicorn] = []

    def start(**settings: str) -> Uvicorn:
        environment = {
            "ASGILOOK_S3_BUCKET": bucket,
            "ASGILOOK_S3_ENDPOINT_URL": moto.url,
            "ASGILOOK_REDIS_URL": redis_url,
            "ASGILOOK_RATE_LIMIT_UPLOADS": "",  # the tests upload in bulk
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        started.append(Uvicorn({**environment, **settings}).start())
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def server(start: Callable[..., Uvicorn]) -> Uvicorn:
    """Anyone may upload (as a bucket deployment allows only when told to)."""
    return start(ASGILOOK_ANONYMOUS_WRITES="true")


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


def test_writes_are_offered_only_with_a_key_that_allows_them(
    start: Callable[..., Uvicorn],
    browser,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    server = start(
        ASGILOOK_API_KEYS=",".join(
            [
                keys.entry("alice", "uploader", KEYS["alice"]),
                keys.entry("root", "admin", KEYS["root"]),
            ]
        )
    )
    for name in ("root", "alice"):
        created = httpx.post(
            f"{server.url}/images",
            content=samples.jpeg((320, 240)),
            headers={"Authorization": f"Bearer {KEYS[name]}"},
        )
        assert created.status_code == 201
    photo = tmp_path / "dropped.jpg"
    photo.write_bytes(samples.jpeg((300, 200)))
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the delete's confirmation
    page.goto(server.url)
    tiles = page.locator("#grid li")
    expect(tiles).to_have_count(2, timeout=2000)

    # Without a key: a read-only gallery, and a drop says why nothing happens.
    expect(page.locator("#key")).to_have_text("Use an API key")
    expect(page.locator("#upload")).to_be_hidden()
    drop(page, photo)
    expect(page.locator("#status")).to_have_text("Uploads need an API key.")
    tiles.first.locator("button").click()
    expect(page.locator("#delete")).to_be_hidden()
    page.keyboard.press("Escape")

    # A key the service does not know is said so, and not kept.
    give_key(page, "0" * 64)
    expect(page.locator("#status")).to_contain_text("not one the service knows")
    expect(page.locator("#upload")).to_be_hidden()

    # An uploader's key: uploads, and deletes of its own images only.
    give_key(page, KEYS["alice"])
    expect(page.locator("#key")).to_have_text("Key: alice")
    expect(page.locator("#upload")).to_be_visible()
    tiles.first.locator("button").click()  # root's image
    expect(page.locator("#delete")).to_be_hidden()
    page.keyboard.press("ArrowRight")  # alice's
    expect(page.locator("#delete")).to_be_visible()
    page.locator("#delete").click()
    expect(tiles).to_have_count(1)

    # Dropped files upload like picked ones.
    drop(page, photo)
    expect(page.locator("#uploads li span:last-child")).to_have_text(["uploaded"], timeout=10_000)
    expect(tiles).to_have_count(2)

    # The key is kept in the browser, until it is forgotten.
    page.reload()
    expect(page.locator("#key")).to_have_text("Key: alice")
    page.locator("#key").click()
    page.get_by_role("button", name="Forget the key").click()
    expect(page.locator("#key")).to_have_text("Use an API key")
    expect(page.locator("#upload")).to_be_hidden()


def give_key(page, key: str) -> None:  # type: ignore[no-untyped-def]
    page.locator("#key").click()
    page.get_by_label("Key", exact=True).fill(key)
    page.get_by_role("button", name="Use this key").click()


def drop(page, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Drops a file on the page, as a person dragging it from their file manager does."""
    transfer = page.evaluate_handle(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "image/jpeg" }));
            return transfer;
        }""",
        [path.name, list(path.read_bytes())],
    )
    page.dispatch_event("main", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("main", "drop", {"dataTransfer": transfer})


def test_scrolling_down_loads_the_next_pages(server: Uvicorn, browser) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=server.url) as client:
        uploads = [client.post("/images", content=samples.jpeg((64, 48))) for _ in range(130)]
    ids = [upload.json()["id"] for upload in uploads]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server.url)
    tiles = page.locator("#grid li")
    expect(tiles).to_have_count(60, timeout=2000)  # one page of the listing
    for shown in (120, 130):
        tiles.last.scroll_into_view_if_needed()
        expect(tiles).to_have_count(shown)
    assert [tile.get_attribute("data-id") for tile in tiles.all()] == ids  # oldest first, once each


def test_screenshots_at_desktop_and_phone_widths(server: Uvicorn, browser) -> None:  # type: ignore[no-untyped-def]
    """Saved as test artifacts (tests/artifacts, or $ASGILOOK_TEST_ARTIFACTS), to look at."""
    sizes = [(800, 600), (600, 800), (1000, 500), (640, 640), (900, 600), (600, 900)] * 2
    for seed, size in enumerate(sizes):
        httpx.post(
            f"{server.url}/images",
            content=samples.scenery(seed, size),
            headers={"Content-Disposition": f'attachment; filename="landscape-{seed + 1}.jpg"'},
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, viewport in [("desktop", (1280, 800)), ("phone", (390, 844))]:
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        page.goto(server.url)
        images = page.locator("#grid li img")
        expect(images).to_have_count(len(sizes), timeout=2000)
        for image in images.all()[:6]:
            image.scroll_into_view_if_needed()
            assert image.evaluate("image => image.decode().then(() => image.naturalWidth)") > 0
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / f"gallery-{name}.png"))
        page.close()


def test_the_page_follows_the_service_through_a_restart(server: Uvicorn, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    page.goto(server.url)
    tiles = page.locator("#grid li")
    httpx.post(f"{server.url}/images", content=samples.jpeg((320, 240)))
    expect(tiles).to_have_count(1, timeout=5000)
    server.stop()
    server.start()  # same port, same bucket and Redis
    # Uploaded before the page has reconnected: it comes with what the page missed.
    httpx.post(f"{server.url}/images", content=samples.jpeg((320, 240)))
    expect(tiles).to_have_count(2, timeout=10_000)
    httpx.post(f"{server.url}/images", content=samples.jpeg((320, 240)))
    expect(tiles).to_have_count(3, timeout=5000)
