"""The asgilook command: keys, check, version (serve is uvicorn's, run by the other tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.access import keys
from service.cli import main

from .servers import MotoS3, RedisServer, free_port


def run(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_a_new_key_is_printed_once_with_the_entry_that_configures_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "new", "ci-bot", "--admin", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["name"] == "ci-bot" and made["role"] == "admin"
    assert len(made["key"]) >= 43  # 32 random bytes, URL-safe base64
    assert made["entry"] == keys.entry("ci-bot", "admin", made["key"])
    assert made["key"] not in made["entry"]
    configured = keys.Keyring(keys.parse_entries(made["entry"]))
    assert configured.identify(made["key"]).name == "ci-bot"  # type: ignore[union-attr]

    assert main(["keys", "new", "alice"]) == 0
    text = capsys.readouterr().out
    assert ":uploader:" in text
    assert main(["keys", "new", "not a name"]) == 2


def test_check_reports_what_it_reached(
    moto: MotoS3, bucket: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    entry = keys.entry("ops", "admin", keys.new_key())
    environment = {
        "ASGILOOK_S3_BUCKET": bucket,
        "ASGILOOK_S3_ENDPOINT_URL": moto.url,
        "ASGILOOK_API_KEYS": entry,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    reached = run("check", env={**environment, "ASGILOOK_REDIS_URL": redis_server.url})
    assert reached.returncode == 0, reached.stdout + reached.stderr
    assert "image store: ok" in reached.stdout and "Redis: ok" in reached.stdout
    assert "API keys: 1; anonymous writes: refused" in reached.stdout
    assert entry.rsplit(":", 1)[1] not in reached.stdout + reached.stderr

    down = f"redis://127.0.0.1:{free_port()}/0"
    unreachable = run("check", env={**environment, "ASGILOOK_REDIS_URL": down})
    assert unreachable.returncode == 1
    assert "Redis: unavailable" in unreachable.stdout

    invalid = run("check", env={"ASGILOOK_S3_BUCKET": bucket})  # no keys against a bucket
    assert invalid.returncode == 3
    assert "ASGILOOK_API_KEYS" in invalid.stderr and "Traceback" not in invalid.stderr


def test_version() -> None:
    shown = run("--version")
    assert shown.returncode == 0 and shown.stdout.startswith("asgilook ")
