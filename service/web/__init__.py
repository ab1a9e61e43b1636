"""The gallery page, `GET /`: static files shipped in the package (no build step, no CDN)."""

from __future__ import annotations

import hashlib
from importlib import resources

import falcon
from falcon.asgi import Request, Response

from ..validators import is_conditional

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# NOTE: no inline script or style, no other origin: what a page showing user files needs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class StaticFiles:
    """`/` and `/static/{name}`: the page's files, read once, with ETags; browsers revalidate
    them (no-cache), so a new release is seen at once and an unchanged file costs a 304."""

    def __init__(self) -> None:
        folder = resources.files(__package__).joinpath("static")
        self._files = {
            entry.name: entry.read_bytes()
            for entry in folder.iterdir()
            if entry.name.endswith(tuple(TYPES))
        }

    async def on_get(self, req: Request, resp: Response, name: str = "index.html") -> None:
        content = self._files.get(name)
        if content is None:
            raise falcon.HTTPNotFound(description=f"there is nothing at {req.path}")
        resp.content_type = TYPES[name[name.rindex(".") :]]
        resp.etag = hashlib.sha256(content).hexdigest()[:32]
        resp.cache_control = ("no-cache",)
        if name.endswith(".html"):
            resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if is_conditional(req) and any(
            str(tag) in (resp.etag.strip('"'), "*") for tag in req.if_none_match or []
        ):
            resp.status = falcon.HTTP_304
            return
        resp.data = content

    on_head = on_get
