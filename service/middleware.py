"""Falcon middleware: request telemetry, the tutorial's response cache made safe, the lifespan."""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import falcon
from falcon.asgi import Request, Response

from .cache import Cache
from .logs import request_id
from .metrics import Metrics
from .validators import not_modified_by_headers

access_log = logging.getLogger("asgilook.access")
CACHE_HEADER = "X-ASGILook-Cache"
REQUEST_ID_HEADER = "X-Request-ID"
# Headers of a response that belong to its request, not to what a cache may replay.
_PER_REQUEST = frozenset({CACHE_HEADER.lower(), REQUEST_ID_HEADER.lower()})
# NOTE: a client's id is echoed into headers and logs, so only a safe, short one is kept.
_ACCEPTABLE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

LISTING = "listing"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _namespace(params: dict[str, Any]) -> str:
    """The listing, or one image with its thumbnails."""
    image_id = params.get("image_id")
    return f"image:{image_id}" if image_id is not None else LISTING


class RequestTelemetry:
    """One log line and the metrics of every request, under its X-Request-ID."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # NOTE: labels() costs a lock and a lookup per call; the hit path keeps its children.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _count(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self._metrics.requests.labels(method, route, str(status)),
                self._metrics.request_seconds.labels(method, route),
            )
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    async def process_request(self, req: Request, resp: Response) -> None:
        given = req.get_header(REQUEST_ID_HEADER) or ""
        identifier = given if _ACCEPTABLE_REQUEST_ID.fullmatch(given) else os.urandom(16).hex()
        request_id.set(identifier)
        resp.set_header(REQUEST_ID_HEADER, identifier)
        req.context.started = time.perf_counter()
        self._metrics.in_flight.inc()

    async def process_response(
        self, req: Request, resp: Response, resource: object, req_succeeded: bool
    ) -> None:
        self._metrics.in_flight.dec()
        seconds = time.perf_counter() - req.context.started
        # NOTE: the route template, not the path, keeps label and log cardinality bounded.
        route = req.uri_template or resp.context.get("route") or "unmatched"
        status = resp.status_code
        self._count(req.method, route, status, seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return
        if resp.stream is None:
            length: int | None = len(await resp.render_body() or b"")
        else:
            length = int(resp.content_length) if resp.content_length is not None else None
        access_log.info(
            "%s %s %s",
            req.method,
            req.relative_uri,
            status,
            extra={
                "method": req.method,
                "path": req.relative_uri,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "bytes": length,
                "cache": resp.get_header(CACHE_HEADER),
            },
        )


class ResponseCache:
    """Caches 200 GET responses of resources with `cache_responses = True`.

    Writes invalidate their image and the listing, in every worker. Streamed bodies are never
    cached (the tutorial cached them as empty).
    """

    def __init__(self, cache: Cache, metrics: Metrics) -> None:
        self._cache = cache
        self._hits = metrics.cache_lookups.labels("hit")
        self._misses = metrics.cache_lookups.labels("miss")

    async def process_request(self, req: Request, resp: Response) -> None:
        """The fast path: a hit held in this process is answered before routing, without I/O."""
        if req.method == "GET":
            cached = self._cache.peek(f"{req.path}?{req.query_string}")
            if cached is not None:
                self._answer(req, resp, cached)

    async def process_resource(
        self, req: Request, resp: Response, resource: object, params: dict[str, Any]
    ) -> None:
        resp.context.namespace = _namespace(params)
        resp.context.cache_slot = None
        if req.method not in ("GET", "HEAD") or not getattr(resource, "cache_responses", False):
            return
        key = f"{req.path}?{req.query_string}"
        cached, generation = await self._cache.get(resp.context.namespace, key)
        if cached is not None:
            self._answer(req, resp, cached)
            return
        resp.context.cache_slot = (key, generation)
        resp.set_header(CACHE_HEADER, "Miss")
        self._misses.inc()

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
        self._hits.inc()

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
