"""Settings read from ASGILOOK_* environment variables and an optional .env file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import limits
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from .access.keys import ApiKey, Keyring, parse_entries
from .redis_client import is_sentinel, parse_sentinel_url

ENV_PREFIX = "ASGILOOK_"
MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything the service can be configured with; see .env.example."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    s3_bucket: str | None = Field(
        None, description="Bucket holding the images; unset = embedded local-disk store."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for MinIO, SeaweedFS or moto; unset = AWS."
    )
    s3_region: str = Field("us-east-1", description="Region of the bucket.")
    s3_prefix: str = Field("", description="Prefix of every key the service writes.")
    s3_create_bucket: bool = Field(False, description="Create the bucket on startup if missing.")
    s3_max_attempts: int = Field(
        3, ge=1, description="Attempts per S3 call, the first included (retries back off)."
    )
    storage_path: Path = Field(
        Path("data"), description="Directory of the embedded store (used without a bucket)."
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL of the response cache, events and rate limits (redis://...), or "
        "of Sentinel (redis+sentinel://host:port,host:port/service[/db]); unset = in process.",
    )
    cache_ttl: int = Field(3600, gt=0, description="Seconds a cached response lives.")
    cache_max_bytes: int = Field(
        64 * MiB, gt=0, description="Byte budget of each worker's in-process cache of responses."
    )
    min_thumb_size: int = Field(64, ge=1, description="Smallest thumbnail width or height.")
    max_upload_bytes: int = Field(32 * MiB, gt=0, description="Largest accepted upload body.")
    upload_timeout: float = Field(
        120, gt=0, description="Seconds a client has to send a whole upload body; then 408."
    )
    orphan_age: float = Field(
        900,
        gt=0,
        description="Seconds after which what an unfinished upload or delete left in the store "
        "is removed (by one worker of all); longer than any upload takes to store.",
    )
    max_image_pixels: int = Field(
        50_000_000, gt=0, description="Largest accepted image, in pixels (width x height)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level of the log lines written."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="Log lines as JSON, as text, or auto: text in a terminal, else JSON."
    )
    image_threads: int = Field(
        0, ge=0, description="Threads rendering images; 0 = one per CPU core."
    )
    image_queue: int = Field(
        32, ge=0, description="Image jobs that may wait for a thread; more are refused with 503."
    )
    image_memory_bytes: int = Field(
        24 * MiB,
        gt=0,
        description="Decoded pixels each worker's image threads may hold at once; a job that "
        "would pass it waits for others to finish (one larger than it runs alone). A 12 MP "
        "photo decoded whole is 48 MB, its 2000x1500 thumbnail about 15 MB.",
    )
    # NOTE: 4 MiB, not 8: a page asks its small sizes first, so most levels handed on are
    #   never used; they held the whole budget (measured: peak 146-147 MB a worker instead of
    #   149-153, the mix as fast; a level from a reduced copy is a 300 KB decode away anyway).
    level_cache_bytes: int = Field(
        4 * MiB,
        ge=0,
        description="Decoded pixels each worker keeps so that the smaller thumbnails of a "
        "recently rendered image skip decoding its source; 0 keeps none.",
    )

    api_keys: SecretStr | None = Field(
        None,
        description="API keys that may write, as `name:role:sha256hex` entries separated by "
        "commas (roles: uploader, admin), made by `asgilook keys new NAME`; unset = none.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="A file of API key entries, one a line (a mounted Secret); with or "
        "instead of ASGILOOK_API_KEYS.",
    )
    anonymous_writes: bool = Field(
        False,
        description="Let requests without a key upload although keys are configured. Against "
        "a bucket with no keys at all, it must be set for the service to start.",
    )
    rate_limit_uploads: str = Field(
        "60/minute",
        description="Uploads per key (per client address without one), e.g. 60/minute or "
        "1000/day; shared through Redis when it is configured; empty = no limit.",
    )
    rate_limit_renders: str = Field(
        "600/minute",
        description="Thumbnail renders (cache misses) per key or client address; empty = no limit.",
    )
    event_history: int = Field(
        10_000,
        ge=1,
        description="Events kept for clients of /events that reconnect (Last-Event-ID); one "
        "older than that is told to reload.",
    )
    event_heartbeat: float = Field(
        15,
        gt=0,
        description="Seconds between heartbeat comments on /events (a client gone is noticed "
        "by the next one at the latest).",
    )
    cors_origins: str = Field(
        "",
        description="Origins whose browser pages may call the API (CORS), separated by commas, "
        "e.g. https://photos.example.com; * for any; empty = none.",
    )
    _keys: list[ApiKey] = PrivateAttr(default_factory=list)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in filter(None, (part.strip() for part in value.split(","))):
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin such as https://example.com")
        return value

    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: str | None) -> str | None:
        if value is not None and is_sentinel(value):
            parse_sentinel_url(value)  # its ValueError names what is wrong
        return value

    @field_validator("rate_limit_uploads", "rate_limit_renders")
    @classmethod
    def _a_rate(cls, value: str) -> str:
        if value:
            try:
                limits.parse(value)
            except ValueError:
                raise ValueError("a rate such as 60/minute, 10/second or 1000/day") from None
        return value

    @model_validator(mode="after")
    def _read_api_keys(self) -> Settings:
        keys = _parse_keys(
            "ASGILOOK_API_KEYS", self.api_keys.get_secret_value() if self.api_keys else ""
        )
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text()
            except OSError as error:
                raise ValueError(
                    f"ASGILOOK_API_KEYS_FILE: cannot be read ({error.strerror})"
                ) from None
            keys += _parse_keys("ASGILOOK_API_KEYS_FILE", text)
        names = [key.name for key in keys]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"ASGILOOK_API_KEYS(_FILE): the key name {name} is given twice")
        if len({key.digest for key in keys}) < len(keys):
            raise ValueError("ASGILOOK_API_KEYS(_FILE): one key is given under two names")
        if self.s3_bucket and not keys and not self.anonymous_writes:
            # NOTE: secure by default: a bucket is shared storage; nobody may write anonymously
            #   to it unless the operator says so.
            raise ValueError(
                "ASGILOOK_API_KEYS: a bucket is configured but no API key: set ASGILOOK_API_KEYS "
                "or ASGILOOK_API_KEYS_FILE (keys come from `asgilook keys new NAME`), or "
                "ASGILOOK_ANONYMOUS_WRITES=true to let anyone upload and delete"
            )
        self._keys = keys
        return self

    def keyring(self) -> Keyring:
        return Keyring(self._keys)

    @field_validator("s3_prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, prefix: str) -> str:
        prefix = prefix.strip("/")
        return f"{prefix}/" if prefix else ""

    @field_validator(
        "s3_endpoint_url", "redis_url", "s3_bucket", "api_keys", "api_keys_file", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # NOTE: `ASGILOOK_REDIS_URL=` in a .env file means "not set", not "".
        return value if value != "" else None


class SettingsError(SystemExit):
    """Startup stops with one readable line instead of a traceback."""

    # NOTE: uvicorn's exit code for a failed startup: its supervisor then stops, instead of
    #   starting workers that fail the same way again and again.
    EXIT_CODE = 3


def load_settings() -> Settings:
    """Read the environment; invalid values raise SettingsError naming the variable."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError("asgilook: invalid configuration: " + describe(error)) from None


def describe(error: ValidationError) -> str:
    """One line naming each variable at fault; never the value of a secret one."""
    problems = []
    for problem in error.errors(include_url=False):
        if not problem["loc"]:  # a check across settings: its message names the variables
            problems.append(problem["msg"].removeprefix("Value error, "))
            continue
        name = str(problem["loc"][0])
        shown = "" if name in _SECRET else f" (got {problem['input']!r})"
        problems.append(f"{ENV_PREFIX}{name.upper()}: {problem['msg']}{shown}")
    return "; ".join(problems)


_SECRET = frozenset({"api_keys"})


def _parse_keys(variable: str, text: str) -> list[ApiKey]:
    try:
        return parse_entries(text)
    except ValueError as error:
        raise ValueError(f"{variable}: {error}") from None
