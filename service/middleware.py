"""Falcon middleware: the response cache of the tutorial, made safe, and the app's lifespan."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

from falcon.asgi import Request, Response

from .cache import Cache

CACHE_HEADER = "X-ASGILook-Cache"
LISTING = "listing"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _namespace(params: dict[str, Any]) -> str:
    """The listing, or one image with its thumbnails."""
    image_id = params.get("image_id")
    return f"image:{image_id}" if image_id is not None else LISTING


class ResponseCache:
    """Caches 200 GET responses of resources with `cache_responses = True`.

    Writes invalidate their image and the listing, in every worker. Streamed bodies are never
    cached (the tutorial cached them as empty).
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def process_resource(
        self, req: Request, resp: Response, resource: object, params: dict[str, Any]
    ) -> None:
        resp.context.namespace = _namespace(params)
        resp.context.cache_slot = None
        if req.method != "GET" or not getattr(resource, "cache_responses", False):
            return
        key = f"{req.path}?{req.query_string}"
        cached, generation = await self._cache.get(resp.context.namespace, key)
        if cached is not None:
            status, headers, body = cached
            resp.status = status
            resp.set_headers(headers)
            resp.data = body
            resp.set_header(CACHE_HEADER, "Hit")
            resp.complete = True
            return
        resp.context.cache_slot = (key, generation)
        resp.set_header(CACHE_HEADER, "Miss")

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
                name: value for name, value in resp.headers.items() if name != CACHE_HEADER.lower()
            }
            await self._cache.set(
                resp.context.namespace, key, generation, [200, headers, body or b""]
            )


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
