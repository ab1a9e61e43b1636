"""Who may do what: every route and method, for every kind of caller, on both deployments."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import falcon.testing
import pytest

from service.access import keys
from service.app import create_app
from service.settings import Settings

from . import samples
from .servers import MotoS3

KEYS = {name: keys.new_key() for name in ("alice", "bob", "root")}
ENTRIES = ",".join(
    [
        keys.entry("alice", "uploader", KEYS["alice"]),
        keys.entry("bob", "uploader", KEYS["bob"]),
        keys.entry("root", "admin", KEYS["root"]),
    ]
)
CALLERS = {
    "no key": {},
    "wrong key": {"Authorization": f"Bearer {keys.new_key()}"},
    "not a bearer": {"Authorization": f"Basic {KEYS['root']}"},
    "owner": {"Authorization": f"Bearer {KEYS['alice']}"},  # an uploader: alice
    "other uploader": {"Authorization": f"Bearer {KEYS['bob']}"},
    "admin": {"Authorization": f"Bearer {KEYS['root']}"},
}
PHOTO = samples.jpeg((256, 192))

# The access matrix: per request (on an image uploaded by alice), per caller, the status.
PUBLIC = dict.fromkeys(CALLERS, 200)
DENIED = {"no key": 401, "wrong key": 401, "not a bearer": 401}
MATRIX: dict[tuple[str, str], dict[str, int]] = {
    ("GET", "/images"): PUBLIC,
    ("POST", "/images"): {**DENIED, "owner": 201, "other uploader": 201, "admin": 201},
    ("GET", "{image}"): PUBLIC,
    ("HEAD", "{image}"): PUBLIC,
    ("GET", "{thumbnail}"): PUBLIC,
    ("HEAD", "{thumbnail}"): PUBLIC,
    ("GET", "{original}"): {**DENIED, "owner": 200, "other uploader": 403, "admin": 200},
    ("DELETE", "{image}"): {**DENIED, "owner": 204, "other uploader": 403, "admin": 204},
    ("GET", "/access"): {**PUBLIC, "wrong key": 401, "not a bearer": 401},
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
}  # fmt: skip


@pytest.fixture(params=["s3+redis", "embedded"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The settings of either deployment, but for the keys, which each test sets."""
    common: dict[str, Any] = {"_env_file": None, "storage_path": tmp_path / "data"}
    if request.param == "embedded":
        return common
    moto: MotoS3 = request.getfixturevalue("moto")
    return {
        **common,
        "s3_bucket": request.getfixturevalue("bucket"),
        "s3_endpoint_url": moto.url,
        "redis_url": request.getfixturevalue("redis_url"),
    }


@pytest.fixture
async def client(deployment: dict[str, Any]) -> AsyncIterator[falcon.testing.ASGIConductor]:
    app = create_app(Settings(**deployment, api_keys=ENTRIES))
    async with falcon.testing.ASGIConductor(app) as conductor:
        yield conductor


async def upload_as(client: falcon.testing.ASGIConductor, caller: str) -> dict[str, Any]:
    result = await client.simulate_post("/images", body=PHOTO, headers=CALLERS[caller])
    assert result.status_code == 201, result.text
    return result.json


@pytest.mark.parametrize(("method", "path"), list(MATRIX))
async def test_access_matrix(
    client: falcon.testing.ASGIConductor,
    method: str,
    path: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for caller, status in MATRIX[method, path].items():
        image = await upload_as(client, "owner")  # a fresh one: deletes succeed
        target = path.format(
            image=image["image"],
            thumbnail=image["thumbnails"][0],
            original=f"/images/{image['id']}/original",
        )
        body = PHOTO if method == "POST" else None
        result = await client.simulate_request(method, target, body=body, headers=CALLERS[caller])
        assert result.status_code == status, (method, path, caller, result.text)
        assert result.headers["X-Content-Type-Options"] == "nosniff"
        if status == 401:
            assert result.headers["WWW-Authenticate"].startswith("Bearer")
        if status >= 400 and method != "HEAD":
            assert result.json["title"] and result.json["description"]
    # No key, and no hash of one, at any level of the log.
    for key in KEYS.values():
        assert key not in caplog.text
        assert keys.entry("x", "admin", key).rsplit(":", 1)[1] not in caplog.text


ALLOWED = {  # GET /access, per caller, with keys configured
    "no key": {"key": None, "upload": False, "delete": "none", "read_originals": "none"},
    "owner": {"key": "alice", "upload": True, "delete": "own", "read_originals": "own"},
    "admin": {"key": "root", "upload": True, "delete": "any", "read_originals": "any"},
}


@pytest.mark.parametrize("caller", list(ALLOWED))
async def test_access_says_what_each_caller_may_do(
    client: falcon.testing.ASGIConductor, caller: str
) -> None:
    result = await client.simulate_get("/access", headers=CALLERS[caller])
    assert result.json == {**ALLOWED[caller], "keys_configured": True}
    assert result.headers["Cache-Control"] == "no-store"
    assert result.headers["Vary"] == "Authorization"


async def test_access_follows_the_settings(tmp_path: Path) -> None:
    expected = {
        # no keys: the tutorial's open service; originals go to nobody
        (None, False): {"upload": True, "delete": "any", "read_originals": "none"},
        (ENTRIES, False): {"upload": False, "delete": "none", "read_originals": "none"},
        (ENTRIES, True): {"upload": True, "delete": "none", "read_originals": "none"},
    }
    for (entries, anonymous_writes), allowed in expected.items():
        settings = Settings(
            _env_file=None,
            storage_path=tmp_path,
            api_keys=entries,
            anonymous_writes=anonymous_writes,
        )
        async with falcon.testing.ASGIConductor(create_app(settings)) as client:
            result = await client.simulate_get("/access")
        assert result.json == {**allowed, "key": None, "keys_configured": entries is not None}


async def test_images_name_the_key_that_uploaded_them(client: falcon.testing.ASGIConductor) -> None:
    name = "@root " + "é" * 120 + ".jpg"  # looks like an owner, and spans several key segments
    named = await client.simulate_post(
        "/images",
        body=PHOTO,
        headers={
            **CALLERS["owner"],
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
        },
    )
    unnamed = await upload_as(client, "admin")
    plain = await client.simulate_post("/images", body=PHOTO, headers=CALLERS["owner"])
    listing = {entry["id"]: entry for entry in (await client.simulate_get("/images")).json}
    for created, owner, expected_name in [
        (named.json, "alice", name),
        (unnamed, "root", None),
        (plain.json, "alice", None),
    ]:
        assert created["owner"] == listing[created["id"]]["owner"] == owner
        assert created["name"] == listing[created["id"]]["name"] == expected_name


async def test_without_keys_a_warning_says_how_to_turn_them_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    create_app(Settings(_env_file=None, storage_path=tmp_path))
    assert "anyone may upload and delete" in caplog.text
    assert "ASGILOOK_API_KEYS" in caplog.text


async def test_cached_answers_say_nosniff_too(client: falcon.testing.ASGIConductor) -> None:
    thumbnail = (await upload_as(client, "owner"))["thumbnails"][0]
    for cache in ("Miss", "Hit", "Hit"):  # the last one answered in front of Falcon
        result = await client.simulate_get(thumbnail)
        assert result.headers["X-ASGILook-Cache"] == cache
        assert result.headers["X-Content-Type-Options"] == "nosniff"


# NOTE: a turned photo is re-encoded, and its original kept whole; one served as uploaded keeps
#   its original as what the served JPEG lacks of it (EXIF and GPS, XMP, a second picture...).
@pytest.mark.parametrize(
    ("upload", "media_type"),
    [
        pytest.param(samples.jpeg_with_exif(), "image/jpeg", id="turned"),
        pytest.param(samples.upright_jpeg_with_metadata(), "image/jpeg", id="upright"),
        pytest.param(
            samples.with_fill_bytes(samples.upright_jpeg_with_metadata()),
            "image/jpeg",
            id="upright, fill bytes",
        ),
        pytest.param(samples.mpo(), "image/mpo", id="MPO"),
        pytest.param(samples.upright_jpeg_with_metadata((4000, 3000)), "image/jpeg", id="12 MP"),
    ],
)
async def test_the_original_is_the_upload_exactly_as_received(
    client: falcon.testing.ASGIConductor, upload: bytes, media_type: str
) -> None:
    created = await client.simulate_post("/images", body=upload, headers=CALLERS["admin"])
    original = await client.simulate_get(
        f"/images/{created.json['id']}/original", headers=CALLERS["admin"]
    )
    assert original.content == upload
    assert original.headers["Content-Length"] == str(len(upload))
    assert original.headers["Content-Type"] == media_type
    if media_type == "image/jpeg":
        name = f"{created.json['id']}.jpg"  # no file name given: the id, and its extension
        assert original.headers["Content-Disposition"] == (
            f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
        )
    assert original.headers["Cache-Control"] == "private, no-store"
    assert samples.has_exif(original.content)
    assert not samples.has_exif((await client.simulate_get(created.json["image"])).content)


async def test_the_download_name_of_an_original_cannot_be_forged(
    client: falcon.testing.ASGIConductor,
) -> None:
    forged = "x\"; filename*=UTF-8''evil.html; y=\""
    created = await client.simulate_post(
        "/images",
        body=PHOTO,
        headers={
            **CALLERS["owner"],
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(forged, safe='')}",
        },
    )
    original = await client.simulate_get(
        f"/images/{created.json['id']}/original", headers=CALLERS["admin"]
    )
    assert created.json["name"] == forged  # kept as given: only the header must be safe
    header = original.headers["Content-Disposition"]
    parsed = EmailMessage()
    parsed["Content-Disposition"] = header
    # Whichever name a client reads, it is the uploaded one, never evil.html: the ASCII one with
    # its quotes replaced, or RFC 6266's filename* (which browsers prefer), percent-encoded.
    assert parsed.get_content_disposition() == "attachment"
    assert parsed.get_filename() == forged.replace('"', "_")
    assert header.endswith(f"; filename*=UTF-8''{quote(forged, safe='')}")


async def test_the_owner_is_recorded_by_name_never_by_key(
    moto: MotoS3, bucket: str, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        _env_file=None,
        s3_bucket=bucket,
        s3_endpoint_url=moto.url,
        redis_url=redis_url,
        storage_path=tmp_path,
        api_keys=ENTRIES,
    )
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        image = await upload_as(client, "owner")
    s3 = moto.client()
    for entry in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        stored = repr(s3.head_object(Bucket=bucket, Key=entry["Key"]))
        assert KEYS["alice"] not in stored
        assert keys.entry("x", "admin", KEYS["alice"]).rsplit(":", 1)[1] not in stored
    metadata = s3.head_object(Bucket=bucket, Key=f"images/{image['id']}.jpeg")["Metadata"]
    assert metadata["owner"] == "alice"


async def test_anonymous_writes_when_allowed_belong_to_no_key(deployment: dict[str, Any]) -> None:
    app = create_app(Settings(**deployment, api_keys=ENTRIES, anonymous_writes=True))
    async with falcon.testing.ASGIConductor(app) as client:
        image = await upload_as(client, "no key")
        original = f"/images/{image['id']}/original"
        # A key that is sent must still be a known one.
        rejected = await client.simulate_post("/images", body=PHOTO, headers=CALLERS["wrong key"])
        assert rejected.status_code == 401
        for caller, status in [("no key", 401), ("owner", 403), ("admin", 200)]:
            result = await client.simulate_get(original, headers=CALLERS[caller])
            assert result.status_code == status, caller
        for caller, status in [("no key", 401), ("owner", 403), ("admin", 204)]:
            result = await client.simulate_delete(image["image"], headers=CALLERS[caller])
            assert result.status_code == status, caller


async def test_without_keys_anyone_writes_and_nobody_reads_originals(tmp_path: Path) -> None:
    """The embedded mode's one-command run: the tutorial's behaviour."""
    settings = Settings(_env_file=None, storage_path=tmp_path)
    async with falcon.testing.ASGIConductor(create_app(settings)) as client:
        # Credentials that are not this service's (a proxy's, say) change nothing.
        for caller in ("wrong key", "not a bearer"):
            image = await upload_as(client, caller)
            deleted = await client.simulate_delete(image["image"], headers=CALLERS[caller])
            assert deleted.status_code == 204
        image = await upload_as(client, "no key")
        for caller in CALLERS:
            result = await client.simulate_get(
                f"/images/{image['id']}/original", headers=CALLERS[caller]
            )
            assert result.status_code == 403, caller
        assert (await client.simulate_delete(image["image"])).status_code == 204


@pytest.mark.parametrize(
    ("configuration", "problem"),
    [
        ({"s3_bucket": "photos"}, "a bucket is configured but no API key"),
        ({"api_keys": "alice:uploader:abc"}, "ASGILOOK_API_KEYS: entry 1: 64 hex"),
        ({"api_keys": "alice:owner:" + "0" * 64}, "ASGILOOK_API_KEYS: entry 1: the role"),
        # A hash (or a key) pasted alone, where a name is expected: not repeated back.
        ({"api_keys": ENTRIES.split(",")[0].rsplit(":", 1)[1]}, "entry 1: the role"),
        ({"api_keys": f"{ENTRIES},{ENTRIES.split(',')[0]}"}, "the key name alice is given twice"),
        (
            {
                "api_keys": ENTRIES.replace("bob:", "robert:")
                + ",bob:uploader:"
                + ENTRIES.split(",")[1].rsplit(":", 1)[1]
            },
            "one key is given under two names",
        ),
        ({"api_keys_file": "/nonexistent/keys"}, "ASGILOOK_API_KEYS_FILE: cannot be read"),
    ],
)
def test_bad_key_settings_stop_startup_without_showing_a_hash(
    monkeypatch: pytest.MonkeyPatch, configuration: dict[str, str], problem: str
) -> None:
    from service.settings import SettingsError, load_settings

    for name, value in configuration.items():
        monkeypatch.setenv(f"ASGILOOK_{name.upper()}", value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert problem in message
    assert ENTRIES.split(",")[0].rsplit(":", 1)[1] not in message


def test_keys_come_from_a_file_and_the_variable_together(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text(
        "# mounted from a Secret\n" + keys.entry("carol", "admin", keys.new_key()) + "\n\n"
    )
    settings = Settings(_env_file=None, api_keys=ENTRIES, api_keys_file=tmp_path / "keys")
    assert len(settings.keyring()) == 4
    assert settings.keyring().identify(KEYS["bob"]).name == "bob"  # type: ignore[union-attr]
    assert settings.keyring().identify(KEYS["bob"] + "x") is None
