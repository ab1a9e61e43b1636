"""What browsers and API clients read: the gallery page (`GET /`), the API's OpenAPI document
(`GET /openapi.json`) and its docs page (`GET /docs`). Files shipped in the package, or in
Python packages (Swagger UI): no build step, no CDN."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import falcon
import swagger_ui_bundle
from falcon.asgi import Request, Response

from ..http.validators import is_conditional

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
}
# NOTE: no inline script or style, no other origin: what a page showing user files needs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


class Files:
    """Files held in memory, by name, with ETags; browsers revalidate them (no-cache), so a
    new release is seen at once and an unchanged file costs a 304."""

    def __init__(self, files: Mapping[str, bytes], default: str) -> None:
        self._files = {name: (content, _etag(content)) for name, content in files.items()}
        self._default = default

    async def on_get(self, req: Request, resp: Response, name: str | None = None) -> None:
        name = name or self._default
        if name not in self._files:
            raise falcon.HTTPNotFound(description=f"there is nothing at {req.path}")
        content, etag = self._files[name]
        resp.content_type = TYPES[Path(name).suffix]
        resp.etag = etag
        resp.cache_control = ("no-cache",)
        if resp.content_type.startswith("text/html"):
            resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if is_conditional(req) and any(str(tag) in (etag, "*") for tag in req.if_none_match or []):
            resp.status = falcon.HTTP_304
            return
        resp.data = content

    on_head = on_get

    @property
    def names(self) -> list[str]:
        return sorted(self._files)

    def add(self, name: str, content: bytes) -> None:
        self._files[name] = (content, _etag(content))


def gallery() -> Files:
    """`/` and `/static/{name}`: the gallery page."""
    return Files(_package_folder("gallery"), "index.html")


def docs() -> Files:
    """`/docs` and `/docs/{name}`: Swagger UI, from its Python package, on /openapi.json."""
    swagger_ui = Path(swagger_ui_bundle.swagger_ui_path)
    return Files(
        {**_package_folder("docs"), **{n: (swagger_ui / n).read_bytes() for n in SWAGGER_UI_FILES}},
        "index.html",
    )


def _package_folder(name: str) -> dict[str, bytes]:
    folder = resources.files(__package__).joinpath(name)
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.name.endswith(tuple(TYPES))}


def _etag(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:32]
