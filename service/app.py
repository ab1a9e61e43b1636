"""The composition root: create_app(settings) builds and wires everything."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from importlib.metadata import version
from typing import Any
from uuid import UUID

import falcon
import falcon.asgi
import uuid6

from .access.callers import Callers
from .access.cors import Cors, NoOptionsWithoutCors
from .access.rate_limits import RateLimits
from .cache import Cache, MemoryCache, RedisCache
from .errors import ServiceError
from .events.hub import EventHub
from .events.logs import EventLog, LocalEventLog, RedisEventLog
from .formats import FORMATS
from .http.middleware import (
    ASGIApp,
    CutShortBodies,
    HotResponses,
    Lifespan,
    NoSniff,
    RequestTelemetry,
    ResponseCache,
)
from .http.resources import (
    Access,
    Events,
    EventsOverWebSocket,
    Image,
    ImageList,
    Liveness,
    MetricsEndpoint,
    Original,
    Readiness,
    ReencodedImage,
    Thumbnail,
    json_error,
    service_error,
    unrouted,
)
from .images import ImageService, Storage, utc_now
from .levels import Levels
from .logs import AccessLog
from .metrics import Metrics
from .settings import Settings
from .storage.janitor import Janitor
from .storage.local import LocalStorage
from .storage.s3 import S3Storage
from .web import Files, docs, gallery
from .web.openapi import describe_api
from .workers import ImageWorkers

log = logging.getLogger(__name__)


def build_stores(settings: Settings, metrics: Metrics) -> tuple[Storage, Cache]:
    """The image store and the response cache the settings ask for, not yet opened."""
    storage: Storage
    if settings.s3_bucket:
        storage = S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            region=settings.s3_region,
            endpoint_url=settings.s3_endpoint_url,
            create_bucket=settings.s3_create_bucket,
            max_attempts=settings.s3_max_attempts,
            metrics=metrics,
        )
    else:
        storage = LocalStorage(settings.storage_path)

    cache: Cache
    if settings.redis_url:
        cache = RedisCache(
            settings.redis_url,
            settings.cache_ttl,
            metrics,
            local_max_bytes=settings.cache_max_bytes,
        )
    else:
        cache = MemoryCache(
            settings.cache_max_bytes,
            settings.cache_ttl,
            settings.storage_path / "cache-generations",
        )
    return storage, cache


def create_app(
    settings: Settings,
    *,
    new_id: Callable[[], UUID] = uuid6.uuid7,
    clock: Callable[[], datetime] = utc_now,
) -> ASGIApp:
    """Build the ASGI app; clients open on lifespan startup and close on shutdown."""
    metrics = Metrics()
    storage, cache = build_stores(settings, metrics)

    rate_limits = RateLimits(
        {"uploads": settings.rate_limit_uploads, "renders": settings.rate_limit_renders},
        settings.redis_url,
    )
    event_log: EventLog = (
        RedisEventLog(settings.redis_url, settings.event_history)
        if settings.redis_url
        else LocalEventLog(settings.storage_path / "events.sqlite3", settings.event_history)
    )
    hub = EventHub(event_log, metrics)
    workers = ImageWorkers(
        settings.image_threads, settings.image_queue, settings.image_memory_bytes, metrics
    )
    images = ImageService(
        storage,
        workers,
        Levels(settings.level_cache_bytes),
        metrics=metrics,
        max_upload_bytes=settings.max_upload_bytes,
        upload_timeout=settings.upload_timeout,
        max_image_pixels=settings.max_image_pixels,
        min_thumb_size=settings.min_thumb_size,
        new_id=new_id,
        clock=clock,
    )

    keyring = settings.keyring()
    if not keyring:
        log.warning(
            "no API key is configured: anyone may upload and delete. To require keys, set "
            "ASGILOOK_API_KEYS or ASGILOOK_API_KEYS_FILE (keys from `asgilook keys new NAME`)"
        )
    telemetry = RequestTelemetry(metrics, AccessLog())
    middleware: list[Any] = [
        telemetry,
        NoSniff(),
        # NOTE: before the response cache: its headers are added to cached answers too.
        Cors(origins) if (origins := settings.cors_origin_list()) else NoOptionsWithoutCors(),
        Callers(keyring, settings.anonymous_writes),
        Lifespan(
            storage,
            cache,
            rate_limits,
            hub,
            workers,
            Janitor(storage, settings.orphan_age, metrics, clock),
        ),
        ResponseCache(cache, metrics),
    ]
    app = falcon.asgi.App(middleware=middleware)
    app.add_route("/images", ImageList(images, rate_limits, hub))
    app.add_route("/events", Events(hub, settings.event_heartbeat))
    app.add_route("/events/ws", EventsOverWebSocket(hub))
    page = gallery()
    app.add_route("/", page)
    app.add_route("/static/{name}", page)
    api_docs = docs()
    app.add_route("/docs", api_docs)
    app.add_route("/docs/{name}", api_docs)
    jpeg = Image(images, hub)
    app.add_route("/images/{image_id:uuid}.jpeg", jpeg)
    for format in FORMATS.values():
        if format.name != "jpeg":
            path = f"/images/{{image_id:uuid}}.{format.name}"
            app.add_route(path, ReencodedImage(images, rate_limits, format))
    app.add_route("/images/{image_id:uuid}", ReencodedImage(images, rate_limits, jpeg=jpeg))
    app.add_route("/images/{image_id:uuid}/original", Original(images))
    thumbnails = "/thumbnails/{image_id:uuid}/{width:int}x{height:int}"
    for format in FORMATS.values():
        app.add_route(f"{thumbnails}.{format.name}", Thumbnail(images, rate_limits, format))
    app.add_route(thumbnails, Thumbnail(images, rate_limits))
    app.add_route("/access", Access())
    app.add_route("/healthz", Liveness())
    app.add_route("/readyz", Readiness(storage, cache))
    app.add_route("/metrics", MetricsEndpoint(metrics))
    # NOTE: the document describes every route, its own included (and fails if one is not).
    app.add_route("/openapi.json", openapi := Files({}, "openapi.json"))
    document = describe_api(
        app,
        version("asgilook"),
        files={"/static/{name}": page.names, "/docs/{name}": api_docs.names},
        options=bool(origins),
    )
    openapi.add("openapi.json", json.dumps(document).encode())
    app.set_error_serializer(json_error)
    app.add_error_handler(ServiceError, service_error)
    app.add_error_handler(falcon.HTTPRouteNotFound, unrouted)
    app.add_error_handler(falcon.HTTPMethodNotAllowed, partial(unrouted, options=bool(origins)))
    return HotResponses(CutShortBodies(app), cache, telemetry, metrics)
