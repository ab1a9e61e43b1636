"""Request telemetry, the tutorial's response cache made safe, hot hits answered in front of
Falcon, and the lifespan of long-lived clients."""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import falcon
from falcon.asgi import Request, Response

from ..cache import Cache
from ..errors import ClientDisconnected
from ..logs import AccessLog, request_id
from ..metrics import Metrics
from .validators import not_modified_by_headers

CACHE_HEADER = "X-ASGILook-Cache"
REQUEST_ID_HEADER = "X-Request-ID"
# Headers of a response that belong to its request, not to what a cache may replay.
_PER_REQUEST = frozenset({CACHE_HEADER.lower(), REQUEST_ID_HEADER.lower()})
# NOTE: a client's id is echoed into headers and logs, so only a safe, short one is kept.
_ACCEPTABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# NOTE: a conditional request's 304, and a cross-origin request's CORS headers, are Falcon's.
_FOR_FALCON = frozenset({b"if-none-match", b"if-modified-since", b"origin"})
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode()
_CACHE_HIT = (CACHE_HEADER.lower().encode(), b"Hit")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LISTING = "listing"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _namespace(params: dict[str, Any]) -> str:
    """The listing, or one image with its thumbnails."""
    image_id = params.get("image_id")
    return f"image:{image_id}" if image_id is not None else LISTING


class RequestTelemetry:
    """One log line and the metrics of every request, under its X-Request-ID."""

    def __init__(self, metrics: Metrics, access_log: AccessLog) -> None:
        self._metrics = metrics
        self._access_log = access_log
        # NOTE: labels() costs a lock and a lookup per call; the hit path keeps its children.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        # NOTE: generated ids are a random prefix of this process and a counter: unique, and
        #   cheaper than 16 random bytes a request.
        self._id_prefix = os.urandom(8).hex()
        self._id_counter = itertools.count(1)

    def start(self, given: str) -> str:
        """Count a request in flight; its id is the client's if acceptable, else a new one."""
        if given and _ACCEPTABLE_REQUEST_ID.fullmatch(given):
            identifier = given
        else:
            identifier = f"{self._id_prefix}{next(self._id_counter):016x}"
        request_id.set(identifier)
        self._metrics.add(self._metrics.in_flight)
        return identifier

    def finish(
        self, request: tuple[str, str, str], status: int, started: float, **log: Any
    ) -> None:
        """Count a request (method, path, route) answered; log it with `log`'s fields."""
        self._metrics.add(self._metrics.in_flight, -1)
        seconds = time.perf_counter() - started
        method, path, route = request
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self._metrics.requests.labels(method, route, str(status)),
                self._metrics.request_seconds.labels(method, route),
            )
            self._children[(method, route, status)] = children
        self._metrics.add(children[0])
        children[1].observe(seconds)
        if self._access_log.enabled():
            fields = {"method": method, "path": path, "route": route, "status": status,
                      "duration_ms": round(seconds * 1000, 3), **log}  # fmt: skip
            self._access_log.write(f"{method} {path} {status}", fields)

    async def process_request(self, req: Request, resp: Response) -> None:
        resp.set_header(REQUEST_ID_HEADER, self.start(req.get_header(REQUEST_ID_HEADER) or ""))
        req.context.started = time.perf_counter()

    async def process_response(
        self, req: Request, resp: Response, resource: object, req_succeeded: bool
    ) -> None:
        length = None
        if self._access_log.enabled():
            if resp.stream is None:
                length = len(await resp.render_body() or b"")
            elif resp.content_length is not None:
                length = int(resp.content_length)
        # NOTE: the route template, not the path, keeps label and log cardinality bounded.
        route = req.uri_template or resp.context.get("route") or "unmatched"
        caller = req.context.get("caller")
        self.finish(
            (req.method, req.relative_uri, route),
            resp.status_code,
            req.context.started,
            bytes=length,
            cache=resp.get_header(CACHE_HEADER),
            key=caller.owner if caller is not None else None,  # the key's name, never the key
        )


class NoSniff:
    """Every response says what its Content-Type says: browsers must not guess another."""

    async def process_request(self, req: Request, resp: Response) -> None:
        resp.set_header("X-Content-Type-Options", "nosniff")


class HotResponses:
    """The ASGI app in front of Falcon: a plain GET whose response this process holds in memory
    (Cache.peek: a hot entry, current in every worker) is answered here, without building
    Falcon's request, response and middleware chain. Everything else goes on to Falcon.
    """

    def __init__(
        self, app: ASGIApp, cache: Cache, telemetry: RequestTelemetry, metrics: Metrics
    ) -> None:
        self._app = app
        self._cache = cache
        self._telemetry = telemetry
        self._metrics = metrics
        self._hits = metrics.cache_lookups.labels("hit")
        # NOTE: the headers of the responses held, as the bytes ASGI sends, made once each;
        #   keyed by the identity of what the cache holds (kept here, so never reused).
        self._encoded: dict[int, tuple[dict[str, str], list[tuple[bytes, bytes]]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self._app(scope, receive, send)
        # NOTE: the key ResponseCache stores under: Falcon's req.path and req.query_string.
        query = scope["query_string"].decode()
        cached = self._cache.peek(f"{scope['path'] or '/'}?{query}")
        if cached is None:
            return await self._app(scope, receive, send)
        # NOTE: ASGI allows headers (and each pair) to be one-pass iterables: keep them.
        scope["headers"] = headers = [(name, value) for name, value in scope["headers"]]
        given = ""
        for name, value in headers:
            if name in _FOR_FALCON:
                return await self._app(scope, receive, send)
            if name == _REQUEST_ID_NAME:
                given = value.decode("latin-1")
        started = time.perf_counter()
        identifier = self._telemetry.start(given)
        status, stored_headers, body, route = cached
        try:
            await send({
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *self._encoded_headers(stored_headers),
                    (b"content-length", str(len(body)).encode()),
                    _CACHE_HIT,
                    (_REQUEST_ID_NAME, identifier.encode()),
                ],
            })  # fmt: skip
            await send({"type": "http.response.body", "body": body})
        finally:
            self._metrics.add(self._hits)
            path = f"{scope['path']}?{query}" if query else scope["path"]
            self._telemetry.finish(
                ("GET", path, route), status, started, bytes=len(body), cache="Hit"
            )

    def _encoded_headers(self, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        held = self._encoded.get(id(headers))
        if held is None or held[0] is not headers:
            if len(self._encoded) >= 1024:
                self._encoded.clear()
            held = self._encoded[id(headers)] = (
                headers,
                [(name.encode(), value.encode()) for name, value in headers.items()],
            )
        return held[1]


class CutShortBodies:
    """ASGI: a request body cut short by the client going away raises ClientDisconnected where
    it is read. (Falcon's request stream just ends, as if the body were complete, and a chunked
    body has no Content-Length to tell.)"""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        body_complete = False

        async def receive_body() -> dict[str, Any]:
            nonlocal body_complete
            event = await receive()
            if event["type"] == "http.request":
                body_complete = not event.get("more_body", False)
            elif event["type"] == "http.disconnect" and not body_complete:
                raise ClientDisconnected("the client went away before its whole body arrived")
            return event

        await self._app(scope, receive_body, send)


class ResponseCache:
    """Caches 200 GET responses of resources with `cache_responses = True`.

    Writes invalidate their image and the listing, in every worker. Streamed bodies are never
    cached (the tutorial cached them as empty).
    """

    def __init__(self, cache: Cache, metrics: Metrics) -> None:
        self._cache = cache
        self._metrics = metrics
        self._hits = metrics.cache_lookups.labels("hit")
        self._misses = metrics.cache_lookups.labels("miss")

    async def process_resource(
        self, req: Request, resp: Response, resource: object, params: dict[str, Any]
    ) -> None:
        resp.context.namespace = _namespace(params)
        resp.context.cache_slot = None
        if req.method not in ("GET", "HEAD") or not getattr(resource, "cache_responses", False):
            return
        if req.method == "HEAD" and not hasattr(resource, "on_head"):
            return  # NOTE: answered as Falcon does (405), cached GET or not
        key = f"{req.path}?{req.query_string}"
        # NOTE: a negotiated answer is kept per variant, under a key HotResponses never asks for.
        variant = resource.cache_variant(req) if hasattr(resource, "cache_variant") else ""
        if variant:
            key = f"{key}#{variant}"
        cached, generation = await self._cache.get(resp.context.namespace, key)
        if cached is not None:
            self._answer(req, resp, cached)
            return
        resp.context.cache_slot = (key, generation)
        resp.set_header(CACHE_HEADER, "Miss")
        self._metrics.add(self._misses)

    def _answer(self, req: Request, resp: Response, cached: list[Any]) -> None:
        status, headers, body, resp.context.route = cached
        resp.set_headers(headers)
        if not_modified_by_headers(req, headers):
            resp.status = falcon.HTTP_304
        else:
            resp.status = status
            resp.data = body
        resp.set_header(CACHE_HEADER, "Hit")
        resp.complete = True
        self._metrics.add(self._hits)

    async def process_response(
        self, req: Request, resp: Response, resource: object, req_succeeded: bool
    ) -> None:
        if not req_succeeded or "namespace" not in resp.context:
            return
        if req.method in WRITE_METHODS:
            await self._cache.invalidate(resp.context.namespace, LISTING)
        elif resp.context.cache_slot and resp.status_code == 200 and resp.stream is None:
            key, generation = resp.context.cache_slot
            body = await resp.render_body()
            headers = {
                name: value for name, value in resp.headers.items() if name not in _PER_REQUEST
            }
            entry = [200, headers, body or b"", req.uri_template]
            await self._cache.set(resp.context.namespace, key, generation, entry)


class Lifespan:
    """Opens long-lived clients on ASGI startup and closes them, in reverse, on shutdown."""

    def __init__(self, *components: AbstractAsyncContextManager[Any]) -> None:
        self._components = components
        self._stack = AsyncExitStack()

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        async with AsyncExitStack() as stack:
            for component in self._components:
                await stack.enter_async_context(component)
            # NOTE: reached only if all opened; a failed startup closes what it opened.
            self._stack = stack.pop_all()

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        await self._stack.aclose()
