"""Falcon resources of the asgilook contract, and the mapping of domain errors to HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import UUID

import falcon
from falcon.asgi import Request, Response, SSEvent, WebSocket

from .. import errors
from ..access.policy import Caller
from ..access.rate_limits import RateLimits
from ..cache import Cache
from ..events.hub import EventHub, Reset, Subscription
from ..formats import FORMATS, Format, negotiate
from ..images import ImageRecord, ImageService, Storage
from ..metrics import CONTENT_TYPE, Metrics
from .uploads import attachment, upload_body
from .validators import is_conditional, not_modified, set_validators

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PROBE_TIMEOUT_SECONDS = 2.0

_STATUS = {
    errors.Unauthorized: falcon.HTTP_401,
    errors.Forbidden: falcon.HTTP_403,
    errors.ImageNotFound: falcon.HTTP_404,
    errors.ImageExists: falcon.HTTP_409,
    errors.EmptyUpload: falcon.HTTP_400,
    errors.InvalidImage: falcon.HTTP_400,
    errors.InvalidForm: falcon.HTTP_400,
    errors.InvalidCursor: falcon.HTTP_400,
    errors.UploadTooLarge: falcon.HTTP_413,
    errors.UploadTimeout: falcon.HTTP_408,
    # NOTE: nginx's code for a client gone before its answer; only logs and metrics see it.
    errors.ClientDisconnected: "499 Client Closed Request",
    errors.ImageTooLarge: falcon.HTTP_413,
    errors.UnsupportedImage: falcon.HTTP_415,
    errors.StorageUnavailable: falcon.HTTP_503,
    errors.RangeNotSatisfiable: falcon.HTTP_416,
    errors.Overloaded: falcon.HTTP_503,
    errors.RateLimited: falcon.HTTP_429,
    errors.NotAcceptable: falcon.HTTP_406,
}
_RETRY_AFTER_SECONDS = {errors.StorageUnavailable: 5, errors.Overloaded: 1}


def image_uri(image_id: UUID) -> str:
    return f"/images/{image_id}.jpeg"


class Events:
    """`/events`: image.created and image.deleted, as Server-Sent Events."""

    RETRY_MILLISECONDS = 3000

    def __init__(self, hub: EventHub, heartbeat_seconds: float) -> None:
        self._hub = hub
        self._heartbeat_seconds = heartbeat_seconds

    async def on_get(self, req: Request, resp: Response) -> None:
        subscription = await self._hub.subscribe(req.get_header("Last-Event-ID"))
        resp.cache_control = ("no-cache",)
        resp.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        resp.sse = self._stream(subscription)

    async def _stream(self, subscription: Subscription) -> AsyncIterator[SSEvent]:
        # NOTE: at once, so the client knows it is connected, and how soon to come back.
        yield SSEvent(retry=self.RETRY_MILLISECONDS, comment="connected")
        async for item in subscription.events(self._heartbeat_seconds):
            if item is None:
                yield SSEvent(comment="heartbeat")
            elif isinstance(item, Reset):
                yield SSEvent(event="reset", json={"reason": "the history is older than that"})
            else:
                yield SSEvent(event=item.kind, event_id=item.id, json=item.data)


class EventsOverWebSocket:
    """`/events/ws`: the same feed as a WebSocket, one JSON text message per event:
    `{"event": "image.created", "id": ..., "data": {...}}`, or `{"event": "reset"}`.
    `?last_event_id=` resumes as Last-Event-ID does (browsers cannot set headers on WebSockets);
    the server's pings keep the connection alive; clients send nothing."""

    def __init__(self, hub: EventHub) -> None:
        self._hub = hub

    async def on_get(self, req: Request, resp: Response) -> None:
        raise falcon.HTTPError(
            falcon.HTTP_426,
            description="this is a WebSocket: connect with a WebSocket handshake",
            headers={"Upgrade": "websocket"},
        )

    async def on_websocket(self, req: Request, ws: WebSocket) -> None:
        subscription = await self._hub.subscribe(req.get_param("last_event_id"))
        await ws.accept()
        listening = asyncio.create_task(_end_when_closed(ws, subscription))
        try:
            async for item in subscription.events(heartbeat_seconds=None):
                if isinstance(item, Reset):
                    await ws.send_media({"event": "reset"})
                elif item is not None:
                    await ws.send_media({"event": item.kind, "id": item.id, "data": item.data})
        except falcon.WebSocketDisconnected:
            return
        finally:
            listening.cancel()
        # NOTE: the service is stopping (1001), or this client did not keep up (1008).
        await ws.close(1008 if subscription.dropped else 1001)


async def _end_when_closed(ws: WebSocket, subscription: Subscription) -> None:
    """Reads what the client sends (nothing is expected), to notice at once when it leaves."""
    with contextlib.suppress(falcon.WebSocketDisconnected):
        while True:
            with contextlib.suppress(falcon.errors.PayloadTypeError):
                await ws.receive_text()
    subscription.offer(None)


class ImageList:
    """`/images`: the listing, oldest first, paginated; POST uploads."""

    cache_responses = True

    def __init__(self, images: ImageService, rate_limits: RateLimits, hub: EventHub) -> None:
        self._images = images
        self._rate_limits = rate_limits
        self._hub = hub

    async def on_get(self, req: Request, resp: Response) -> None:
        limit = req.get_param_as_int(
            "limit", min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE
        )
        page = await self._images.page(req.get_param("cursor"), limit)
        resp.media = [self._describe(record) for record in page.records]
        if page.next_cursor:
            resp.append_link(f"/images?limit={limit}&cursor={page.next_cursor}", "next")

    async def on_post(self, req: Request, resp: Response) -> None:
        caller: Caller = req.context.caller
        caller.may_upload()
        quota = await self._rate_limits.take("uploads", caller.identity)
        record = await self._images.upload(upload_body(req), owner=caller.owner)
        if quota is not None:
            resp.set_header("RateLimit-Policy", quota.policy)
            resp.set_header("RateLimit", quota.state)
        resp.status = falcon.HTTP_201
        resp.location = image_uri(record.id)
        resp.media = self._describe(record)
        await self._hub.publish("image.created", resp.media)

    def _describe(self, record: ImageRecord) -> dict[str, Any]:
        sizes = self._images.thumbnail_sizes(record)
        return {
            "id": str(record.id),
            "image": image_uri(record.id),
            "modified": falcon.dt_to_http(record.modified),
            "size": list(record.size),
            "name": record.name,
            "owner": record.owner,
            "thumbnails": [
                f"/thumbnails/{record.id}/{width}x{height}.jpeg" for width, height in sizes
            ],
            "thumbnail_sizes": [list(size) for size in sizes],
        }


class Image:
    """`/images/{id}.jpeg`: the JPEG, streamed, whole or a byte range; DELETE removes it."""

    def __init__(self, images: ImageService, hub: EventHub) -> None:
        self._images = images
        self._hub = hub

    async def on_get(self, req: Request, resp: Response, image_id: UUID) -> None:
        requested = _requested_range(req, etag=str(image_id))
        if requested is None and not is_conditional(req):
            stored = await self._images.open(image_id)  # one storage call in the common case
            self._answer_headers(req, resp, stored.record)  # never a 304: nothing to compare
        else:
            stat = await self._images.stat(image_id)
            if self._answer_headers(req, resp, stat.record):
                return
            stored = await self._images.open(image_id, requested)
        resp.stream = stored
        if stored.byte_range is None:
            resp.content_length = stored.length
        else:
            start, end = stored.byte_range
            resp.status = falcon.HTTP_206
            resp.content_range = (start, end, stored.length)
            resp.content_length = end - start + 1

    async def on_head(self, req: Request, resp: Response, image_id: UUID) -> None:
        stat = await self._images.stat(image_id)
        if not self._answer_headers(req, resp, stat.record):
            resp.content_length = stat.length

    def _answer_headers(self, req: Request, resp: Response, record: ImageRecord) -> bool:
        """Set the validators; True if that already answers the request (304)."""
        resp.content_type = falcon.MEDIA_JPEG
        resp.accept_ranges = "bytes"
        set_validators(resp, str(record.id), record.modified)
        if not_modified(req, str(record.id), record.modified):
            resp.status = falcon.HTTP_304
            return True
        return False

    async def on_delete(self, req: Request, resp: Response, image_id: UUID) -> None:
        caller: Caller = req.context.caller
        await self._images.delete(image_id, lambda record: caller.may_delete(record.owner))
        resp.status = falcon.HTTP_204
        await self._hub.publish("image.deleted", {"id": str(image_id)})


class Original:
    """`/images/{id}/original`: the upload as received (EXIF, GPS and all), to download; for
    the key that uploaded it and admins only."""

    def __init__(self, images: ImageService) -> None:
        self._images = images

    async def on_get(self, req: Request, resp: Response, image_id: UUID) -> None:
        caller: Caller = req.context.caller
        stored = await self._images.original(
            image_id, lambda record: caller.may_read_original(record.owner)
        )
        resp.content_type = stored.content_type
        resp.set_header(
            "Content-Disposition",
            attachment(
                stored.record.name
                or f"{image_id}{mimetypes.guess_extension(stored.content_type) or ''}"
            ),
        )
        # NOTE: private data: no shared cache may keep it, and no browser cache either.
        resp.cache_control = ("private", "no-store")
        resp.content_length = stored.length
        resp.stream = stored


class ReencodedImage:
    """`/images/{id}.{webp,avif}`: the whole image in another format, made on demand;
    `/images/{id}`: the format the request's Accept prefers (a JPEG is the stored one)."""

    cache_responses = True

    def __init__(
        self,
        images: ImageService,
        rate_limits: RateLimits,
        format: Format | None = None,
        jpeg: Image | None = None,
    ) -> None:
        self._images = images
        self._rate_limits = rate_limits
        self._format = format  # None: negotiated
        self._jpeg = jpeg  # answers a negotiated JPEG

    def cache_variant(self, req: Request) -> str:
        return _variant(self._format, req)

    async def on_get(self, req: Request, resp: Response, image_id: UUID) -> None:
        format = _chosen_format(self._format, req, resp)
        if format.name == "jpeg":
            assert self._jpeg is not None
            return await self._jpeg.on_get(req, resp, image_id)
        record = (await self._images.stat(image_id)).record
        await _answer_rendered(
            req,
            resp,
            self._rate_limits,
            format,
            self._images.thumbnail_etag(record, record.size, format),
            record,
            lambda: self._images.reencoded(record, format),
        )

    on_head = on_get


async def _answer_rendered(
    req: Request,
    resp: Response,
    rate_limits: RateLimits,
    format: Format,
    etag: str,
    record: ImageRecord,
    render: Callable[[], Awaitable[bytes]],
) -> None:
    """Answer with what `render` makes of an image whose record was just read: a 304 if the
    client has it, else the render, counted against the caller's render limit. (Read first,
    so that a 404 or a 304 neither renders nor counts as a render.)"""
    resp.content_type = format.media_type
    if not_modified(req, etag, record.modified):
        set_validators(resp, etag, record.modified)
        resp.status = falcon.HTTP_304
        return
    await rate_limits.take("renders", req.context.caller.identity)
    resp.data = await render()
    # NOTE: only now: an error (429, 503) must not carry a year's Cache-Control.
    set_validators(resp, etag, record.modified)


def _variant(format: Format | None, req: Request) -> str:
    """What a cached answer depends on beside its URL: the format negotiated, if it is."""
    if format is not None:
        return ""
    chosen = negotiate(req.get_header("Accept"))
    return chosen.name if chosen is not None else "none"


def _chosen_format(format: Format | None, req: Request, resp: Response) -> Format:
    """The URL's format, or the one the request's Accept prefers (406 if none)."""
    if format is not None:
        return format
    resp.vary = ("Accept",)
    chosen = negotiate(req.get_header("Accept"))
    if chosen is None:
        raise errors.NotAcceptable(f"this is served as {', '.join(FORMATS)}")
    return chosen


class Thumbnail:
    """`/thumbnails/{id}/{w}x{h}.{jpeg,webp,avif}`: rendered on demand, for the allowed sizes
    only; `/thumbnails/{id}/{w}x{h}`: in the format the request's Accept prefers."""

    cache_responses = True

    def __init__(
        self, images: ImageService, rate_limits: RateLimits, format: Format | None = None
    ) -> None:
        self._images = images
        self._rate_limits = rate_limits
        self._format = format  # None: negotiated

    def cache_variant(self, req: Request) -> str:
        return _variant(self._format, req)

    async def on_get(
        self, req: Request, resp: Response, image_id: UUID, width: int, height: int
    ) -> None:
        format = _chosen_format(self._format, req, resp)
        size = (width, height)
        read = await self._images.thumbnail_source(image_id, size, format)
        record = read.record
        await _answer_rendered(
            req,
            resp,
            self._rate_limits,
            format,
            self._images.thumbnail_etag(record, size, format),
            record,
            lambda: self._images.thumbnail(record, size, format, read.source),
        )

    on_head = on_get  # Falcon sends the headers and Content-Length, without the body


class Access:
    """`/access`: what the request's API key (or none) may do, so that a client such as the
    gallery offers only what the service will accept; 401 for a key it does not know."""

    async def on_get(self, req: Request, resp: Response) -> None:
        caller: Caller = req.context.caller
        resp.media = caller.allowed()
        resp.cache_control = ("no-store",)
        resp.vary = ("Authorization",)


class Liveness:
    """`/healthz`: the process is up and its event loop turns; nothing else is checked."""

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.media = {"status": "ok"}


class Readiness:
    """`/readyz`: 503 without the image store; 200 "degraded" without Redis, which is optional."""

    def __init__(self, storage: Storage, cache: Cache) -> None:
        self._storage = storage
        self._cache = cache

    async def on_get(self, req: Request, resp: Response) -> None:
        storage, cache = await asyncio.gather(
            _probe(self._storage.check()), _probe(self._cache.check())
        )
        if storage != "ok":
            status, resp.status = "unavailable", falcon.HTTP_503
            resp.set_header("Retry-After", str(_RETRY_AFTER_SECONDS[errors.StorageUnavailable]))
        else:
            status = "ready" if cache == "ok" else "degraded"
        resp.media = {"status": status, "storage": storage, "cache": cache}


async def _probe(check: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(check, PROBE_TIMEOUT_SECONDS)
    except Exception as error:  # a probe reports any failure, it does not raise it
        return f"unavailable: {error or type(error).__name__}"
    return "ok"


class MetricsEndpoint:
    """`/metrics`: Prometheus text format."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = CONTENT_TYPE
        resp.data = self._metrics.exposition()


def _requested_range(req: Request, etag: str) -> tuple[int, int] | None:
    """The Range asked for, unless If-Range says the client's copy is stale; bad ones ignored."""
    if_range = req.get_header("If-Range")
    if if_range is not None and if_range.strip('"') != etag:
        return None
    try:
        if req.range_unit not in (None, "bytes"):
            return None
        return req.range
    except falcon.HTTPInvalidHeader:
        return None  # RFC 9110 lets a server ignore a Range it does not understand


def json_error(req: Request, resp: Response, error: falcon.HTTPError) -> None:
    """Every error body is JSON, whatever the request's Accept (Falcon's default would send
    none to a client that accepts only images)."""
    resp.content_type = falcon.MEDIA_JSON
    resp.data = error.to_json()


async def unrouted(
    req: Request, resp: Response, error: Exception, params: Any, *, options: bool = True
) -> None:
    """Falcon's own 404 (no route) and 405 (no responder), with a description like ours;
    `options`: whether OPTIONS is answered (CORS), and so listed as allowed."""
    if isinstance(error, falcon.HTTPMethodNotAllowed):
        given = dict(error.headers or {}).get("Allow", "").split(", ")
        allowed = ", ".join(method for method in given if options or method != "OPTIONS")
        raise falcon.HTTPMethodNotAllowed(
            allowed.split(", "),
            description=f"{req.method} is not allowed here; the methods allowed are {allowed}",
        )
    raise falcon.HTTPNotFound(description=f"there is nothing at {req.path}")


async def service_error(req: Request, resp: Response, error: Exception, params: Any) -> None:
    """Answer a domain error with its status and a JSON body, like Falcon's own errors."""
    assert isinstance(error, errors.ServiceError)
    headers = {}
    if type(error) in _RETRY_AFTER_SECONDS:
        headers["Retry-After"] = str(_RETRY_AFTER_SECONDS[type(error)])
    if isinstance(error, errors.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{error.length}"
    if isinstance(error, errors.RateLimited):
        headers["Retry-After"] = str(error.retry_after)
        headers["RateLimit-Policy"] = error.policy
        headers["RateLimit"] = error.state
    if isinstance(error, errors.Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="asgilook"'

    raise falcon.HTTPError(
        _STATUS[type(error)], title=error.title, description=str(error), headers=headers
    )
