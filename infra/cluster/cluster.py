"""Three ASGILook hosts behind HAProxy, over a multi-node SeaweedFS and Redis with Sentinel, on
this one machine; the processes, namespaces and links it makes, it removes (also on failure).

Network: a bridge in the root namespace (198.18.0.1, where this driver and its load run), a
network namespace `infra` (198.18.0.2: HAProxy, the SeaweedFS master, 3 volume servers, the
filer and the S3 gateway, the Redis primary and replica and 3 sentinels) and one per app host
(198.18.0.11-13: uvicorn with 2 workers). Only 198.18.0.0/24 (the benchmarking range), no
default route: nothing leaves the machine. Used by run.sh, checks.py and tests/test_cluster.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
SUBNET = "198.18.0"
DRIVER, INFRA = f"{SUBNET}.1", f"{SUBNET}.2"
APP_PORT, LB_PORT, S3_PORT = 8000, 8080, 8333
MASTER_PORT, FILER_PORT = 9333, 8888
VOLUME_PORTS = (8081, 8082, 8083)
REDIS_PORTS = (6379, 6380)
SENTINEL_PORTS = (26379, 26380, 26381)
SERVICE = "mymaster"
BUCKET = "images"
S3_ACCESS, S3_SECRET = "cluster-access", "cluster-secret"
RATE_LIMIT_UPLOADS = 20  # a minute, per key: checked across hosts


def key(name: str) -> str:
    """A deterministic API key per name (the cluster is a throwaway test bed)."""
    return "cluster-" + hashlib.sha256(name.encode()).hexdigest()[:32]


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key(name)}"}


# Keys: an admin, two uploaders, one for the rate-limit check and a pool for bulk uploads.
UPLOADERS = ["alice", "bob", "limited", *(f"bulk{n}" for n in range(24))]


def _entries() -> str:
    sys.path.insert(0, str(REPO))
    from service.access.keys import entry

    return ",".join(
        [entry("ops", "admin", key("ops"))] + [entry(n, "uploader", key(n)) for n in UPLOADERS]
    )


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, number: int) -> None:
        """Signal the process and its children (its own process group)."""
        if self.popen.poll() is None:
            os.killpg(self.pid, number)


class Cluster:
    """Start with `with Cluster(hosts=3) as cluster:`; everything is stopped on exit."""

    def __init__(self, hosts: int = 3, prefix: str = "alk", workdir: Path | None = None) -> None:
        self.prefix = prefix
        self.hosts = [f"{SUBNET}.{11 + n}" for n in range(hosts)]
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="asgilook-cluster-"))
        self.processes: dict[str, Process] = {}
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or "weed"
        self.keep_logs = False  # set when a check failed: its logs tell why

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            print(f"cluster: logs kept in {self.workdir}/logs", file=sys.stderr)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if exc_info[0] is None and not self.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            print(f"cluster: logs kept in {self.workdir}/logs", file=sys.stderr)

    def start(self) -> None:
        started = time.monotonic()
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self._network()
        self._start_redis()
        self._start_seaweedfs()
        for number in range(len(self.hosts)):
            self.start_host(number)
        self._haproxy()
        self.wait(lambda: all(self.backend_states().values()), 60, "HAProxy sees every host up")
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop every process by its PID (group), then remove the namespaces and links."""
        for process in reversed(self.processes.values()):
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in reversed(self.processes.values()):
            try:
                process.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.signal(signal.SIGKILL)
                process.popen.wait(5)
        self.processes.clear()
        for namespace in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "delete", namespace], check=False)
        for link in reversed(self.links):
            subprocess.run(["ip", "link", "delete", link], check=False, stderr=subprocess.DEVNULL)
        self.namespaces.clear()
        self.links.clear()

    # --- the network ---------------------------------------------------------------------

    def _network(self) -> None:
        bridge = f"{self.prefix}-br"
        if Path(f"/sys/class/net/{bridge}").exists():
            raise RuntimeError(f"{bridge} exists: another cluster runs (or left it behind)")
        _ip("link", "add", bridge, "type", "bridge")
        self.links.append(bridge)
        _ip("addr", "add", f"{DRIVER}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for name, address in [("infra", INFRA)] + [
            (f"h{n + 1}", host) for n, host in enumerate(self.hosts)
        ]:
            namespace, veth = self.namespace(name), f"{self.prefix}-{name}"
            _ip("netns", "add", namespace)
            self.namespaces.append(namespace)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            self.links.append(veth)
            _ip("link", "set", veth, "master", bridge, "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            # NOTE: no default route: only 198.18.0.0/24 is reachable from a namespace.
            routes = subprocess.run(
                ["ip", "-n", namespace, "route", "show"], capture_output=True, text=True
            ).stdout.split("\n")
            assert [r.split()[0] for r in routes if r] == [f"{SUBNET}.0/24"], routes

    def namespace(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def spawn(
        self, name: str, namespace: str, command: list[str], env: dict[str, str] | None = None
    ) -> Process:
        """A process in a namespace, in a process group of its own, logging to a file."""
        if name in self.processes:  # one killed before, started again: reap it first
            self.processes.pop(name).popen.wait(10)
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace(namespace), *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        log.close()
        process = self.processes[name] = Process(name, popen)
        return process

    # --- Redis and Sentinel --------------------------------------------------------------

    def _start_redis(self) -> None:
        primary, replica = REDIS_PORTS
        for port, extra in [(primary, []), (replica, ["--replicaof", INFRA, str(primary)])]:
            directory = self.workdir / f"redis-{port}"
            directory.mkdir()
            self.spawn(
                f"redis-{port}",
                "infra",
                # NOTE: no protected mode: reachable from the cluster's namespaces only.
                ["redis-server", "--port", str(port), "--bind", INFRA, "--protected-mode", "no",
                 "--save", "", "--appendonly", "no", "--dir", str(directory), *extra],
            )  # fmt: skip
        for port in SENTINEL_PORTS:
            config = self.workdir / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind {INFRA}\nprotected-mode no\ndir {self.workdir}\n"
                f"sentinel monitor {SERVICE} {INFRA} {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self.spawn(f"sentinel-{port}", "infra", ["redis-server", str(config), "--sentinel"])
        self.wait(self._sentinels_settled, 30, "the sentinels")

    @property
    def redis_url(self) -> str:
        sentinels = ",".join(f"{INFRA}:{port}" for port in SENTINEL_PORTS)
        return f"redis+sentinel://{sentinels}/{SERVICE}"

    def _sentinels_settled(self) -> bool:
        for port in SENTINEL_PORTS:
            with _redis_client(port) as sentinel:
                state = sentinel.sentinel_master(SERVICE)
                replicas = sentinel.sentinel_slaves(SERVICE)
            if state["num-other-sentinels"] < 2 or not replicas:
                return False
            if any(r["is_sdown"] or r["master-link-status"] != "ok" for r in replicas):
                return False
        return True

    def redis_primary(self) -> int:
        """The port of the primary the sentinels name now."""
        with _redis_client(SENTINEL_PORTS[0]) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(SERVICE)[1])

    def kill_redis_primary(self) -> int:
        port = self.redis_primary()
        self.processes[f"redis-{port}"].signal(signal.SIGKILL)
        return port

    # --- SeaweedFS -----------------------------------------------------------------------

    def _start_seaweedfs(self) -> None:
        master = f"{INFRA}:{MASTER_PORT}"
        bind = [f"-ip={INFRA}", f"-ip.bind={INFRA}"]
        (self.workdir / "master").mkdir()
        self.spawn(
            "weed-master",
            "infra",
            [self.weed, "master", *bind, f"-port={MASTER_PORT}", f"-mdir={self.workdir}/master",
             "-defaultReplication=001", "-volumeSizeLimitMB=256"],
        )  # fmt: skip
        for number, port in enumerate(VOLUME_PORTS):
            directory = self.workdir / f"volume-{number + 1}"
            directory.mkdir()
            self.spawn(
                f"weed-volume-{number + 1}",
                "infra",
                [self.weed, "volume", *bind, f"-port={port}", f"-dir={directory}",
                 f"-master={master}", "-max=30", "-preStopSeconds=0"],
            )  # fmt: skip
        (self.workdir / "filer").mkdir()
        self.spawn(
            "weed-filer",
            "infra",
            [self.weed, "filer", *bind, f"-port={FILER_PORT}", f"-master={master}",
             f"-defaultStoreDir={self.workdir}/filer"],
        )  # fmt: skip
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "asgilook",
            "credentials": [{"accessKey": S3_ACCESS, "secretKey": S3_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))  # fmt: skip
        self.spawn(
            "weed-s3",
            "infra",
            [self.weed, "s3", f"-filer={INFRA}:{FILER_PORT}", f"-ip.bind={INFRA}",
             f"-port={S3_PORT}", f"-config={config}", "-port.iceberg=0", "-port.lance=0"],
        )  # fmt: skip
        self.wait(self._bucket_made, 90, "SeaweedFS S3 and the bucket")

    def _bucket_made(self) -> bool:
        import boto3

        client = boto3.client(
            "s3", endpoint_url=f"http://{INFRA}:{S3_PORT}", region_name="us-east-1",
            aws_access_key_id=S3_ACCESS, aws_secret_access_key=S3_SECRET,
        )  # fmt: skip
        try:
            client.head_bucket(Bucket=BUCKET)
        except Exception:  # not there yet, or the gateway not up yet
            client.create_bucket(Bucket=BUCKET)
            client.head_bucket(Bucket=BUCKET)
        return True

    def kill_volume_server(self, number: int = 1) -> None:
        self.processes[f"weed-volume-{number}"].signal(signal.SIGKILL)

    # --- the app hosts and the balancer --------------------------------------------------

    def start_host(self, number: int) -> None:
        environment = {
            name: value for name, value in os.environ.items() if not name.startswith("ASGILOOK_")
        }
        environment.update(
            {
                "ASGILOOK_S3_BUCKET": BUCKET,
                "ASGILOOK_S3_ENDPOINT_URL": f"http://{INFRA}:{S3_PORT}",
                "AWS_ACCESS_KEY_ID": S3_ACCESS,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                "AWS_EC2_METADATA_DISABLED": "true",
                "ASGILOOK_REDIS_URL": self.redis_url,
                "ASGILOOK_API_KEYS": _entries(),
                "ASGILOOK_RATE_LIMIT_UPLOADS": f"{RATE_LIMIT_UPLOADS}/minute",
                "ASGILOOK_RATE_LIMIT_RENDERS": "",  # the throughput runs render thousands
                "ASGILOOK_LOG_LEVEL": "WARNING",
                "ASGILOOK_STORAGE_PATH": str(self.workdir / f"h{number + 1}"),
                "FORWARDED_ALLOW_IPS": INFRA,
                "MALLOC_ARENA_MAX": "2",
            }
        )
        host = self.hosts[number]
        self.spawn(
            f"h{number + 1}",
            f"h{number + 1}",
            # NOTE: as the container runs it, plus a keep-alive longer than HAProxy keeps idle
            #   server connections, so that it never reuses one uvicorn is closing.
            [sys.executable, "-m", "uvicorn", "service.asgi:app", "--host", host,
             "--port", str(APP_PORT), "--workers", "2", "--proxy-headers", "--no-access-log",
             "--timeout-keep-alive", "30", "--http", "service.http.protocol:HttpProtocol"],
            env=environment,
        )  # fmt: skip
        self.wait(lambda: httpx.get(self.host_url(number) + "/readyz", timeout=2).is_success,
                  60, f"host {number + 1}")  # fmt: skip

    def host_url(self, number: int) -> str:
        return f"http://{self.hosts[number]}:{APP_PORT}"

    def kill_host(self, number: int) -> None:
        """SIGKILL a host's uvicorn and workers: the machine is gone."""
        self.processes[f"h{number + 1}"].signal(signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"http://{INFRA}:{LB_PORT}"

    def _haproxy(self) -> None:
        servers = "\n".join(
            f"  server h{n + 1} {host}:{APP_PORT} check" for n, host in enumerate(self.hosts)
        )
        config = self.workdir / "haproxy.cfg"
        config.write_text(f"""\
global
  maxconn 4096
  stats socket {self.workdir}/haproxy.sock mode 600 level admin

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 10s
  # A request whose connection fails is sent to another host; a GET or HEAD that got no
  # answer at all (its host died) too. A write in flight is not resent: it could be done twice.
  retries 2
  option redispatch 1
  retry-on conn-failure empty-response

frontend web
  bind {INFRA}:{LB_PORT}
  default_backend app

backend app
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  option forwardfor
  http-request disable-l7-retry if !METH_GET
  http-response set-header X-Cluster-Host %s  # which host answered, for the checks
  default-server inter 500ms fall 2 rise 2
{servers}
""")
        self.spawn("haproxy", "infra", ["haproxy", "-f", str(config), "-db"])
        self.wait(lambda: (self.workdir / "haproxy.sock").exists(), 15, "HAProxy")

    def haproxy(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as control:
            control.connect(str(self.workdir / "haproxy.sock"))
            control.sendall(command.encode() + b"\n")
            answer = b""
            while chunk := control.recv(65536):
                answer += chunk
        return answer.decode()

    def backend_states(self) -> dict[str, bool]:
        """Whether HAProxy sends requests to each host (up and not in maintenance)."""
        lines = self.haproxy("show stat").splitlines()
        fields = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(fields, line.split(","), strict=False))
            if row.get("pxname") == "app" and row["svname"] not in ("FRONTEND", "BACKEND"):
                states[row["svname"]] = row["status"] == "UP"
        return states

    def use_hosts(self, count: int) -> None:
        """Send traffic to the first `count` hosts only (the others in maintenance)."""
        for n in range(len(self.hosts)):
            state = "ready" if n < count else "maint"
            self.haproxy(f"set server app/h{n + 1} state {state}")
        self.wait(lambda: sum(self.backend_states().values()) == count, 15, f"{count} hosts in use")

    # --- measuring -----------------------------------------------------------------------

    def cpu_seconds(self, names: list[str] | None = None) -> float:
        """CPU time used so far by the processes named (and their children): all if None."""
        total = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        for name, process in self.processes.items():
            if names is not None and name not in names:
                continue
            for pid in _process_tree(process.pid):
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    @staticmethod
    def wait(ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{what}: not ready after {timeout} s")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def _process_tree(pid: int) -> list[int]:
    """A process and all its descendants (uvicorn's workers, whichever thread started them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        pending.extend(children.get(current, []))
    return pids


def _redis_client(port: int) -> redis.Redis:
    """A client of a Redis or a sentinel in the infra namespace."""
    return redis.Redis(host=INFRA, port=port, socket_timeout=2, decode_responses=True)
