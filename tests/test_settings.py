"""Settings: environment variables, .env, defaults, and one clear line when a value is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.settings import ENV_PREFIX, Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parent.parent


def test_defaults_are_the_embedded_mode() -> None:
    settings = load_settings()
    assert settings.s3_bucket is None
    assert settings.redis_url is None
    assert settings.storage_path == Path("data")
    assert settings.cache_ttl == 3600
    assert settings.min_thumb_size == 64
    assert settings.max_upload_bytes == 32 * 1024 * 1024
    assert settings.max_image_pixels == 50_000_000


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "ASGILOOK_S3_BUCKET=photos\nASGILOOK_CACHE_TTL=60\nASGILOOK_REDIS_URL=\n"
        "ASGILOOK_ANONYMOUS_WRITES=true\n"
    )
    monkeypatch.setenv("ASGILOOK_CACHE_TTL", "120")  # the environment wins over .env
    monkeypatch.setenv("ASGILOOK_S3_PREFIX", "/team/photos/")
    monkeypatch.setenv("ASGILOOK_S3_CREATE_BUCKET", "true")
    settings = load_settings()
    assert settings.s3_bucket == "photos"
    assert settings.cache_ttl == 120
    assert settings.redis_url is None
    assert settings.s3_prefix == "team/photos/"
    assert settings.s3_create_bucket is True


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ASGILOOK_CACHE_TTL", "an hour"),
        ("ASGILOOK_CACHE_TTL", "-5"),
        ("ASGILOOK_MAX_UPLOAD_BYTES", "0"),
        ("ASGILOOK_S3_CREATE_BUCKET", "maybe"),
        ("ASGILOOK_MIN_THUMB_SIZE", "1.5"),
    ],
)
def test_invalid_values_name_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n" not in message
    assert f"{variable}:" in message
    assert repr(value) in message


def test_env_example_documents_every_setting() -> None:
    documented = set(
        re.findall(rf"^#? ?({ENV_PREFIX}[A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M)
    )
    expected = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert documented == expected
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"


def test_env_example_is_a_valid_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text((REPO / ".env.example").read_text())
    assert load_settings() == Settings(_env_file=None)
