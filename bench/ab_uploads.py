"""Uploads of two checkouts of ASGILook, in turns: `python bench/ab_uploads.py OLD NEW`.

Each checkout runs as one uvicorn worker against one SeaweedFS (a prefix each) and Redis, as the
container does (PROMETHEUS_MULTIPROC_DIR set); the same 12 MP photos go to each in rounds taken
in turns. Prints, per checkout, the p50 of all uploads, the median per round of the machine's
CPU per upload (all servers: SeaweedFS and Redis included, the client's own left out) and the
bytes stored per upload. With `--seed-dir`, the seed tutorial app takes the same rounds in
turns too, and each p50 is also given as a ratio to the seed's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.photos import photo  # noqa: E402
from bench.run import UVICORN, Server, upload_all, venv_python, with_server_cpu  # noqa: E402
from tests.servers import RedisServer, SeaweedFS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs=2, type=Path, help="two ASGILook checkouts")
    parser.add_argument("--photos", type=int, default=10, help="photos per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per checkout")
    parser.add_argument("--seed-dir", type=Path, help="the seed app, to take the rounds too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ab-uploads-"))
    seaweed = SeaweedFS(work / "seaweed").start(bucket="images")
    redis = RedisServer().start()
    environment = {
        "ASGILOOK_S3_BUCKET": "images",
        "ASGILOOK_S3_ENDPOINT_URL": seaweed.url,
        "ASGILOOK_REDIS_URL": redis.url,
        "ASGILOOK_RATE_LIMIT_UPLOADS": "",
        "ASGILOOK_ANONYMOUS_WRITES": "true",
        "AWS_ACCESS_KEY_ID": SeaweedFS.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SeaweedFS.SECRET_KEY,
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_MMAP_THRESHOLD_": "1048576",
    }
    servers = []
    for n, checkout in enumerate(args.checkouts):
        command = [sys.executable, "-m", "uvicorn", "service.asgi:app", "--app-dir", str(checkout)]
        (work / f"metrics-{n}").mkdir()
        own = {
            "ASGILOOK_S3_PREFIX": f"checkout-{n}/",
            "ASGILOOK_STORAGE_PATH": str(work / str(n)),
            "PROMETHEUS_MULTIPROC_DIR": str(work / f"metrics-{n}"),
        }
        servers.append(
            Server(
                f"checkout-{n}",
                [*command, "--port", "{port}", "--workers", "1", *UVICORN],
                {**environment, **own},
                work,
            )
        )
    if args.seed_dir is not None:
        (work / "seed-images").mkdir()
        servers.append(
            Server(
                "seed",
                [venv_python("seed"), "-m", "uvicorn", "asgilook.asgi:app", "--app-dir",
                 str(args.seed_dir), "--port", "{port}", "--workers", "1", *UVICORN],
                {"ASGI_LOOK_STORAGE_PATH": str(work / "seed-images"),
                 "ASGI_LOOK_REDIS_URL": redis.url.replace("/0", "/1")},
                work,
            )
        )  # fmt: skip
    try:
        for server in servers:
            server.wait("/healthz" if server.name != "seed" else "/images")
        bodies = [photo(seed) for seed in range(args.photos)]
        seconds: list[list[float]] = [[] for _ in servers]
        cpu: list[list[float]] = [[] for _ in servers]
        for server in servers:
            upload_all(server.url, bodies[:2])  # warm-up, left out
        turns = list(range(len(servers)))
        for round_number in range(args.rounds):
            for n in turns if round_number % 2 == 0 else turns[::-1]:
                (_, taken), per_upload = with_server_cpu(
                    lambda n=n: upload_all(servers[n].url, bodies), len(bodies)
                )
                seconds[n] += taken
                cpu[n].append(per_upload)
        s3 = boto3.client(
            "s3",
            endpoint_url=seaweed.url,
            aws_access_key_id=SeaweedFS.ACCESS_KEY,
            aws_secret_access_key=SeaweedFS.SECRET_KEY,
            region_name="us-east-1",
        )
        seed = len(args.checkouts)  # its index in servers, after the checkouts
        seed_p50 = statistics.median(seconds[seed]) if args.seed_dir is not None else None
        if seed_p50 is not None:
            print(
                f"seed: p50 {seed_p50 * 1000:.1f} ms, "
                f"CPU per upload {statistics.median(cpu[seed]) * 1000:.1f} ms"
            )
        for n, checkout in enumerate(args.checkouts):
            p50 = statistics.median(seconds[n])
            ratio = f" ({p50 / seed_p50:.2f}x the seed's)" if seed_p50 is not None else ""
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket="images", Prefix=f"checkout-{n}/"
            )
            stored = sum(item["Size"] for page in pages for item in page.get("Contents", []))
            uploads = 2 + args.rounds * len(bodies)
            print(
                f"{checkout}: p50 {p50 * 1000:.1f} ms{ratio}, "
                f"CPU per upload {statistics.median(cpu[n]) * 1000:.1f} ms (rounds: "
                f"{' '.join(f'{value * 1000:.0f}' for value in cpu[n])}), "
                f"stored {stored / uploads / 1e6:.2f} MB per upload"
            )
    finally:
        for server in servers:
            server.stop()
        redis.stop()
        seaweed.stop()


if __name__ == "__main__":
    main()
