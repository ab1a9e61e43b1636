"""Falcon resources of the asgilook contract, and the mapping of domain errors to HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any
from uuid import UUID

import falcon
from falcon.asgi import Request, Response

from . import errors
from .cache import Cache
from .images import ImageRecord, ImageService, Storage
from .metrics import CONTENT_TYPE, Metrics

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
RETRY_AFTER_SECONDS = 5
PROBE_TIMEOUT_SECONDS = 2.0

_STATUS = {
    errors.ImageNotFound: falcon.HTTP_404,
    errors.EmptyUpload: falcon.HTTP_400,
    errors.InvalidImage: falcon.HTTP_400,
    errors.InvalidCursor: falcon.HTTP_400,
    errors.UploadTooLarge: falcon.HTTP_413,
    errors.ImageTooLarge: falcon.HTTP_413,
    errors.UnsupportedImage: falcon.HTTP_415,
    errors.StorageUnavailable: falcon.HTTP_503,
}


def image_uri(image_id: UUID) -> str:
    return f"/images/{image_id}.jpeg"


class ImageList:
    """`/images`: the listing, oldest first, paginated; POST uploads."""

    cache_responses = True

    def __init__(self, images: ImageService) -> None:
        self._images = images

    async def on_get(self, req: Request, resp: Response) -> None:
        limit = req.get_param_as_int(
            "limit", min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE
        )
        page = await self._images.page(req.get_param("cursor"), limit)
        resp.media = [self._describe(record) for record in page.records]
        if page.next_cursor:
            resp.append_link(f"/images?limit={limit}&cursor={page.next_cursor}", "next")

    async def on_post(self, req: Request, resp: Response) -> None:
        record = await self._images.upload(req.stream, req.content_length)
        resp.status = falcon.HTTP_201
        resp.location = image_uri(record.id)
        resp.media = self._describe(record)

    def _describe(self, record: ImageRecord) -> dict[str, Any]:
        return {
            "id": str(record.id),
            "image": image_uri(record.id),
            "modified": falcon.dt_to_http(record.modified),
            "size": list(record.size),
            "thumbnails": [
                f"/thumbnails/{record.id}/{width}x{height}.jpeg"
                for width, height in self._images.thumbnail_sizes(record)
            ],
        }


class Image:
    """`/images/{id}.jpeg`: the JPEG, streamed; DELETE removes the image."""

    def __init__(self, images: ImageService) -> None:
        self._images = images

    async def on_get(self, req: Request, resp: Response, image_id: UUID) -> None:
        stored = await self._images.open(image_id)
        resp.content_type = falcon.MEDIA_JPEG
        resp.content_length = stored.length
        resp.stream = stored

    async def on_delete(self, req: Request, resp: Response, image_id: UUID) -> None:
        await self._images.delete(image_id)
        resp.status = falcon.HTTP_204


class Thumbnail:
    """`/thumbnails/{id}/{w}x{h}.jpeg`: rendered on demand, for the allowed sizes only."""

    cache_responses = True

    def __init__(self, images: ImageService) -> None:
        self._images = images

    async def on_get(
        self, req: Request, resp: Response, image_id: UUID, width: int, height: int
    ) -> None:
        resp.content_type = falcon.MEDIA_JPEG
        resp.data = await self._images.thumbnail(image_id, (width, height))


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
            resp.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
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


async def service_error(req: Request, resp: Response, error: Exception, params: Any) -> None:
    """Answer a domain error with its status and a JSON body, like Falcon's own errors."""
    assert isinstance(error, errors.ServiceError)
    headers = {}
    if isinstance(error, errors.StorageUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    raise falcon.HTTPError(
        _STATUS[type(error)], title=error.title, description=str(error), headers=headers
    )
