"""Who may do what: reads are public; writes need a key once keys are configured; an uploader
deletes, and reads the originals of, its own images only; an admin may do everything."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Forbidden, Unauthorized
from .keys import ApiKey


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a configured key, or nobody known."""

    key: ApiKey | None
    keys_configured: bool
    anonymous_writes: bool
    address: str  # the client's, for rate limits of anonymous requests
    # NOTE: a key was presented, but it is not one configured (or not a Bearer token at all).
    rejected: bool = False

    @property
    def owner(self) -> str | None:
        """What an upload of theirs records as its owner: the key's name, never the key."""
        return self.key.name if self.key is not None else None

    @property
    def identity(self) -> str:
        """Who a rate limit counts: the key, else the client address."""
        return f"key:{self.key.name}" if self.key is not None else f"address:{self.address}"

    def may_upload(self) -> None:
        self._check_rejected()
        if not self._may_upload:
            raise Unauthorized("uploads need an API key: Authorization: Bearer <key>")

    def may_delete(self, owner: str | None) -> None:
        """An image is deleted by its owner or an admin; anyone, if no key is configured."""
        if not self.keys_configured:
            return
        self._may_touch(owner, "delete")

    def may_read_original(self, owner: str | None) -> None:
        """Originals keep EXIF and GPS positions: their owner's or an admin's only."""
        if not self.keys_configured:
            raise Forbidden("originals are served to API keys only, and none is configured")
        self._may_touch(owner, "read the original of")

    def allowed(self) -> dict[str, object]:
        """What this caller may do, for a client deciding what to offer (`GET /access`)."""
        self._check_rejected()
        touch = "none" if self.key is None else "any" if self.key.is_admin else "own"
        return {
            "key": self.owner,
            "keys_configured": self.keys_configured,
            "upload": self._may_upload,
            "delete": touch if self.keys_configured else "any",
            "read_originals": touch if self.keys_configured else "none",
        }

    @property
    def _may_upload(self) -> bool:
        return self.key is not None or not self.keys_configured or self.anonymous_writes

    def _check_rejected(self) -> None:
        if self.rejected:
            raise Unauthorized("the API key sent is not one this service knows")

    def _may_touch(self, owner: str | None, action: str) -> None:
        self._check_rejected()
        if self.key is None:
            raise Unauthorized(f"to {action} an image, send its owner's or an admin API key")
        if not self.key.is_admin and self.key.name != owner:
            raise Forbidden(f"the key {self.key.name} may {action} only its own images")
