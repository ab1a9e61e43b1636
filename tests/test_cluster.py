"""The scale-out cluster of infra/cluster (3 hosts behind HAProxy, a multi-node SeaweedFS, Redis
with Sentinel), driven end to end: every check of its report, as a test.

Deselected by default (about 2 minutes, as root): CI runs it in a stage of its own,
`python -m pytest -m cluster tests/test_cluster.py -s`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CLUSTER = Path(__file__).resolve().parent.parent / "infra" / "cluster"
sys.path.insert(0, str(CLUSTER))

import checks  # noqa: E402
from cluster import Cluster  # noqa: E402

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0, reason="makes network namespaces: run as root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs ip (iproute2)"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    missing = [tool for tool in ("haproxy", "redis-server", "wrk") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"apt-get install {' '.join(missing)}")
    with Cluster() as running:
        yield running


@pytest.mark.parametrize("name", list(checks.CHECKS))
def test_the_cluster_shows(cluster: Cluster, name: str) -> None:
    check: Callable[[Cluster, bool], dict[str, Any]] = checks.CHECKS[name]
    figures = check(cluster, True)
    print(f"\n{name}:")
    for label, value in figures.items():
        print(f"  {label}: {value}")
