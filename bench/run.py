"""ASGILook benchmark: one command, one table, every figure beside its baseline from the same run.

    python bench/run.py            # the full benchmark (a few minutes); writes bench/RESULTS.md
    python bench/run.py --smoke    # seconds-long, tiny images: checks that the harness works

It starts SeaweedFS (real S3) and redis-server, then ASGILook (2 workers; and 1 worker for hits),
the seed tutorial app (../shared/baseline-seed, 1 worker, as its README runs it), thumbor (PIL
engine, file loader, quality 75, baseline JPEG, 2 processes) and a bare Falcon app; generates
deterministic photo-like JPEGs; drives the load with wrk; and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import httpx
from PIL import Image

T = TypeVar("T")
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SEED = REPO.parent / "shared" / "baseline-seed"
sys.path.insert(0, str(REPO))

from bench.photos import photo, turned  # noqa: E402
from service.images import encode_cursor  # noqa: E402
from tests.servers import RedisServer, SeaweedFS, free_port, wait_until  # noqa: E402

MIX = [(2000, 1500), (1000, 750), (500, 375), (250, 187), (125, 93)]
VENVS = {
    "seed": ["falcon", "uvicorn[standard]", "aiofiles", "pillow", "redis>=5", "msgpack"],
    "thumbor": ["thumbor==7.8.0"],
}
UVICORN = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]


def venv_python(name: str) -> str:
    """A virtualenv of its own for each baseline, made once under bench/.venvs."""
    root = BENCH / ".venvs" / name
    python = root / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *VENVS[name]], check=True)
    return str(python)


class Server:
    """A server process on 127.0.0.1, stopped with SIGTERM."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name, self.port = name, free_port()
        self.log = open(cwd / f"{name}.log", "wb")  # noqa: SIM115 (closed by stop())
        command = [part.replace("{port}", str(self.port)) for part in command]
        # NOTE: a session of its own, so that stop() also ends the processes it forks.
        self.process = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=cwd, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, path: str) -> Server:
        def answers() -> bool:
            if self.process.poll() is not None:  # e.g. its port was taken: never measure another
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}): see its log")
            return httpx.get(self.url + path, timeout=2).status_code < 500

        wait_until(answers, 60, self.name)
        return self

    def pids(self) -> list[int]:
        """This server's process and its children (uvicorn workers)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [self.process.pid, *map(int, children.read_text().split())]

    def reset_peak_rss(self) -> None:
        for pid in self.pids():
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)

    def worker_peak_rss_mb(self, field: str = "VmHWM") -> float:
        """The largest peak resident memory (VmHWM) among this server's processes, or the
        largest of another /proc status field (VmRSS: resident now)."""
        peaks = []
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def wrk(url: str, paths: list[str], seconds: float, connections: int, work: Path) -> dict:
    listing = work / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s"]
    command += ["-s", str(BENCH / "paths.lua"), url, "--", str(listing)]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"wrk failed on {url}: {finished.stdout}{finished.stderr}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["mb_per_s"] = result["bytes"] / (result["duration_us"] / 1e6) / 1e6
    result["unique"] = result["requests"] <= len(paths)
    if result["non_2xx"] or result["socket_errors"]:
        print(f"  ! {url}: {result['non_2xx']} non-2xx, {result['socket_errors']} socket errors")
    return result


def interleaved(
    ours: Callable[[], dict], other: Callable[[], dict], rounds: int = 3
) -> list[float]:
    """The median req/s of each of two wrk runs, taken in turns (ours, other, ours, ...) after
    one of each left out (the first ran 0.58x where the next four ran 0.77-0.91x): on a shared
    machine, a burst of load from elsewhere then weighs on both alike."""
    taken: list[list[float]] = [[], []]
    for _ in range(rounds + 1):
        for figures, run in zip(taken, (ours, other), strict=True):
            figures.append(run()["rps"])
    return [statistics.median(figures[1:]) for figures in taken]


def raw_pillow_ops(source: bytes, workers: int, seconds: float, kind: str) -> float:
    """The ceiling: draft + resize + save q75 of the mix, in `workers` threads or processes."""
    pool_type = (
        concurrent.futures.ProcessPoolExecutor
        if kind == "processes"
        else concurrent.futures.ThreadPoolExecutor
    )
    with pool_type(workers) as pool:
        counts = list(pool.map(_render_for, [source] * workers, [seconds] * workers))
    return sum(counts) / seconds


def _render_for(source: bytes, seconds: float) -> int:
    done, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        size = MIX[done % len(MIX)]
        with Image.open(io.BytesIO(source)) as image:
            image.draft("RGB", size)
            resized = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        resized.save(io.BytesIO(), "JPEG", quality=75)
        done += 1
    return done


def upload_all(url: str, bodies: list[bytes]) -> tuple[list[dict], list[float]]:
    created, seconds = [], []
    with httpx.Client(base_url=url, timeout=120) as http:
        for body in bodies:
            started = time.perf_counter()
            response = http.post("/images", content=body, headers={"Content-Type": "image/jpeg"})
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
            created.append(response.json())
    return created, seconds


def with_server_cpu(run: Callable[[], T], calls: int) -> tuple[T, float]:
    """What run() returns, and the CPU time per call that the machine spent outside this
    process while it ran (the servers: SeaweedFS and Redis included), from /proc/stat."""

    def busy() -> float:
        user, nice, system, _idle, _iowait, irq, softirq = map(
            int, Path("/proc/stat").read_text().split()[1:8]
        )
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    def own() -> float:
        times = os.times()
        return times.user + times.system

    started, own_started = busy(), own()
    result = run()
    return result, ((busy() - started) - (own() - own_started)) / calls


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def staggered(count: int, sizes: list[tuple[int, int]], gap: int = 3) -> list[tuple[int, tuple]]:
    """(image, size) pairs: each image's sizes smallest first, as a page and then a viewer ask
    them, the next size of an image `gap` images later, so that one image's sizes are asked
    among other images' and reach different connections and workers."""
    ascending = sorted(sizes)
    pairs = []
    for step in range(count + gap * len(ascending)):
        for rank, size in enumerate(ascending):
            if 0 <= step - rank * gap < count:
                pairs.append((step - rank * gap, size))
    return pairs


def fetch_all(url: str, paths: list[str], connections: int = 8) -> dict:
    """Each path once, over `connections` connections, as a browser fetches a page's images:
    requests per second, and the time until the last byte of the last one."""

    async def fetch() -> dict:
        queue = list(reversed(paths))
        failed = 0
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:

            async def worker() -> None:
                nonlocal failed
                while queue:
                    response = await http.get(queue.pop())
                    failed += response.status_code != 200

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            seconds = time.perf_counter() - started
        if failed:
            print(f"  ! {url}: {failed} of {len(paths)} requests failed")
        return {"rps": len(paths) / seconds, "seconds": seconds, "requests": len(paths)}

    return asyncio.run(fetch())


def in_turns(parts: list[list[int]], runs: dict[str, Callable[[list[int]], dict]]) -> dict:
    """The req/s of each fetch_all() run over all the parts, the parts taken in turns (each
    run's first part, then each run's second...): on a shared machine, a burst of load from
    elsewhere then weighs on every run alike."""
    requests, seconds = dict.fromkeys(runs, 0), dict.fromkeys(runs, 0.0)
    for part in filter(None, parts):  # (a smoke run's parts may be empty)
        for name, run in runs.items():
            result = run(part)
            requests[name] += result["requests"]
            seconds[name] += result["seconds"]
    return {name: requests[name] / seconds[name] for name in runs}


def thumbor_path(size: tuple[int, int], name: str) -> str:
    return f"/unsafe/fit-in/{size[0]}x{size[1]}/{name}.jpeg"


def thumbnail_path(image: dict, size: tuple[int, int]) -> str:
    return f"/thumbnails/{image['id']}/{size[0]}x{size[1]}.jpeg"


@contextlib.contextmanager
def servers_started(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    seaweed = SeaweedFS(work / "seaweed").start(bucket="images")
    redis = RedisServer().start()
    try:
        asgilook_env = {
            "ASGILOOK_S3_BUCKET": "images",
            "ASGILOOK_S3_ENDPOINT_URL": seaweed.url,
            "ASGILOOK_REDIS_URL": redis.url,
            # NOTE: the load comes from one address, as no real client's would.
            "ASGILOOK_RATE_LIMIT_UPLOADS": "",
            "ASGILOOK_RATE_LIMIT_RENDERS": "",
            "ASGILOOK_ANONYMOUS_WRITES": "true",
            "ASGILOOK_STORAGE_PATH": str(work / "asgilook"),
            "AWS_ACCESS_KEY_ID": SeaweedFS.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SeaweedFS.SECRET_KEY,
            "MALLOC_ARENA_MAX": "2",
            "MALLOC_MMAP_THRESHOLD_": "1048576",
        }
        uvicorn = [sys.executable, "-m", "uvicorn", "service.asgi:app", "--app-dir", str(REPO)]

        def metrics_of(name: str) -> dict[str, str]:
            """As the container does: the workers' metrics in files of a directory, summed."""
            (work / f"{name}-metrics").mkdir()
            return {"PROMETHEUS_MULTIPROC_DIR": str(work / f"{name}-metrics")}

        # NOTE: as the container runs: INFO, one JSON access line per request; and quiet.
        for name, workers, level in [("asgilook", 2, "INFO"), ("asgilook-1w", 1, "INFO"),
                                     ("asgilook-quiet", 1, "WARNING")]:  # fmt: skip
            command = [*uvicorn, "--port", "{port}", "--workers", str(workers), *UVICORN]
            env = {**asgilook_env, "ASGILOOK_LOG_LEVEL": level, **metrics_of(name)}
            started[name] = Server(name, command, env, work)
        # NOTE: the embedded store (local files and SQLite), for uploads stored as the seed
        #   stores them: on this machine's disk, not through SeaweedFS on the same two cores.
        local_env = {key: value for key, value in asgilook_env.items() if "_S3_" not in key}
        started["asgilook-local"] = Server(
            "asgilook-local",
            [*uvicorn, "--port", "{port}", "--workers", "2", *UVICORN],
            {**local_env, "ASGILOOK_STORAGE_PATH": str(work / "asgilook-local"),
             **metrics_of("asgilook-local")},
            work,
        )  # fmt: skip
        seed_storage = work / "seed-images"
        seed_storage.mkdir()
        if not args.seed_dir.is_dir():
            # NOTE: the seed lives beside the repository, which a CI clone may not have.
            print(f"  ! the seed app is not at {args.seed_dir}: its figures are skipped")
        else:
            started["seed"] = Server(
                "seed",
                [venv_python("seed"), "-m", "uvicorn", "asgilook.asgi:app",
                 "--app-dir", str(args.seed_dir), "--port", "{port}", "--workers", "1", *UVICORN],
                {"ASGI_LOOK_STORAGE_PATH": str(seed_storage),
                 "ASGI_LOOK_REDIS_URL": redis.url.replace("/0", "/1")},
                work,
            )  # fmt: skip
        (work / "thumbor-images").mkdir()
        (work / "thumbor.conf").write_text(
            "LOADER = 'thumbor.loaders.file_loader'\n"
            f"FILE_LOADER_ROOT_PATH = '{work / 'thumbor-images'}'\n"
            "STORAGE = 'thumbor.storages.no_storage'\n"
            "RESULT_STORAGE = None\n"
            "ENGINE = 'thumbor.engines.pil'\n"
            "QUALITY = 75\nPROGRESSIVE_JPEG = False\nAUTO_WEBP = False\n"
            "ALLOW_UNSAFE_URL = True\n"
            # NOTE: without a pool, a thumbor process renders on its event loop: when the kernel
            #   hands most of wrk's connections to one process, thumbor runs at half speed
            #   (measured: 26 or 52 req/s from one run to the next). Two threads steady it.
            "ENGINE_THREADPOOL_SIZE = 2\n"
        )
        thumbor = str(Path(venv_python("thumbor")).parent / "thumbor")
        started["thumbor"] = Server(
            "thumbor",
            [thumbor, "-i", "127.0.0.1", "-p", "{port}", "-c", str(work / "thumbor.conf"),
             "--processes", "2", "-l", "error"],
            {},
            work,
        )  # fmt: skip
        for name, server in started.items():
            server.wait("/healthz" if name.startswith("asgilook") else "/")
        yield started
    finally:
        for server in started.values():
            server.stop()
        redis.stop()
        seaweed.stop()


Row = tuple[str, str, str, str, str]  # figure, ASGILook, baseline, ratio, target and verdict
Target = tuple[str, Callable[[float], bool]]  # the target, as text and as a test of the ratio


def at_least(ratio: float) -> Target:
    return f">= {ratio:.2f}x", lambda measured: measured >= ratio


def at_most(ratio: float) -> Target:
    return f"<= {ratio:.2f}x", lambda measured: measured <= ratio


def run(args: argparse.Namespace) -> list[Row]:
    """The measurements, as table rows, each with the issue's target when it has one."""
    size = (800, 600) if args.smoke else (4000, 3000)
    sizes = [(400, 300), (200, 150)] if args.smoke else MIX
    seconds = 1 if args.smoke else args.seconds
    sources = [photo(seed, size) for seed in range(args.sources)]
    args.images = args.mix_images + args.page_images + args.single_images
    bodies = [sources[n % len(sources)] for n in range(args.images)]
    rows: list[Row] = []

    def row(
        figure: str, ours: float, base: float, unit: str, base_name: str, target: Target | None
    ) -> None:
        ratio = ours / base if base else 0.0
        verdict = ""
        if target is not None and base:
            verdict = f"{target[0]}: {'met' if target[1](ratio) else 'NOT met'}"
        rows.append((figure, f"{ours:,.1f} {unit}", f"{base:,.1f} {unit} ({base_name})",
                     f"{ratio:.2f}x" if base else "-", verdict))  # fmt: skip
        print(f"{figure:45} {rows[-1][1]:>16} | {rows[-1][2]:>38} | {ratio:5.2f}x | {verdict}")

    with tempfile.TemporaryDirectory(prefix="asgilook-bench-") as directory:
        work = Path(directory)
        raw = {
            kind: raw_pillow_ops(sources[0], 2, seconds, kind) for kind in ("processes", "threads")
        }
        with servers_started(args, work) as servers:
            ours, base = servers["asgilook"], servers.get("seed", servers["asgilook"])
            seed = "seed" if "seed" in servers else "no seed: ASGILook again"
            # NOTE: without the seed its rows compare ASGILook with itself: no verdict then.
            if_seed = (lambda target: target) if "seed" in servers else (lambda target: None)
            thumbor = servers["thumbor"]
            # Uploads: upright photos (kept as received, minus metadata) and turned ones (decoded,
            # turned and encoded), one client, against the seed (which decodes and encodes all).
            images, upload_ours = upload_all(ours.url, bodies)
            (seed_images, upload_seed), seed_cpu = with_server_cpu(
                lambda: upload_all(base.url, bodies), len(bodies)
            )
            turned_bodies = [turned(n, size) for n in range(args.turned)]
            _, turned_ours = upload_all(ours.url, turned_bodies)
            _, turned_seed = upload_all(base.url, turned_bodies)
            (_, upright_1w), upright_1w_cpu = with_server_cpu(
                lambda: upload_all(servers["asgilook-1w"].url, bodies[: args.turned]), args.turned
            )
            _, turned_1w = upload_all(servers["asgilook-1w"].url, turned_bodies)
            local_images, upright_local = upload_all(
                servers["asgilook-local"].url, bodies[: args.turned]
            )
            _, turned_local = upload_all(servers["asgilook-local"].url, turned_bodies)
            for label, ours_seconds, seed_seconds, target in [
                ("upright, 2 workers", upload_ours, upload_seed, at_most(0.6)),
                ("upright, 1 worker", upright_1w, upload_seed, at_most(0.6)),
                ("turned (EXIF 6), 2 workers", turned_ours, turned_seed, at_most(0.6)),
                ("turned (EXIF 6), 1 worker", turned_1w, turned_seed, at_most(0.6)),
                # NOTE: beside the figures above, never instead of them.
                ("upright, 2 workers, embedded store", upright_local, upload_seed, None),
                ("turned (EXIF 6), 2 workers, embedded store", turned_local, turned_seed, None),
            ]:
                for name, measure, p50_target in [("p50", statistics.median, target),
                                                  ("p99", p99, None)]:  # fmt: skip
                    row(f"Upload, {label}, {name}", measure(ours_seconds) * 1000,
                        measure(seed_seconds) * 1000, "ms", seed, if_seed(p50_target))  # fmt: skip
            row("Upload, upright, 1 worker, CPU per upload (all servers: SeaweedFS, Redis)",
                upright_1w_cpu * 1000, seed_cpu * 1000, "ms", seed, None)  # fmt: skip
            # NOTE: thumbor reads the very bytes ASGILook renders from (an upright upload is
            #   served as received), and the seed's stored q75 re-encode of them.
            thumbor_images = work / "thumbor-images"
            for n, (body, stored) in enumerate(zip(bodies, seed_images, strict=True)):
                (thumbor_images / f"{n}.jpeg").write_bytes(body)
                q75 = work / "seed-images" / stored["id"] if "seed" in servers else None
                (thumbor_images / f"q75-{n}.jpeg").write_bytes(q75.read_bytes() if q75 else body)
            pool = iter(range(len(images)))  # each image serves one kind of miss run only

            def take(count: int) -> list[int]:
                return [next(pool) for _ in range(count)]

            # NOTE: the uploads' writes (over 1 GB through SeaweedFS) go to disk now, so that
            #   the kernel's writeback does not fall on the first misses measured.
            os.sync()

            # Misses, smallest first: each image's sizes in the order real pages ask them, in
            # 4 parts taken in turns with the others'.
            mix = take(args.mix_images)

            def mix_run(url: str, path: Callable[[int, tuple[int, int]], str]) -> Callable:
                return lambda part: fetch_all(
                    url, [path(part[i], size) for i, size in staggered(len(part), sizes)]
                )

            resident_before = ours.worker_peak_rss_mb("VmRSS")
            ours.reset_peak_rss()
            mix_rps = in_turns(
                [mix[start::4] for start in range(4)],
                {
                    "ours": mix_run(ours.url, lambda i, z: thumbnail_path(images[i], z)),
                    "seed": mix_run(base.url, lambda i, z: thumbnail_path(seed_images[i], z)),
                    "thumbor": mix_run(thumbor.url, lambda i, z: thumbor_path(z, str(i))),
                    "q75": mix_run(thumbor.url, lambda i, z: thumbor_path(z, f"q75-{i}")),
                },
            )
            peak_rss = ours.worker_peak_rss_mb()
            for other, name, unit, target in [
                (mix_rps["thumbor"], "thumbor, same source bytes", "req/s", at_least(1.5)),
                (mix_rps["q75"], "thumbor, the seed's q75 file", "req/s", at_least(1.0)),
                (mix_rps["seed"], seed, "req/s", None),
                (raw["processes"], "raw Pillow, 2 processes", "ops/s", None),
            ]:
                row("Thumbnail miss, mix smallest first, req/s", mix_rps["ours"], other, unit,
                    name, target)  # fmt: skip

            # A cold page: fresh photos, the listing, then each one's grid-size thumbnail.
            page = take(args.page_images)
            grid = sizes[min(2, len(sizes) - 1)]
            after = encode_cursor(UUID(images[page[0] - 1]["id"]))
            listing = ours.url + f"/images?limit={len(page)}&cursor={after}"
            started = time.perf_counter()
            httpx.get(listing).raise_for_status()
            listed = time.perf_counter() - started
            page_ours = fetch_all(ours.url, [thumbnail_path(images[i], grid) for i in page])
            page_seed = fetch_all(base.url, [thumbnail_path(seed_images[i], grid) for i in page])
            page_thumbor = fetch_all(thumbor.url, [thumbor_path(grid, str(i)) for i in page])
            label = f"Cold page, {len(page)} {grid[0]}x{grid[1]} thumbnails"
            for name, other, target in [("thumbor, same source bytes", page_thumbor, 2.0),
                                        (seed, page_seed, 4.0)]:  # fmt: skip
                row(f"{label}, req/s", page_ours["rps"], other["rps"], "req/s", name,
                    at_least(target) if name != seed else if_seed(at_least(target)))  # fmt: skip
                row(f"{label}, time to the last byte", (listed + page_ours["seconds"]) * 1000,
                    other["seconds"] * 1000, "ms", name, None)  # fmt: skip

            # Single-size misses, each size alone, smallest first over the same images (a
            # smaller size's render leaves nothing a larger one can use).
            # NOTE: in 3 parts taken in turns with thumbor's, so that a burst of load from
            #   elsewhere weighs on both alike.
            single = take(args.single_images)
            for size in sorted(sizes):
                single_rps = in_turns(
                    [single[start::3] for start in range(3)],
                    {
                        "ours": lambda part, z=size: fetch_all(
                            ours.url, [thumbnail_path(images[i], z) for i in part]
                        ),
                        "thumbor": lambda part, z=size: fetch_all(
                            thumbor.url, [thumbor_path(z, str(i)) for i in part]
                        ),
                    },
                )
                row(f"Thumbnail miss, {size[0]}x{size[1]} only, req/s", single_rps["ours"],
                    single_rps["thumbor"], "req/s", "thumbor, same source bytes",
                    at_least(1.2))  # fmt: skip
            row("Peak RSS per worker under the misses", peak_rss, 150, "MB", "target", at_most(1))
            row("RSS per worker before the misses (after the uploads)", resident_before, peak_rss,
                "MB", "peak under the misses", None)  # fmt: skip

            # Cache hits: one hot thumbnail, the same bytes from a bare Falcon app.
            hot = images[0]["thumbnails"][-1]
            hot_body = httpx.get(ours.url + hot).content  # the same bytes for the bare app
            (work / "bare.jpeg").write_bytes(hot_body)
            for name, workers in [("bare", 2), ("bare-1w", 1)]:
                servers[name] = Server(
                    name,
                    [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(BENCH),
                     "--port", "{port}", "--workers", str(workers), *UVICORN],
                    {"BARE_BODY_FILE": str(work / "bare.jpeg")},
                    work,
                ).wait("/")  # fmt: skip
            httpx.get(servers["asgilook-1w"].url + hot)
            seed_hot = seed_images[0]["thumbnails"][-1]
            httpx.get(base.url + seed_hot)
            httpx.get(servers["asgilook-quiet"].url + hot)
            # NOTE: the same photo's thumbnail (the first upload to each), so the same bytes.
            hot_local = local_images[0]["thumbnails"][-1]
            httpx.get(servers["asgilook-local"].url + hot_local)
            for label, ours_name, path, bare_name, target in [
                ("1 worker", "asgilook-1w", hot, "bare-1w", at_least(0.7)),
                ("2 workers", "asgilook", hot, "bare", at_least(0.7)),
                ("1 worker, logging off (WARNING)", "asgilook-quiet", hot, "bare-1w", None),
                ("2 workers, embedded store", "asgilook-local", hot_local, "bare", None),
            ]:
                hit, bare = interleaved(
                    lambda name=ours_name, path=path: wrk(
                        servers[name].url, [path], seconds, 32, work
                    ),
                    lambda name=bare_name: wrk(servers[name].url, ["/"], seconds, 32, work),
                )
                row(f"Cache hit, {label}, req/s", hit, bare, "req/s", "bare Falcon", target)
            seed_hit = wrk(base.url, [seed_hot], seconds, 32, work)
            ours_hit = wrk(servers["asgilook-1w"].url, [hot], seconds, 32, work)
            row("Cache hit, 1 worker, req/s", ours_hit["rps"], seed_hit["rps"], "req/s", seed, None)

            # Full images, streamed: each image once (the seed serves 0 bytes from its cache after).
            full_ours = wrk(ours.url, [image["image"] for image in images], seconds, 4, work)
            full_seed = wrk(base.url, [image["image"] for image in seed_images], seconds, 4, work)
            row("Full-image GET, MB/s", full_ours["mb_per_s"], full_seed["mb_per_s"], "MB/s", seed,
                if_seed(at_least(2)))  # fmt: skip
            row("Raw Pillow mix, 2 threads vs 2 processes", raw["threads"], raw["processes"],
                "ops/s", "processes", None)  # fmt: skip
    return rows


NOTES = """
Notes:
- ASGILook runs as the container does: logging at INFO, one JSON access line per request
  (written to a file here, as a container's stdout would be), metrics in PROMETHEUS_MULTIPROC_DIR
  (each worker's values in memory-mapped files, summed by a scrape), uvicorn with 2 workers
  (1 for the 1-worker rows), MALLOC_ARENA_MAX=2 and MALLOC_MMAP_THRESHOLD_=1048576. The
  "logging off" hit row is the same server at WARNING, beside the production figure, never
  instead of it.
- Uploads: one client, one after the other. Upright photos are served as received (minus
  metadata: no re-encode; they are still decoded at 1/2 scale to refuse damaged files, and
  that decode becomes the copy at 1/4 scale, at quality 90, and the thumbnails at 1/2 and 1/8
  scale); turned ones (EXIF orientation 6, as phones store them) are decoded,
  turned and encoded at quality 90, and their copies made from the same pixels. The seed
  decodes and encodes every upload at quality 75 and writes a local file; ASGILook writes the
  original (an upright photo's as the few KB its served JPEG lacks of it; a turned one's whole,
  while it converts), the served JPEG, the 1/4 copy and the two thumbnails to SeaweedFS,
  between a pending marker and an index entry (all-or-nothing). SeaweedFS runs on the same two
  cores: storing about 4 MB per upright upload costs it CPU the upload's check then waits for.
  The "embedded store" rows are the same uploads to ASGILook with its local store (files and
  SQLite on this disk, where the seed writes too), beside the production rows, never instead
  of them. "CPU per upload" is the CPU time the whole machine spent, less the client's, while
  one worker took the uploads (SeaweedFS's and Redis's included), against the seed's.
- Misses are fetched each once, over 8 connections (a browser's 6 to 8), by an httpx client;
  every request a thumbnail never rendered. The mix asks each image's five sizes smallest
  first, the next size of an image three images later: one image's sizes reach different
  connections and workers, as a page's grid size, then a viewer's larger size, would. It is
  taken in 4 parts (of 25 images here), in turns with the seed's and thumbor's, after the
  uploads' writes are synced to disk (taken whole and first, it ran 1.06-1.86x thumbor over
  7 runs).
- thumbor (PIL engine, file loader, quality 75, 2 processes with 2 engine threads each) reads
  the very JPEG ASGILook serves ("same source bytes"), and also the seed's stored q75 re-encode
  of it, which is about half as costly to decode. ASGILook renders 1000x750, 250x187 and
  125x93 from the copy at 1/4 scale (about 300 KB) it made at upload: never from the JPEG.
  2000x1500 and 500x375, the 1/2 and 1/8 scales, it rendered at upload (from the pixels its
  check decoded, as it renders any thumbnail) and stored: it serves them as stored, without a
  decode or an encode. thumbor and the seed render them.
- Cold page: 100 photos uploaded and never viewed; the listing of them (timed, and added to
  ASGILook's time to the last byte), then each one's grid-size thumbnail (the third of the
  series, the 1/8 scale) over 8 connections. thumbor and the seed get the same thumbnails.
- Single sizes: the same 60 images for every size, smallest first (a smaller size's render
  leaves nothing a larger one can use), in 3 parts of 20 taken in turns with thumbor's.
- Hits: one hot thumbnail over 32 connections with wrk; ASGILook answers it in front of Falcon,
  from the worker's memory. The bare app is Falcon returning the same bytes with no
  middleware, under the same uvicorn settings. Each figure is the median of 3 runs taken in
  turns with the bare app's, after one of each left out, so that a burst of load from
  elsewhere weighs on both alike. With the embedded store, the cache lives in each worker and
  reads a small file per hit, to see other workers' writes (Redis tells them instead).
- Peak RSS is the largest VmHWM of the workers, reset before the mix. The image threads of a
  worker hold at most ASGILOOK_IMAGE_MEMORY_BYTES (default 24 MiB) of decoded pixels at once.
"""


# NOTE: the analysis of targets not met is written by hand, dated, under this heading; a new
#   run keeps it, to be revised against its figures.
ANALYSIS_HEADING = "## Targets not met, and why"


def write_results(rows: list[Row], args: argparse.Namespace) -> None:
    results = BENCH / "RESULTS.md"
    earlier = results.read_text() if results.exists() else ""
    analysis = earlier[earlier.index(ANALYSIS_HEADING) :] if ANALYSIS_HEADING in earlier else ""
    lines = [
        "# Benchmark results",
        "",
        f"Run on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC with "
        f"`python bench/run.py --mix-images {args.mix_images} --page-images {args.page_images} "
        f"--single-images {args.single_images} --turned {args.turned} --sources {args.sources} "
        f"--seconds {args.seconds:g}`: "
        f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, everything on this one machine (the load "
        "generator, SeaweedFS and Redis share the cores with the servers measured).",
        "Sources: deterministic photo-like 4000x3000 JPEGs (bench/photos.py); thumbnail mix "
        + ", ".join(f"{w}x{h}" for w, h in MIX)
        + "; misses over 8 connections (httpx), hits over 32 (wrk, 2 threads).",
        "",
        "| Figure | ASGILook | Baseline (same run) | Ratio | Target (issue 12) |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in rows],
        NOTES,
    ]
    results.write_text("\n".join(lines) + (f"\n{analysis}" if analysis else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny images, 1 s runs")
    parser.add_argument("--mix-images", type=int, default=100, help="images of the mix run")
    parser.add_argument("--page-images", type=int, default=100, help="images of the cold page")
    parser.add_argument("--single-images", type=int, default=60, help="of each size alone")
    parser.add_argument("--turned", type=int, default=20, help="turned uploads (EXIF 6)")
    parser.add_argument("--sources", type=int, default=6, help="distinct source images")
    parser.add_argument("--seconds", type=float, default=5, help="duration of each wrk run")
    parser.add_argument("--seed-dir", type=Path, default=SEED, help="the seed tutorial app")
    args = parser.parse_args()
    if args.smoke:
        args.mix_images, args.page_images, args.single_images, args.sources = 3, 3, 3, 2
        args.turned = 2
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install {tool}")
    rows = run(args)
    if not args.smoke:
        write_results(rows, args)
        print(f"written to {BENCH / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
