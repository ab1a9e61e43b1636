"""The framework ceiling: a bare Falcon ASGI app answering fixed bytes (BARE_BODY_FILE)."""

import os
from pathlib import Path

import falcon
import falcon.asgi

BODY = Path(os.environ["BARE_BODY_FILE"]).read_bytes()


class Fixed:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_JPEG
        resp.data = BODY


app = falcon.asgi.App()
app.add_sink(Fixed().on_get, "/")
