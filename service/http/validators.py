"""HTTP validators (ETag, Last-Modified, Cache-Control) and the conditional GETs they answer.

Image ids are never reused and a stored image never changes, so the validators of an image and
of its thumbnails are known without reading a byte of them, and they may be cached for a year.
"""

from __future__ import annotations

from datetime import datetime

import falcon
from falcon.asgi import Request, Response

IMMUTABLE = ("public", "max-age=31536000", "immutable")


def set_validators(resp: Response, etag: str, modified: datetime) -> None:
    resp.etag = etag  # Falcon quotes it: a strong ETag
    resp.last_modified = modified
    resp.cache_control = IMMUTABLE


def is_conditional(req: Request) -> bool:
    """Whether the request carries a validator (a date is parsed only if the header is there)."""
    return req.if_none_match is not None or _if_modified_since(req) is not None


def _if_modified_since(req: Request) -> datetime | None:
    """The If-Modified-Since date; an invalid one is ignored, as RFC 9110 (13.1.3) says."""
    try:
        return req.if_modified_since
    except falcon.HTTPInvalidHeader:
        return None


def not_modified(req: Request, etag: str, modified: datetime) -> bool:
    """Whether a GET or HEAD may be answered 304 (RFC 9110: If-None-Match takes precedence)."""
    if req.method not in ("GET", "HEAD"):
        return False
    if_none_match = req.if_none_match
    if if_none_match is not None:
        # NOTE: If-None-Match compares weakly: W/"x" matches "x".
        return any(tag == "*" or str(tag) == etag for tag in if_none_match)
    since = _if_modified_since(req)
    return since is not None and modified <= since


def not_modified_by_headers(req: Request, headers: dict[str, str]) -> bool:
    """The same check for a cached response, from its stored headers."""
    # NOTE: this runs on every cache hit: the stored date is parsed only for conditional ones.
    if not is_conditional(req):
        return False
    etag, modified = headers.get("etag"), headers.get("last-modified")
    if etag is None or modified is None:
        return False
    return not_modified(req, etag.strip('"'), falcon.http_date_to_dt(modified))
