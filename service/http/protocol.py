"""uvicorn's HTTP protocol (httptools), with a retiring worker that answers what it accepted.

When a worker stops (SIGTERM; SIGHUP to the master replaces workers one at a time), uvicorn
stops accepting and, in the same turn of the event loop, closes every connection on which no
request has been parsed yet. A connection accepted a moment earlier, its request still unread in
the socket, is then closed under it: the client gets a reset on a new connection, which no
browser resends (uvicorn issue #2757). This protocol gives such a connection a short grace for
its first request, answered with `Connection: close`; idle connections that already had a
request are closed at once, as uvicorn does. Run it with `--http
service.http.protocol:HttpProtocol` (the container's UVICORN_HTTP, and `asgilook serve`).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FIRST_REQUEST_GRACE_SECONDS = 1.0


class HttpProtocol(HttpToolsProtocol):
    _retiring = False

    def shutdown(self) -> None:
        if self.cycle is not None or self.transport.is_closing():
            return super().shutdown()
        self._retiring = True
        self.loop.call_later(FIRST_REQUEST_GRACE_SECONDS, self._close_if_still_idle)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._retiring and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with `Connection: close`, then closed

    def _close_if_still_idle(self) -> None:
        if self.cycle is None:
            self.transport.close()
