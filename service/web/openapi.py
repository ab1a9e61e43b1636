"""The OpenAPI 3.1 document of the service, `GET /openapi.json`.

Paths and methods come from the app's own router: every route and responder must have an
operation written below, and every operation below must have a route and responder, or the app
does not start. What each operation takes and answers is written here, next to the others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import falcon.asgi
import falcon.inspect

from ..formats import FORMATS
from ..processing import JPEG_MAX_SIDE

Json = dict[str, Any]

SOURCE_TYPES = (
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff",
    "image/heic", "image/heif", "image/avif", "application/octet-stream",
)  # fmt: skip


def header(description: str, schema: Json | None = None) -> Json:
    return {"description": description, "schema": schema or {"type": "string"}}


HEADERS = {
    "X-Request-ID": header("The request's id: the client's if it sent a usable one."),
    "X-ASGILook-Cache": header("Whether the response came from the cache.",
                               {"enum": ["Hit", "Miss"]}),
    "ETag": header("A strong entity tag."),
    "Last-Modified": header("An HTTP date."),
    "Cache-Control": header("Images and thumbnails: public, a year, immutable."),
    "Vary": header("The request headers the response depends on."),
    "Location": header("The new image's JPEG."),
    "Link": header("The next page: `<…>; rel=\"next\"`."),
    "Retry-After": header("Seconds to wait.", {"type": "integer", "minimum": 0}),
    "Content-Range": header("`bytes first-last/length`, or `bytes */length` (416)."),
    "Accept-Ranges": header("`bytes`."),
    "RateLimit": header("The quota left (IETF draft RateLimit header fields)."),
    "RateLimit-Policy": header("The quota's limit and window."),
    "WWW-Authenticate": header("`Bearer realm=\"asgilook\"`."),
    "Allow": header("The methods allowed."),
    "Upgrade": header("`websocket`."),
    "Content-Disposition": header("`attachment`, with the uploaded file's name."),
    "Content-Security-Policy": header("The page's policy: no inline script, no other origin."),
    "X-Accel-Buffering": header("`no`: proxies pass each event on at once."),
}  # fmt: skip


def ref(kind: str, name: str) -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def errors(*statuses: int) -> Json:
    """The error responses of an operation, from the shared ones below."""
    return {str(status): ref("responses", ERRORS[status][0]) for status in statuses}


def headers(*names: str, required: tuple[str, ...] = ()) -> Json:
    """References to shared headers; a header a response always has is written out with
    `required` (a reference may not have it)."""
    return {name: {**HEADERS[name], "required": True} if name in required
            else ref("headers", name) for name in names}  # fmt: skip


REQUEST_ID = headers("X-Request-ID", required=("X-Request-ID",))


def error_response(description: str, *extra_headers: str) -> Json:
    return {
        "description": description,
        "headers": {**headers(*extra_headers), **REQUEST_ID},
        "content": {"application/json": {"schema": ref("schemas", "Error")}},
    }


ERRORS: dict[int, tuple[str, str, tuple[str, ...]]] = {  # status: name, when, extra headers
    400: ("BadRequest", "The request is malformed: an empty, truncated or corrupt upload, a form "
          "without exactly one file part, a bad `limit` or `cursor`.", ()),
    401: ("Unauthorized", "An API key is needed, or the one sent is not known.",
          ("WWW-Authenticate",)),
    403: ("Forbidden", "The API key may not do this (an uploader touches its own images only).",
          ()),
    404: ("NotFound", "No such image, thumbnail size or file.", ()),
    406: ("NotAcceptable", "`Accept` admits none of the formats served.", ()),
    408: ("RequestTimeout", "The body did not arrive within the upload timeout.", ()),
    409: ("Conflict", "An image with this id is already stored; it is left untouched.", ()),
    413: ("TooLarge", "The body, or the image's pixel count or a side, is over the limit.", ()),
    415: ("Unsupported", "Not an image, or a variant of a format the decoders cannot read; the "
          "description names it.", ()),
    416: ("RangeNotSatisfiable", "The range is outside the image.", ("Content-Range",)),
    429: ("RateLimited", "Over a rate limit (per key, or per client address without one).",
          ("Retry-After", "RateLimit", "RateLimit-Policy")),
    503: ("Unavailable", "The image store cannot be reached, or more image work waits than the "
          "queue allows.", ("Retry-After",)),
}  # fmt: skip


def binary(*media_types: str) -> Json:
    return {media_type: {"schema": {"type": "string", "format": "binary"}}
            for media_type in media_types}  # fmt: skip


def served(media_types: tuple[str, ...], extra: tuple[str, ...] = (), head: bool = False) -> Json:
    """200 with an image, its validators and caching headers (HEAD: the headers alone)."""
    response: Json = {
        "description": "The image.",
        "headers": headers("ETag", "Last-Modified", "Cache-Control", *extra,
                           required=("ETag", "Last-Modified", "Cache-Control")),
    }  # fmt: skip
    if not head:
        response["content"] = binary(*media_types)
    return response


NOT_MODIFIED = {"description": "Not modified: the client's copy is current.",
                "headers": headers("ETag", "Cache-Control")}  # fmt: skip
VALIDATORS = [ref("parameters", "If-None-Match"), ref("parameters", "If-Modified-Since")]
RANGES = [ref("parameters", "Range"), ref("parameters", "If-Range")]
MAYBE_KEY: list[Json] = [{}, {"bearer": []}]  # anonymous, or with a key


def rendered(kind: str, format: str | None, head: bool) -> Json:
    """An image or thumbnail made on demand, in one format or the one Accept prefers."""
    media_types = tuple(FORMATS[name].media_type for name in ([format] if format else FORMATS))
    extra = ("X-ASGILook-Cache",) if format else ("X-ASGILook-Cache", "Vary")
    responses = {
        "200": served(media_types, extra, head),
        "304": NOT_MODIFIED,
        **errors(404, 429, 503),
    }
    parameters = list(VALIDATORS)
    if format is None:
        parameters.append(ref("parameters", "Accept"))
        responses.update(errors(406))
        if kind == "image":  # a negotiated JPEG is the stored one, ranges and all
            parameters += RANGES
            responses.update({"206": partial(head), **errors(416)})
    return {"parameters": parameters, "responses": responses}


def partial(head: bool) -> Json:
    response: Json = {
        "description": "The range asked for.",
        "headers": headers("Content-Range", "ETag", required=("Content-Range",)),
    }
    if not head:
        response["content"] = binary("image/jpeg")
    return response


def stored_jpeg(head: bool) -> Json:
    return {
        "parameters": [*VALIDATORS, *RANGES],
        "responses": {
            "200": served(("image/jpeg",), ("Accept-Ranges",), head),
            "206": partial(head),
            "304": NOT_MODIFIED,
            **errors(404, 416, 503),
        },
    }


def page(media_types: tuple[str, ...], description: str, *, not_found: bool = False) -> Json:
    """The gallery's and the docs' files: ETags, revalidated by browsers (no-cache)."""
    responses: Json = {
        "200": {
            "description": description,
            "headers": headers("ETag", "Cache-Control", "Content-Security-Policy"),
            "content": {media_type: {"schema": {"type": "string"}} for media_type in media_types},
        },
        "304": NOT_MODIFIED,
    }
    if not_found:
        responses.update(errors(404))
    return {"parameters": [ref("parameters", "If-None-Match")], "responses": responses}


def operations() -> dict[tuple[str, str], Json]:
    """Every operation, by OpenAPI path and method."""
    ops: dict[tuple[str, str], Json] = {
        ("/images", "GET"): {
            "operationId": "listImages",
            "summary": "List images, oldest first",
            "parameters": [ref("parameters", "limit"), ref("parameters", "cursor")],
            "responses": {
                "200": {
                    "description": "A page of images; `Link: <…>; rel=next` while more remain.",
                    "headers": headers("Link", "X-ASGILook-Cache"),
                    "content": {
                        "application/json": {
                            "schema": {"type": "array", "items": ref("schemas", "Image")}
                        }
                    },
                },
                **errors(400, 503),
            },
        },
        ("/images", "POST"): {
            "operationId": "uploadImage",
            "summary": "Upload an image",
            "description": "The body is the image (any type listed; the content decides), or a "
            "form with one file part. The upload is kept as received; a JPEG of it is served: "
            "upright, sRGB, without metadata. With keys configured, a key is needed unless "
            "anonymous writes are allowed.",
            "security": MAYBE_KEY,
            "parameters": [ref("parameters", "Content-Disposition")],
            "requestBody": {
                "required": True,
                "content": {
                    **binary(*SOURCE_TYPES),
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        },
                    },
                },
            },
            "responses": {
                "201": {
                    "description": "Stored.",
                    "headers": headers(
                        "Location", "RateLimit", "RateLimit-Policy", required=("Location",)
                    ),
                    "content": {"application/json": {"schema": ref("schemas", "Image")}},
                },
                **errors(400, 401, 408, 409, 413, 415, 429, 503),
            },
        },
        ("/images/{image_id}.jpeg", "GET"): {
            "operationId": "getImage",
            "summary": "The stored JPEG, whole or a byte range",
            **stored_jpeg(head=False),
        },
        ("/images/{image_id}.jpeg", "HEAD"): {
            "operationId": "headImage",
            "summary": "The stored JPEG's headers",
            **stored_jpeg(head=True),
        },
        ("/images/{image_id}.jpeg", "DELETE"): {
            "operationId": "deleteImage",
            "summary": "Delete an image, its thumbnails and its listing entry",
            "description": "With keys configured: the key that uploaded it, or an admin's.",
            "security": MAYBE_KEY,
            "responses": {
                "204": {
                    "description": "Deleted.",
                    "links": {
                        "GetImage": {
                            "operationId": "getImage",
                            "parameters": {"image_id": "$request.path.image_id"},
                        }
                    },
                },
                **errors(401, 403, 404, 503),
            },
        },
        ("/images/{image_id}/original", "GET"): {
            "operationId": "getOriginal",
            "summary": "The upload exactly as received (EXIF and GPS included), to download",
            "description": "Only for the key that uploaded it, and admins'; never cached.",
            "security": MAYBE_KEY,
            "responses": {
                "200": {
                    "description": "The original file, with its type.",
                    "headers": headers(
                        "Content-Disposition", "Cache-Control", required=("Content-Disposition",)
                    ),
                    "content": binary("image/*", "application/octet-stream"),
                },
                **errors(401, 403, 404, 503),
            },
        },
        ("/events", "GET"): {
            "operationId": "events",
            "summary": "Uploads and deletes, live, as Server-Sent Events",
            "description": "`event: image.created` (data: the image's JSON, as listed) and "
            '`event: image.deleted` (data: `{"id": …}`), each with an `id:` that is the same '
            "in every worker and replica; `event: reset` when `Last-Event-ID` is older than the "
            "history kept (reload the listing). A `retry:` hint first; a heartbeat comment "
            "every 15 s. The stream does not end by itself.",
            "parameters": [ref("parameters", "Last-Event-ID")],
            "responses": {
                "200": {
                    "description": "The event stream.",
                    "headers": headers("Cache-Control", "X-Accel-Buffering"),
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
            },
        },
        ("/events/ws", "GET"): {
            "operationId": "eventsOverWebSocket",
            "summary": "The same events over a WebSocket",
            "description": "Connect with a WebSocket handshake (101 Switching Protocols). One "
            'JSON text message per event: `{"event": "image.created", "id": …, "data": '
            '{…}}`, or `{"event": "reset"}`. Closes with 1001 when the service stops, 1008 '
            "when the client falls behind.",
            "parameters": [ref("parameters", "last_event_id")],
            "responses": {
                "101": {"description": "Switching protocols: the WebSocket feed."},
                "426": error_response("Not a WebSocket handshake.", "Upgrade"),
            },
        },
        ("/access", "GET"): {
            "operationId": "access",
            "summary": "What the request's API key (or none) may do",
            "security": MAYBE_KEY,
            "responses": {
                "200": {
                    "description": "What a client may offer its user.",
                    "headers": headers("Cache-Control", "Vary"),
                    "content": {"application/json": {"schema": ref("schemas", "Access")}},
                },
                **errors(401),
            },
        },
        ("/healthz", "GET"): {
            "operationId": "liveness",
            "summary": "The process is up and its event loop turns",
            "responses": {
                "200": {
                    "description": "Alive.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"status": {"const": "ok"}},
                                "required": ["status"],
                            }
                        }
                    },
                }
            },
        },
        ("/readyz", "GET"): {
            "operationId": "readiness",
            "summary": "Whether the image store (and Redis, optional) can be reached",
            "responses": {
                "200": {
                    "description": "Ready, or degraded (no Redis).",
                    "content": {"application/json": {"schema": ref("schemas", "Readiness")}},
                },
                "503": {
                    "description": "The image store cannot be reached.",
                    "headers": headers("Retry-After"),
                    "content": {"application/json": {"schema": ref("schemas", "Readiness")}},
                },
            },
        },
        ("/metrics", "GET"): {
            "operationId": "metrics",
            "summary": "Prometheus metrics of this worker",
            "responses": {
                "200": {
                    "description": "The text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        },
    }
    for head in (False, True):
        method, verb = ("HEAD", "head") if head else ("GET", "get")
        for format in [*FORMATS, None]:
            suffix = f".{format}" if format else ""
            # NOTE: getImage and getThumbnail are the JPEGs; getImageWebp, getImageNegotiated...
            variant = {"jpeg": "", None: "Negotiated"}.get(format, str(format).capitalize())
            served_as = f"as {format.upper()}" if format else "in the format `Accept` prefers"
            if format != "jpeg":  # the stored JPEG is above
                ops[f"/images/{{image_id}}{suffix}", method] = {
                    "operationId": f"{verb}Image{variant}",
                    "summary": f"The whole image, {served_as}",
                    **rendered("image", format, head),
                }
            ops[f"/thumbnails/{{image_id}}/{{width}}x{{height}}{suffix}", method] = {
                "operationId": f"{verb}Thumbnail{variant}",
                "summary": f"A thumbnail of a listed size, {served_as}",
                **rendered("thumbnail", format, head),
            }
        for path, name, media_type, what in FILES:
            ops[path, method] = {
                "operationId": f"{verb}{name}",
                "summary": what if not head else f"{what}: the headers",
                **page(media_type, what, not_found="{name}" in path),
            }
    # NOTE: from an upload, or a listing's first image, to everything done with an image.
    ops["/images", "POST"]["responses"]["201"]["links"] = links_to_images(ops, "#")
    ops["/images", "GET"]["responses"]["200"]["links"] = links_to_images(ops, "#/0")
    return ops


def links_to_images(ops: dict[tuple[str, str], Json], image: str) -> Json:
    """Links to each operation on an image (a thumbnail: its first size) from a response
    whose body has the image's JSON at the pointer `image`."""
    links = {}
    for (path, _), operation in ops.items():
        if "{image_id}" not in path:
            continue
        parameters = {"image_id": f"$response.body{image}/id"}
        if "{width}" in path:
            parameters["width"] = f"$response.body{image}/thumbnail_sizes/0/0"
            parameters["height"] = f"$response.body{image}/thumbnail_sizes/0/1"
        name = operation["operationId"]
        links[name[0].upper() + name[1:]] = {"operationId": name, "parameters": parameters}
    return links


SCRIPTS_AND_STYLES = ("text/javascript", "text/css", "text/html")  # index.html too
FILES = [  # path, operation, media types, summary
    ("/", "Gallery", ("text/html",), "The gallery page"),
    ("/static/{name}", "GalleryFile", SCRIPTS_AND_STYLES, "A file of the gallery page"),
    ("/docs", "Docs", ("text/html",), "This document, for people (Swagger UI)"),
    ("/docs/{name}", "DocsFile", SCRIPTS_AND_STYLES, "A file of the docs page"),
    ("/openapi.json", "OpenApi", ("application/json",), "This document"),
]


def describe_api(
    app: falcon.asgi.App[Any, Any], version: str, files: Mapping[str, list[str]], options: bool
) -> Json:
    """The document of every route and responder of `app`; `files`: the names a path's
    `{name}` takes; `options`: whether OPTIONS is answered (CORS preflights)."""
    described = operations()
    paths: Json = {}
    for route in falcon.inspect.inspect_app(app).routes:
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route.path)
        named = [ref("parameters", name) for name in re.findall(r"\{(\w+)\}", path)]
        if path in files:
            named = [{**COMPONENTS["parameters"]["name"], "schema": {"enum": files[path]}}]
        item: Json = {"parameters": [*named, ref("parameters", "X-Request-ID")]}
        # NOTE: a WebSocket is described by the GET of its handshake.
        for method in sorted(m.method for m in route.methods if not m.internal):
            if method == "WEBSOCKET":
                continue
            try:
                item[method.lower()] = finished(described.pop((path, method)), path)
            except KeyError:
                raise RuntimeError(f"{method} {path} is routed but not described") from None
        if options:
            preflight = {
                "operationId": "options" + re.sub(r"\W+", "_", path),
                "summary": "A CORS preflight",
                "responses": {
                    "200": {"description": "No body.", "headers": headers("Allow")},
                    **errors(404),
                },
            }
            item["options"] = finished(preflight, path)
        paths[path] = item
    if described:
        raise RuntimeError(f"described but not routed: {sorted(described)}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ASGILook",
            "version": version,
            "summary": "A self-hosted image service: uploads, listings, downloads, thumbnails.",
            "description": DESCRIPTION,
        },
        "tags": [{"name": name, "description": what} for name, (_, what) in TAGS.items()],
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": COMPONENTS,
    }


def finished(operation: Json, path: str) -> Json:
    """An operation with its tag, and X-Request-ID on every response (a shared response, a
    reference, has it in its component)."""
    responses = {
        status: response if "$ref" in response
        else {**response, "headers": {**response.get("headers", {}), **REQUEST_ID}}
        for status, response in operation["responses"].items()
    }  # fmt: skip
    return {**operation, "tags": [tag_of(path)], "responses": responses}


TAGS = {  # tag: (the paths it groups, what they are)
    "Images": ("/images", "Upload, list, download and delete images."),
    "Thumbnails": ("/thumbnails", "Thumbnails of the listed sizes, made on demand."),
    "Events": ("/events", "Uploads and deletes, live."),
    "Access": ("/access", "What an API key may do."),
    "Operations": ("/healthz /readyz /metrics", "Health, readiness and metrics."),
    "Pages": ("/", "The gallery page, this document and its docs page."),
}


def tag_of(path: str) -> str:
    return next(tag for tag, (paths, _) in TAGS.items()
                if any(path.startswith(p) for p in paths.split()))  # fmt: skip


DESCRIPTION = """Images are uploaded as they are, served as an upright, metadata-free JPEG (and
WebP or AVIF on demand), and shrunk to a series of thumbnail sizes, each half the one before.
Every error is JSON (`Error`). Every response carries `X-Request-ID`. With API keys configured,
writes need a key (`Authorization: Bearer <key>`) unless anonymous writes are allowed; reads are
public. A method a path does not take gets 405 with `Allow`; OPTIONS is answered only when CORS
is configured (preflights)."""


def path_parameter(name: str, description: str, schema: Json) -> Json:
    return {"in": "path", "name": name, "description": description, "schema": schema,
            "required": True}  # fmt: skip


def optional(where: str, name: str, description: str, schema: Json) -> Json:
    return {"in": where, "name": name, "description": description, "schema": schema}


UUID = {"type": "string", "format": "uuid"}
SIDE = {"type": "integer", "minimum": 1, "maximum": JPEG_MAX_SIDE}
STRING = {"type": "string"}
LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}
PARAMETERS = [
    path_parameter("image_id", "The image's id.", UUID),
    path_parameter("width", "A width of the image's thumbnail series.", SIDE),
    path_parameter("height", "The height that goes with it.", SIDE),
    path_parameter("name", "The file's name.", STRING),
    optional("query", "limit", "Images per page.", LIMIT),
    optional(
        "query", "cursor", "Where the page starts: from the last page's Link.", CURSOR
    ),
    optional("query", "last_event_id", "Resume after this event's id.", STRING),
    optional("header", "Last-Event-ID", "Resume after this event's id.", STRING),
    optional("header", "Accept", "The formats the client takes, with q-values.", STRING),
    optional("header", "If-None-Match", "ETags the client holds.", STRING),
    optional("header", "If-Modified-Since", "An HTTP date.", STRING),
    optional("header", "Range", "One byte range: `bytes=first-last`.", STRING),
    optional(
        "header", "If-Range", "The range only if this ETag or date is current.", STRING
    ),
    optional(
        "header",
        "Content-Disposition",
        'A raw upload\'s file name: `attachment; filename="photo.jpg"`.',
        STRING,
    ),
    optional(
        "header", "X-Request-ID", "The request's id for the logs (echoed back).", STRING
    ),
]  # fmt: skip
COMPONENTS: Json = {
    "securitySchemes": {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key made by `asgilook keys new NAME`.",
        },
    },
    "schemas": {
        "Image": {
            "type": "object",
            "required": [
                "id",
                "image",
                "modified",
                "size",
                "name",
                "owner",
                "thumbnails",
                "thumbnail_sizes",
            ],
            "properties": {
                "id": UUID,
                "image": {"type": "string", "description": "The JPEG's path."},
                "modified": {"type": "string", "description": "An HTTP date."},
                "size": ref("schemas", "Size"),
                "name": {"type": ["string", "null"], "description": "The uploaded file's name."},
                "owner": {
                    "type": ["string", "null"],
                    "description": "The name of the API key that uploaded it.",
                },
                "thumbnails": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The thumbnails' paths, largest first.",
                },
                "thumbnail_sizes": {
                    "type": "array",
                    "items": ref("schemas", "Size"),
                    "description": "Their sizes, in the same order.",
                },
            },
        },
        "Size": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "minItems": 2,
            "maxItems": 2,
            "description": "Width and height, in pixels.",
        },
        "Error": {
            "type": "object",
            "required": ["title", "description"],
            "properties": {"title": {"type": "string"}, "description": {"type": "string"}},
        },
        "Access": {
            "type": "object",
            "required": ["key", "keys_configured", "upload", "delete", "read_originals"],
            "properties": {
                "key": {"type": ["string", "null"], "description": "The key's name."},
                "keys_configured": {"type": "boolean"},
                "upload": {"type": "boolean"},
                "delete": {"enum": ["any", "own", "none"]},
                "read_originals": {"enum": ["any", "own", "none"]},
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "storage", "cache"],
            "properties": {
                "status": {"enum": ["ready", "degraded", "unavailable"]},
                "storage": {"type": "string"},
                "cache": {"type": "string"},
            },
        },
    },
    "parameters": {parameter["name"]: parameter for parameter in PARAMETERS},
    "headers": HEADERS,
    "responses": {
        name: error_response(description, *extra) for name, description, extra in ERRORS.values()
    },
}
