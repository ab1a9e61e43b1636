"""CORS, for browser clients on other origins: Falcon's middleware, for the configured origins."""

from __future__ import annotations

import falcon
from falcon.asgi import Request, Response

# What a browser client of this API needs to read and to send.
EXPOSED = (
    "Location", "ETag", "Link", "X-ASGILook-Cache", "X-Request-ID", "Retry-After", "RateLimit",
    "RateLimit-Policy", "Content-Disposition", "Content-Range",
)  # fmt: skip
ALLOWED_REQUEST_HEADERS = ", ".join(
    ["Authorization", "Content-Type", "Content-Disposition", "X-Request-ID", "Range", "If-Range",
     "If-None-Match", "If-Modified-Since"]
)  # fmt: skip


class Cors(falcon.CORSMiddleware[Request, Response]):
    """Falcon's CORS; a preflight allows the request headers above, not whatever it asks for."""

    def __init__(self, origins: list[str]) -> None:
        super().__init__(allow_origins="*" if origins == ["*"] else origins, expose_headers=EXPOSED)

    async def process_request(self, req: Request, resp: Response) -> None:
        # NOTE: set before a response is cached, so that shared caches keep one per origin.
        if self.allow_origins != "*":
            resp.append_header("Vary", "Origin")

    async def process_response_async(
        self, req: Request, resp: Response, resource: object, req_succeeded: bool
    ) -> None:
        await super().process_response_async(req, resp, resource, req_succeeded)
        if resp.get_header("Access-Control-Allow-Headers") is not None:
            resp.set_header("Access-Control-Allow-Headers", ALLOWED_REQUEST_HEADERS)


class NoOptionsWithoutCors:
    """Falcon answers OPTIONS on every route, for CORS preflights. Without CORS configured, it
    is a method like any other the service does not take: 405 (and `unrouted` leaves it out
    of Allow)."""

    async def process_resource(
        self, req: Request, resp: Response, resource: object, params: dict[str, object]
    ) -> None:
        if req.method == "OPTIONS" and resource is not None:
            raise falcon.HTTPMethodNotAllowed(
                [m for m in RESPONDER_METHODS if hasattr(resource, f"on_{m.lower()}")]
            )


RESPONDER_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
