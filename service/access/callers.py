"""Who sent a request: the Falcon middleware that reads the Authorization header."""

from __future__ import annotations

from falcon.asgi import Request, Response

from .keys import Keyring
from .policy import Caller


class Callers:
    """Sets req.context.caller: the configured key a request carries, if any.

    The key itself goes no further than this: handlers, logs and stored metadata only ever see
    its name.
    """

    def __init__(self, keyring: Keyring, anonymous_writes: bool) -> None:
        self._keyring = keyring
        self._anonymous_writes = anonymous_writes

    async def process_request(self, req: Request, resp: Response) -> None:
        key, rejected = None, False
        authorization = req.get_header("Authorization")
        # NOTE: with no key configured, credentials (a proxy's Basic ones, say) are not ours.
        if authorization is not None and self._keyring:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key = self._keyring.identify(token.strip())
            rejected = key is None
        req.context.caller = Caller(
            key, bool(self._keyring), self._anonymous_writes, req.remote_addr or "-", rejected
        )
