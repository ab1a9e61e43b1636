"""Real servers for the tests, on 127.0.0.1 and free ports: moto S3, Redis and uvicorn."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import botocore.exceptions
import fakeredis
import httpx
import redis

REPO = Path(__file__).resolve().parent.parent
HTTP_PROTOCOL = "service.http.protocol:HttpProtocol"


# NOTE: every port handed out in this process. A server binds its port a moment (uvicorn: a
#   second) after it is chosen, and a closed probe's port can come straight back (1 set of 5
#   picks in 2000 had a repeat): no port goes to two servers of one test process.
_HANDED_OUT: set[int] = set()


def free_ports(count: int, twin: int = 0) -> list[int]:
    """Free ports, none handed out before in this process. With `twin`, port + twin is free
    (and not handed out) too."""
    ports: list[int] = []
    with contextlib.ExitStack() as probes:

        def probe(port: int) -> int:
            bound = probes.enter_context(socket.socket())
            bound.bind(("127.0.0.1", port))
            port = int(bound.getsockname()[1])
            if port in _HANDED_OUT:
                raise OSError(f"port {port} was handed out before")
            return port

        while len(ports) < count:
            try:
                port = probe(0)
                if twin:
                    probe(port + twin)
            except (OSError, OverflowError):  # taken, handed out before, or beyond 65535
                continue
            ports.append(port)
        _HANDED_OUT.update(ports, (port + twin for port in ports if twin))
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def redis_answers(port: int, process: subprocess.Popen[bytes]) -> bool:
    """The redis-server we started answers on its port. If another test worker's server took the
    port first, ours has exited: say so at once rather than talk to theirs."""
    if process.poll() is not None:
        raise RuntimeError(f"redis-server for port {port} exited ({process.returncode})")
    with redis.Redis(port=port, socket_timeout=1) as client:
        return int(client.info("server")["process_id"]) == process.pid


def wait_until(ready: Callable[[], bool], timeout: float = 15.0, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (
            OSError,
            httpx.TransportError,
            redis.exceptions.ConnectionError,
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        ):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


class MotoS3:
    """moto's S3 server over HTTP, in a process of its own: the objects it holds (spooled
    temporary files) are collected there, never in the tests' process."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoS3:
        # NOTE: not measured by coverage, as our subprocesses are: it is not our code.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: httpx.get(self.url).status_code == 200, what="moto")
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")


class RedisServer:
    """A real redis-server when the binary is installed, else fakeredis' TCP server."""

    real = shutil.which("redis-server") is not None

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._fake: fakeredis.TcpFakeServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.real:
            self._process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )
            process = self._process
            wait_until(lambda: redis_answers(self.port, process), what="redis")
        else:
            self._fake = fakeredis.TcpFakeServer(("127.0.0.1", self.port))
            threading.Thread(target=self._fake.serve_forever, daemon=True).start()
            wait_until(lambda: self.client().ping(), what="redis")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
        if self._fake is not None:
            self._fake.shutdown()
            self._fake.server_close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)


class SeaweedFS:
    """SeaweedFS (`weed mini`): a real S3 server that checks SigV4 signatures and persists."""

    ACCESS_KEY, SECRET_KEY = "ci-access", "ci-secret"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # NOTE: each gRPC port is its HTTP port + 10000, so both must be free.
        self.ports = free_ports(4, twin=10000)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[3]}"

    def start(self, bucket: str) -> SeaweedFS:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "ci",
            "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        master, volume, filer, s3 = self.ports
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or "weed"
        self._process = subprocess.Popen(
            [weed, "mini", f"-dir={self.directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             "-webdav=false", "-admin.ui=false", f"-master.port={master}",
             f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
             "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
             f"-bucket={bucket}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = self.client()
        wait_until(lambda: client.head_bucket(Bucket=bucket) is not None, 60, "seaweedfs")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(30)

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY,
        )  # fmt: skip


class Uvicorn:
    """`uvicorn service.asgi:app` as a subprocess, configured by environment variables only."""

    def __init__(self, env: dict[str, str], workers: int = 1) -> None:
        self.port = free_port()
        self.env = env
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        # NOTE: run outside the repository, so a developer's .env or ./data is never touched.
        self.cwd = tempfile.mkdtemp(prefix="asgilook-uvicorn-")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Uvicorn:
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("ASGILOOK_")
        }
        environment.update(self.env)
        command = [sys.executable, "-m", "uvicorn", "service.asgi:app", "--app-dir", str(REPO)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        command += ["--http", HTTP_PROTOCOL]  # as the container runs it
        self.process = subprocess.Popen(
            command, cwd=self.cwd, env=environment, stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            # NOTE: a worker importing the service on two cores shared with the other test
            #   process and its servers took over 15 s once; one that exits fails at once.
            wait_until(self._answers, timeout=60, what="uvicorn")
        except BaseException:
            print(self.output())
            self.close()
            raise
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {self.output()}")
        return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def close(self) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.cwd, ignore_errors=True)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def peak_rss_bytes(self) -> int:
        """Peak resident memory (VmHWM) of the uvicorn process, single-worker mode."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM")


class FaultyProxy:
    """An HTTP proxy in front of an S3 server that can stop answering at a chosen request, as
    if the server died between two writes (set `fails` to a predicate of (method, path)), or
    refuse every connection for a while, as if it were down."""

    def __init__(self, upstream_port: int) -> None:
        self.fails: Callable[[str, str], bool] = lambda method, path: False
        self.refused: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not proxy.listening:  # a connection opened before: it dies with the server
                    self.close_connection = True
                    return
                if proxy.fails(self.command, self.path):
                    proxy.refused.append((self.command, self.path))
                    self.close_connection = True  # no answer at all: the server is gone
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                upstream.request(self.command, self.path, body, dict(self.headers.items()))
                answer = upstream.getresponse()
                content = answer.read()
                self.send_response(answer.status)
                # NOTE: the body is sent whole; a HEAD keeps the length of the body it omits.
                framing = ["transfer-encoding", "connection"]
                framing += [] if self.command == "HEAD" else ["content-length"]
                for name, value in answer.getheaders():
                    if name.lower() not in framing:
                        self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._handler = Handler
        self.port = 0
        self.accept_connections()

    def accept_connections(self) -> None:
        """Listen (again, on the same port): the S3 server is back, with all it held."""
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.listening = True

    def refuse_connections(self) -> None:
        """Stop listening: S3 is down, every connection refused."""
        self.listening = False
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.refuse_connections()
