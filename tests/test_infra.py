"""Deployment files: one set of setting names everywhere, and each file valid for its tool."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.access import keys
from service.settings import ENV_PREFIX, Settings

from .servers import REPO

INFRA = REPO / "infra"
MANIFESTS = sorted(
    path for path in (INFRA / "k8s").glob("*.yaml") if path.name != "kustomization.yaml"
)
SETTING_NAMES = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


def tool(name: str) -> str:
    """A linter installed with the test extras, next to this Python."""
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert path, f"{name} is not installed: pip install -e '.[test]'"
    return path


def settings_in(environment: dict[str, str]) -> set[str]:
    return {name for name in environment if name.startswith(ENV_PREFIX)}


def compose_environment() -> dict[str, str]:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    return compose["services"]["app"]["environment"]


def configmap_data() -> dict[str, str]:
    return yaml.safe_load((INFRA / "k8s" / "configmap.yaml").read_text())["data"]


def test_every_setting_has_one_name_everywhere() -> None:
    env_example = set(
        re.findall(rf"^({ENV_PREFIX}[A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M)
    )
    assert env_example == SETTING_NAMES
    assert settings_in(compose_environment()) == SETTING_NAMES
    assert settings_in(configmap_data()) == SETTING_NAMES


@pytest.mark.parametrize(
    "environment", [compose_environment, configmap_data], ids=["compose", "k8s"]
)
def test_deployed_values_are_valid_settings(
    environment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    for name, value in environment().items():
        monkeypatch.setenv(name, value)
    # The mounted secret, as `asgilook keys new` makes its entries:
    (tmp_path / "api-keys").write_text(keys.entry("ops", "admin", keys.new_key()) + "\n")
    monkeypatch.setenv("ASGILOOK_API_KEYS_FILE", str(tmp_path / "api-keys"))
    settings = Settings(_env_file=None)
    assert settings.s3_bucket and settings.redis_url
    assert len(settings.keyring()) == 1 and not settings.anonymous_writes


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid() -> None:
    result = subprocess.run(
        [tool("docker-compose"), "-f", "infra/compose.yaml", "config", "-q"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_kubernetes_manifests_are_valid() -> None:
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", *map(str, MANIFESTS)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {yaml.safe_load(path.read_text())["kind"] for path in MANIFESTS}
    assert kinds == {
        "ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }  # fmt: skip


def test_kustomization_lists_every_manifest_but_the_secret_examples() -> None:
    kustomization = yaml.safe_load((INFRA / "k8s" / "kustomization.yaml").read_text())
    expected = {path.name for path in MANIFESTS if not path.name.endswith(".example.yaml")}
    assert set(kustomization["resources"]) == expected
