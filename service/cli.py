"""The `asgilook` command: run the service, make API keys, check a configuration."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from importlib.metadata import version

from .access import keys
from .app import build_stores
from .cache import Cache
from .images import Storage
from .metrics import Metrics
from .settings import Settings, SettingsError, load_settings

PROBE_TIMEOUT_SECONDS = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="asgilook", description="ASGILook, a self-hosted image service."
    )
    parser.add_argument("--version", action="version", version=f"asgilook {version('asgilook')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the service (uvicorn) with the settings")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=_web_concurrency(),
        help="worker processes (WEB_CONCURRENCY, else 1); with 2 or more, SIGHUP restarts "
        "them one at a time without dropping requests",
    )

    key_commands = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND"
    )
    new = key_commands.add_parser("new", help="make a key: printed once, with its entry")
    new.add_argument("name", help="the key's name, recorded as the owner of its uploads")
    new.add_argument("--admin", action="store_true", help="an admin key (default: uploader)")
    new.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    commands.add_parser("check", help="validate the settings and reach the bucket and Redis")

    arguments = parser.parse_args(argv)
    if arguments.command == "keys":
        return _new_key(arguments.name, "admin" if arguments.admin else "uploader", arguments.json)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return SettingsError.EXIT_CODE
    if arguments.command == "serve":
        return _serve(arguments.host, arguments.port, arguments.workers)
    return asyncio.run(_check(settings))


def _web_concurrency() -> int:
    """WEB_CONCURRENCY, uvicorn's and the container's worker count, if it is a number."""
    value = os.environ.get("WEB_CONCURRENCY", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _new_key(name: str, role: keys.Role, as_json: bool) -> int:
    if not keys.valid_name(name):
        print(
            f"asgilook: {name!r}: a name of letters, digits and . _ @ - is expected",
            file=sys.stderr,
        )
        return 2
    key = keys.new_key()
    entry = keys.entry(name, role, key)
    if as_json:
        print(json.dumps({"name": name, "role": role, "key": key, "entry": entry}))
    else:
        print(f"key (shown this once; give it to its holder, keep it secret):\n  {key}")
        print(f"entry (for ASGILOOK_API_KEYS or the keys file; holds no secret):\n  {entry}")
    return 0


def _serve(host: str, port: int, workers: int) -> int:
    import uvicorn

    from .http.protocol import HttpProtocol

    # NOTE: as the container runs it: the service logs each request itself, honours the
    #   X-Forwarded-* headers of the proxies FORWARDED_ALLOW_IPS names (127.0.0.1 by default),
    #   and a retiring worker answers the connections it accepted last (http.protocol).
    uvicorn.run(
        "service.asgi:app",
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        access_log=False,
        http=HttpProtocol,
    )
    return 0


async def _check(settings: Settings) -> int:
    keyring = settings.keyring()
    where = f"s3://{settings.s3_bucket}/{settings.s3_prefix}" if settings.s3_bucket else None
    print(f"image store: {where or f'{settings.storage_path} (embedded)'}")
    print(f"cache: {'Redis' if settings.redis_url else 'in process'}")
    anonymous = settings.anonymous_writes or not keyring
    print(f"API keys: {len(keyring)}; anonymous writes: {'allowed' if anonymous else 'refused'}")
    storage, cache = build_stores(settings, Metrics())
    components: list[tuple[str, Storage | Cache]] = [("image store", storage)]
    if settings.redis_url:
        components.append(("Redis", cache))
    problems = 0
    for what, component in components:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), component:
                await component.check()
        except Exception as error:  # a check reports any failure
            problems += 1
            print(f"{what}: unavailable: {error or type(error).__name__}")
        else:
            print(f"{what}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
