"""API keys: random tokens made by `asgilook keys new`; the service knows only their SHA-256
hashes (right for keys of 256 random bits), configured as `name:role:sha256hex` entries."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["uploader", "admin"]
ROLES: tuple[Role, ...] = ("uploader", "admin")
KEY_BYTES = 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ApiKey:
    """A configured key: its name (recorded as the owner of what it uploads) and role."""

    name: str
    role: Role
    # NOTE: never shown, in a repr or a log line.
    digest: bytes = field(repr=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def new_key() -> str:
    """A new key: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(KEY_BYTES)


def entry(name: str, role: Role, key: str) -> str:
    """The configuration entry of a key: what the service is given instead of the key."""
    return f"{name}:{role}:{hashlib.sha256(key.encode()).hexdigest()}"


def parse_entries(text: str) -> list[ApiKey]:
    """Entries separated by commas or lines; blank lines and `#` comments are skipped.

    Errors name an entry by its position only: what stands where a name should may be a key or
    a hash pasted in the wrong place, and neither may be shown.
    """
    keys: list[ApiKey] = []
    for position, raw in enumerate(re.split(r"[,\n]", text), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, rest = line.partition(":")
        role, _, hexdigest = rest.partition(":")
        if not valid_name(name):
            raise ValueError(f"entry {position}: a name of letters, digits and . _ @ - first")
        if role not in ROLES:
            raise ValueError(f"entry {position}: the role, after the name, is uploader or admin")
        if not _SHA256_HEX.fullmatch(hexdigest):
            raise ValueError(f"entry {position}: 64 hex digits of SHA-256 after the role")
        keys.append(ApiKey(name, role, bytes.fromhex(hexdigest)))
    return keys


class Keyring:
    """The configured keys; finds the one a client presents in constant time."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self._keys = tuple(keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def identify(self, presented: str) -> ApiKey | None:
        """The key whose hash this is; every configured hash is compared, match or not."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
