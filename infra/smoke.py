"""Smoke-test a running ASGILook: readiness, then upload, list, download, thumbnail, delete;
the gallery, the docs page and the OpenAPI document.

ASGILOOK_KEY=<an admin key> python infra/smoke.py http://127.0.0.1:8000
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
from email.message import Message

from PIL import Image


def call(
    method: str, url: str, body: bytes | None = None, key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers), error.read()


def _lower(headers: Message) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def wait_ready(base: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            status, _, body = call("GET", f"{base}/readyz")
            if status == 200:
                print("readyz:", body.decode())
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{base}/readyz did not answer 200 within {seconds} s")
        time.sleep(0.5)


def main(base: str, key: str | None) -> None:
    wait_ready(base)
    photo = io.BytesIO()
    Image.radial_gradient("L").resize((1024, 768)).convert("RGB").save(photo, "JPEG")
    if key is not None:  # writes need it; without it, 401 and a challenge
        status, headers, _ = call("POST", f"{base}/images", photo.getvalue())
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), status
    status, headers, body = call("POST", f"{base}/images", photo.getvalue(), key)
    assert status == 201, (status, body)
    image = json.loads(body)
    assert headers["location"] == image["image"], headers
    status, _, body = call("GET", f"{base}/images")
    assert status == 200 and image["id"] in body.decode(), body
    status, _, body = call("GET", base + image["image"])
    assert status == 200 and Image.open(io.BytesIO(body)).size == (1024, 768)
    thumbnail = image["thumbnails"][-1]
    expected = tuple(int(side) for side in thumbnail.rsplit("/", 1)[1][:-5].split("x"))
    for cache in ("Miss", "Hit"):
        status, headers, body = call("GET", base + thumbnail)
        assert status == 200 and headers["x-asgilook-cache"] == cache, (status, headers)
        assert Image.open(io.BytesIO(body)).size == expected
    if key is not None:
        status, headers, body = call("GET", f"{base}/images/{image['id']}/original", key=key)
        assert status == 200 and body == photo.getvalue(), status
        assert headers["content-disposition"].startswith("attachment"), headers
        assert call("DELETE", base + image["image"])[0] == 401
    assert call("DELETE", base + image["image"], key=key)[0] == 204
    assert call("GET", base + thumbnail)[0] == 404
    print("round trip: upload, list, image, thumbnail (Miss, Hit), original, delete: ok")
    # The files shipped in the package: the gallery, the docs page and what it renders.
    shipped = [
        ("/", "text/html"),
        ("/static/gallery.js", "text/javascript"),
        ("/docs", "text/html"),
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/openapi.json", "application/json"),
    ]
    for path, media_type in shipped:
        status, headers, body = call("GET", base + path)
        assert status == 200 and headers["content-type"].startswith(media_type), (path, status)
    assert json.loads(body)["openapi"].startswith("3.1"), body[:100]
    print("pages: gallery, docs, OpenAPI document: ok")


if __name__ == "__main__":
    # ASGILOOK_KEY: an API key with which to write, when the service requires one.
    main(sys.argv[1].rstrip("/"), os.environ.get("ASGILOOK_KEY"))
