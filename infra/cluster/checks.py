"""What the cluster must show, as functions that assert and return their figures; run as a
script, it starts the cluster, runs every check, prints a report and exits non-zero on a failure.

    python infra/cluster/checks.py [--quick] [--only NAME ...]      (as root; see run.sh)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import RATE_LIMIT_UPLOADS, UPLOADERS, Cluster, bearer

Figures = dict[str, Any]
BULK = [name for name in UPLOADERS if name.startswith("bulk")]


def small_jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A small JPEG of its own (a seed gives a colour), quick to upload and render."""
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    output = io.BytesIO()
    Image.new("RGB", size, colour).save(output, "JPEG", quality=85)
    return output.getvalue()


def photo(seed: int, size: tuple[int, int]) -> bytes:
    """bench/'s photo-like JPEGs (smooth colour, texture and grain), so misses cost as there."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.photos import photo as bench_photo

    return bench_photo(seed, size)


def upload(client: httpx.Client, url: str, body: bytes, owner: str) -> httpx.Response:
    return client.post(f"{url}/images", content=body, headers=bearer(owner))


# --- read after write ------------------------------------------------------------------------


def read_after_write(cluster: Cluster, quick: bool = False) -> Figures:
    """Upload through the balancer; the next requests (other hosts) list it and serve it and its
    thumbnails; delete it; then no host serves it, nor a cached thumbnail of it."""
    hosts = range(len(cluster.hosts))
    with httpx.Client(timeout=10) as client:
        created = upload(client, cluster.url, small_jpeg(1, (640, 480)), "alice")
        assert created.status_code == 201, created.text
        image = created.json()
        served_by = {created.headers["X-Cluster-Host"]}
        for _ in hosts:  # the very next requests, round robin: each on another host
            listing = client.get(f"{cluster.url}/images?limit=1000")
            served_by.add(listing.headers["X-Cluster-Host"])
            assert image["id"] in listing.text, "a host does not list a new image"
        assert len(served_by) == len(cluster.hosts), f"round robin reached {served_by}"
        cached = Counter[str]()
        for number in hosts:
            host = cluster.host_url(number)
            assert client.get(host + image["image"]).status_code == 200
            for thumbnail in image["thumbnails"]:
                for _ in range(2):
                    answer = client.get(host + thumbnail)
                    assert answer.status_code == 200, (host, thumbnail, answer.status_code)
                    cached[answer.headers["X-ASGILook-Cache"]] += 1
        # NOTE: one host renders a thumbnail; every other request is a hit, shared by Redis.
        assert cached["Miss"] == len(image["thumbnails"]), cached
        deleted = client.delete(cluster.url + image["image"], headers=bearer("alice"))
        assert deleted.status_code == 204, deleted.text
        after = Counter[int]()
        for number in hosts:
            host = cluster.host_url(number)
            assert image["id"] not in client.get(f"{host}/images?limit=1000").text
            for url in [image["image"], *image["thumbnails"]]:
                answer = client.get(host + url)
                after[answer.status_code] += 1
                assert answer.status_code == 404, (host, url, answer.status_code)
                assert answer.headers.get("X-ASGILook-Cache") != "Hit"
    return {
        "hosts that served the upload and the next listings": len(served_by),
        "thumbnail requests on all hosts (hit/miss)": f"{cached['Hit']}/{cached['Miss']}",
        "requests after the delete answered 404 (of)": f"{after[404]} ({sum(after.values())})",
    }


# --- events ----------------------------------------------------------------------------------


def events_across_hosts(cluster: Cluster, quick: bool = False) -> Figures:
    """A subscriber on host A sees an upload made on host B and its delete made on host C."""
    a, b, c = (cluster.host_url(n % len(cluster.hosts)) for n in range(3))
    with httpx.Client(timeout=10) as client, client.stream("GET", f"{a}/events") as stream:
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        started = time.monotonic()
        created = upload(client, b, small_jpeg(2), "bob")
        assert created.status_code == 201, created.text
        identifier = created.json()["id"]
        created_seen = _until(lines, f'"id":"{identifier}"', "image.created") - started
        started = time.monotonic()
        image = created.json()["image"]
        assert client.delete(c + image, headers=bearer("bob")).status_code == 204
        deleted_seen = _until(lines, identifier, "image.deleted") - started
    return {
        "ms from an upload on host B to image.created on host A": round(created_seen * 1000),
        "ms from a delete on host C to image.deleted on host A": round(deleted_seen * 1000),
    }


def _until(lines: Iterator[str], text: str, kind: str) -> float:
    """The time the event `kind` whose data holds `text` arrives."""
    event = ""
    for line in lines:
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:") and event == kind and text in line.replace(" ", ""):
            return time.monotonic()
    raise AssertionError(f"the stream ended before {kind} {text}")


# --- rate limits and keys --------------------------------------------------------------------


def limits_and_keys(cluster: Cluster, quick: bool = False) -> Figures:
    """A limit of N uploads a minute is N in total over every host; keys hold on every host."""
    statuses = Counter[int]()
    hosts = set()
    with httpx.Client(timeout=10) as client:
        for n in range(RATE_LIMIT_UPLOADS + 3):
            answer = upload(client, cluster.url, small_jpeg(100 + n, (64, 64)), "limited")
            statuses[answer.status_code] += 1
            hosts.add(answer.headers["X-Cluster-Host"])
        assert statuses == {201: RATE_LIMIT_UPLOADS, 429: 3}, statuses
        owned = upload(client, cluster.url, small_jpeg(3), "alice").json()
        answers = Counter[str]()
        for number in range(len(cluster.hosts)):
            host = cluster.host_url(number)
            answers["unknown key: 401"] += upload(client, host, b"x", "nobody").status_code == 401
            original = f"{host}{owned['image'].removesuffix('.jpeg')}/original"
            answers["owner reads the original: 200"] += (
                client.get(original, headers=bearer("alice")).status_code == 200
            )
            answers["another uploader: 403"] += (
                client.get(original, headers=bearer("bob")).status_code == 403
            )
            answers["another uploader deletes: 403"] += (
                client.delete(host + owned["image"], headers=bearer("bob")).status_code == 403
            )
        assert set(answers.values()) == {len(cluster.hosts)}, answers
        assert client.delete(cluster.url + owned["image"], headers=bearer("alice")).is_success
    return {
        f"uploads of one key, limit {RATE_LIMIT_UPLOADS}/minute": dict(sorted(statuses.items())),
        "hosts that counted them": len(hosts),
        "key checks on each host": ", ".join(f"{k} x{v}" for k, v in answers.items()),
    }


# --- load and faults -------------------------------------------------------------------------


@dataclass
class Load:
    """Steady traffic through the balancer from a few threads, bounded in time and count:
    listings (some misses), thumbnails and images of known images, and an upload every half
    second; anything but a 2xx (or a 429) is a failed request."""

    url: str
    seconds: float
    clients: int = 4
    max_requests: int = 20_000
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    uploaded: list[tuple[str, str, str]] = field(default_factory=list)  # image, owner, sha256

    def run(self, during: Callable[[], Figures], after_seconds: float = 3) -> Figures:
        """Run the load; call `during` after `after_seconds`; its figures and the counts."""
        with httpx.Client(timeout=10) as client:
            for n in range(5):  # images to read, whatever ran before
                upload(client, self.url, small_jpeg(500 + n, (640, 480)), BULK[-1 - n])
            listing = client.get(f"{self.url}/images?limit=50").json()
        urls = [u for image in listing for u in [image["image"], *image["thumbnails"]]]
        stop = time.monotonic() + self.seconds
        count = iter(range(self.max_requests))
        threads = [
            threading.Thread(target=self._reader, args=(urls, stop, count))
            for _ in range(self.clients)
        ]
        threads.append(threading.Thread(target=self._writer, args=(stop,)))
        for thread in threads:
            thread.start()
        time.sleep(after_seconds)
        figures = during()
        for thread in threads:
            thread.join(self.seconds + 30)
        requests = sum(self.statuses.values()) + len(self.failures)
        return {**figures, "requests": requests, "failed": len(self.failures)}

    def _reader(self, urls: list[str], stop: float, count: Iterator[int]) -> None:
        with httpx.Client(timeout=10) as client:
            for n in count:
                if time.monotonic() > stop:
                    return
                path = f"/images?limit={n % 50 + 1}" if n % 4 == 0 else urls[n % len(urls)]
                self._send(client, "GET", path)

    def _writer(self, stop: float) -> None:
        with httpx.Client(timeout=10) as client:
            n = 0
            while time.monotonic() < stop:
                n += 1
                owner, body = BULK[n % len(BULK)], small_jpeg(1000 + n)
                answer = self._send(client, "POST", "/images", content=body, headers=bearer(owner))
                if answer is not None and answer.status_code == 201:
                    digest = hashlib.sha256(body).hexdigest()
                    self.uploaded.append((answer.json()["image"], owner, digest))
                time.sleep(0.5)

    def _send(
        self, client: httpx.Client, method: str, path: str, **options: Any
    ) -> httpx.Response | None:
        try:
            answer = client.request(method, self.url + path, **options)
        except httpx.TransportError as error:
            self.failures.append(f"{method} {path}: {error!r}")
            return None
        self.statuses[answer.status_code] += 1
        if not answer.is_success and answer.status_code != 429:
            self.failures.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
        return answer


def kill_an_app_host(cluster: Cluster, quick: bool = False) -> Figures:
    """SIGKILL one host under load: HAProxy routes around it; only requests in flight on it
    may fail. The host is started again afterwards."""
    load = Load(cluster.url, 10 if quick else 15)
    victim = len(cluster.hosts) - 1

    def kill() -> Figures:
        cluster.kill_host(victim)
        killed = time.monotonic()
        cluster.wait(lambda: not cluster.backend_states()[f"h{victim + 1}"], 10, "host down")
        return {"seconds until HAProxy marked it down": round(time.monotonic() - killed, 1)}

    figures = load.run(kill)
    cluster.start_host(victim)
    cluster.wait(lambda: all(cluster.backend_states().values()), 30, "host back")
    figures["failures"] = load.failures[:5]
    assert len(load.failures) <= load.clients + 1, load.failures  # at most one each in flight
    return figures


def kill_a_volume_server(cluster: Cluster, quick: bool = False) -> Figures:
    """SIGKILL one SeaweedFS volume server under load: 0 failed requests, nothing lost (every
    image uploaded before and during is read back, byte for byte, from every host)."""
    with httpx.Client(timeout=10) as client:
        listing = client.get(f"{cluster.url}/images?limit=1000").json()
    load = Load(cluster.url, 10 if quick else 15)

    def kill() -> Figures:
        cluster.kill_volume_server(1)
        return {}

    figures = load.run(kill)
    lost = 0
    with httpx.Client(timeout=10) as client:
        for image, owner, digest in load.uploaded:
            for number in range(len(cluster.hosts)):
                original = f"{cluster.host_url(number)}{image.removesuffix('.jpeg')}/original"
                answer = client.get(original, headers=bearer(owner))
                lost += hashlib.sha256(answer.content).hexdigest() != digest
        for image in listing:
            lost += client.get(cluster.url + image["image"]).status_code != 200
    figures.update(
        {"images read back": len(load.uploaded) + len(listing), "lost": lost},
        failures=load.failures[:5],
    )
    assert load.failures == [] and lost == 0, figures
    return figures


def kill_the_redis_primary(cluster: Cluster, quick: bool = False) -> Figures:
    """SIGKILL the Redis primary under load: Sentinel promotes the replica, every host follows;
    0 failed requests, and the cache hits again (across hosts) within seconds."""
    load = Load(cluster.url, 10 if quick else 15)

    def kill() -> Figures:
        old = cluster.kill_redis_primary()
        killed = time.monotonic()
        cluster.wait(lambda: cluster.redis_primary() != old, 30, "a new Redis primary")
        promoted = time.monotonic() - killed
        probes = iter(range(200, 1000))

        def hits() -> bool:
            # NOTE: two requests, round robin: stored by one host, a hit on another only
            #   through Redis.
            with httpx.Client(timeout=5) as client:
                path = f"{cluster.url}/images?limit={next(probes)}"
                client.get(path)
                return client.get(path).headers["X-ASGILook-Cache"] == "Hit"

        cluster.wait(hits, 30, "cache hits")
        return {
            "seconds until a replica was promoted": round(promoted, 1),
            "seconds until the cache hit again": round(time.monotonic() - killed, 1),
        }

    figures = load.run(kill)
    figures["failures"] = load.failures[:5]
    assert load.failures == [], load.failures
    assert figures["seconds until the cache hit again"] < 15, figures
    return figures


# --- throughput ------------------------------------------------------------------------------


def throughput(cluster: Cluster, quick: bool = False) -> Figures:
    """bench/'s workloads with 1, 2 and 3 hosts: thumbnail misses (photo-like sources, every
    size once, smallest first, over 8 connections) and hits (one hot thumbnail over 32
    connections with wrk), with the CPU time the servers spent per request."""
    counts = range(1, len(cluster.hosts) + 1)
    per_run = 6 if quick else 16  # source images a run
    seconds = 4 if quick else 8
    sources = (2000, 1500) if quick else (4000, 3000)
    # NOTE: one photo uploaded again and again: distinct images, each miss the same work.
    body = photo(0, sources)

    def upload_one(n: int) -> list[str]:
        with httpx.Client(timeout=60) as client:
            created = upload(client, cluster.url, body, BULK[n % len(BULK)])
        assert created.status_code == 201, created.text
        return list(reversed(created.json()["thumbnails"]))

    with ThreadPoolExecutor(4) as pool:
        images = list(pool.map(upload_one, range(per_run * len(counts) + 1)))
    hot = images.pop()[0]
    httpx.get(cluster.url + hot, timeout=60)
    runs = [images[n * per_run : (n + 1) * per_run] for n in range(len(counts))]
    figures: Figures = {"sources": f"{sources[0]}x{sources[1]}, {per_run} a miss run"}
    apps = [f"h{n + 1}" for n in range(len(cluster.hosts))]
    for hosts, images in zip(counts, runs, strict=True):
        cluster.use_hosts(hosts)
        # NOTE: smallest first, an image's next size asked after the others' (as bench/).
        misses = [urls[size] for size in range(len(images[0])) for urls in images]
        app_cpu, all_cpu = cluster.cpu_seconds(apps), cluster.cpu_seconds()
        elapsed, failed = _fetch_all(cluster.url, misses, 8)
        app_cpu, all_cpu = cluster.cpu_seconds(apps) - app_cpu, cluster.cpu_seconds() - all_cpu
        assert failed == 0
        figures[f"miss, {hosts} host(s)"] = _rate(len(misses), elapsed, app_cpu, all_cpu)
        app_cpu, all_cpu = cluster.cpu_seconds(apps), cluster.cpu_seconds()
        requests, elapsed = _wrk(cluster.url + hot, seconds)
        app_cpu, all_cpu = cluster.cpu_seconds(apps) - app_cpu, cluster.cpu_seconds() - all_cpu
        figures[f"hit, {hosts} host(s)"] = _rate(requests, elapsed, app_cpu, all_cpu)
    cluster.use_hosts(len(cluster.hosts))
    return figures


def _rate(requests: int, elapsed: float, app_cpu: float, all_cpu: float) -> str:
    return (
        f"{requests / elapsed:7.1f} req/s ({requests} in {elapsed:.1f} s); CPU/request: "
        f"app {app_cpu / requests * 1000:.2f} ms, all servers {all_cpu / requests * 1000:.2f} ms"
    )


def _fetch_all(url: str, paths: list[str], connections: int) -> tuple[float, int]:
    work: queue.Queue[str] = queue.Queue()
    for path in paths:
        work.put(path)
    failed = Counter[bool]()

    def fetch() -> None:
        with httpx.Client(timeout=60) as client:
            while True:
                try:
                    path = work.get_nowait()
                except queue.Empty:
                    return
                answer = client.get(url + path)
                miss = answer.headers.get("X-ASGILook-Cache") == "Miss"
                failed[answer.status_code != 200 or not miss] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=fetch) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, failed[True]


def _wrk(url: str, seconds: float) -> tuple[int, float]:
    output = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds:g}s", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout  # fmt: skip
    found = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
    assert found, output
    elapsed = float(found[2]) / (1000 if found[3] == "ms" else 1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", output)
    assert errors is None, output
    return int(found[1]), elapsed


# --- the report ------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Cluster, bool], Figures]] = {
    "read after write across hosts": read_after_write,
    "events across hosts": events_across_hosts,
    "rate limits and keys across hosts": limits_and_keys,
    "fault: an app host killed under load": kill_an_app_host,
    "fault: a SeaweedFS volume server killed under load": kill_a_volume_server,
    "fault: the Redis primary killed under load": kill_the_redis_primary,
    "throughput with 1, 2 and 3 hosts": throughput,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter throughput runs (CI)")
    parser.add_argument("--only", nargs="*", default=None, help="check names (substrings)")
    parser.add_argument("--workdir", type=Path, help="an empty directory for data and logs")
    args = parser.parse_args()
    # NOTE: SIGTERM (a CI timeout) unwinds like Ctrl-C, so that everything is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed = 0
    with Cluster(workdir=args.workdir) as cluster:
        hosts = ",".join(cluster.hosts)
        print(f"cluster up in {cluster.startup_seconds:.0f} s: hosts {hosts}; {cluster.url}")
        for name, check in CHECKS.items():
            if args.only and not any(part in name for part in args.only):
                continue
            started = time.monotonic()
            try:
                figures = (
                    check(cluster, quick=args.quick) if check is throughput else check(cluster)
                )  # type: ignore[call-arg]
            except AssertionError as error:
                failed += 1
                cluster.keep_logs = True
                print(f"\nFAIL  {name} ({time.monotonic() - started:.0f} s): {error}", flush=True)
                continue
            print(f"\nok    {name} ({time.monotonic() - started:.0f} s)")
            for label, value in figures.items():
                print(f"      {label}: {value}", flush=True)
    print(f"\n{'all checks passed' if not failed else f'{failed} check(s) failed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
