"""Event latency: from an upload to its tile in another person's browser.

ASGILook (2 workers) on SeaweedFS and Redis, as in production; a gallery page open in Debian's
Chromium; uploads of 1 MP photos one after the other. For each, the time from the upload's
request to its tile appearing in the page (a MutationObserver in the page stamps it), and from
the upload's answer to the tile (the event path alone: Redis Stream, the worker's tail, SSE, the
page's script). Prints p50/p95/max; `python bench/live.py [--uploads 50]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.photos import photo  # noqa: E402
from tests.servers import RedisServer, SeaweedFS, Uvicorn  # noqa: E402
from tests.test_gallery import ARGUMENTS  # noqa: E402

# NOTE: stamps, in wall-clock milliseconds, when each tile enters the grid.
STAMP_TILES = """() => {
    window.appeared = {};
    new MutationObserver((changes) => {
        const now = performance.timeOrigin + performance.now();
        for (const change of changes)
            for (const node of change.addedNodes)
                if (node.dataset && node.dataset.id) window.appeared[node.dataset.id] = now;
    }).observe(document.getElementById("grid"), { childList: true });
}"""


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(ordered)
    return f"p50 {median:6.1f} ms   p95 {p95:6.1f} ms   max {ordered[-1]:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=50)
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    work = Path(tempfile.mkdtemp(prefix="asgilook-live-"))
    redis = RedisServer().start()
    seaweed = SeaweedFS(work / "seaweedfs").start("photos")
    server = Uvicorn(
        {
            "ASGILOOK_S3_BUCKET": "photos",
            "ASGILOOK_S3_ENDPOINT_URL": seaweed.url,
            "ASGILOOK_REDIS_URL": redis.url,
            "ASGILOOK_ANONYMOUS_WRITES": "true",
            "ASGILOOK_RATE_LIMIT_UPLOADS": "",
            "AWS_ACCESS_KEY_ID": SeaweedFS.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SeaweedFS.SECRET_KEY,
        },
        workers=2,
    ).start()
    bodies = [photo(seed, (1200, 900)) for seed in range(args.uploads)]
    to_tile, answer_to_tile = [], []
    try:
        with sync_playwright() as driver, httpx.Client(base_url=server.url) as http:
            chromium = shutil.which("chromium")
            browser = driver.chromium.launch(executable_path=chromium, args=ARGUMENTS)
            page = browser.new_page()
            page.goto(server.url)
            page.evaluate(STAMP_TILES)
            time.sleep(1)  # the event stream is open
            for body in bodies:
                sent = time.time() * 1000
                created = http.post("/images", content=body).json()
                answered = time.time() * 1000
                expect(page.locator(f'#grid li[data-id="{created["id"]}"]')).to_be_attached()
                appeared = page.evaluate(f'() => window.appeared["{created["id"]}"]')
                to_tile.append(appeared - sent)
                answer_to_tile.append(appeared - answered)
            browser.close()
    finally:
        server.close()
        seaweed.stop()
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.uploads} uploads of 1200x900 JPEGs, ASGILook with 2 workers, SeaweedFS, Redis")
    print(f"upload request -> tile in another browser: {percentiles(to_tile)}")
    print(f"upload answer  -> tile in another browser: {percentiles(answer_to_tile)}")


if __name__ == "__main__":
    main()
