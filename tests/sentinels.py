"""Redis with a replica and three sentinels, real processes on 127.0.0.1 and free ports."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from .servers import free_ports, redis_answers, wait_until

SERVICE = "mymaster"


class SentinelRedis:
    """A primary, a replica and three sentinels that fail over 1 s after the primary stops."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="asgilook-sentinel-"))
        ports = free_ports(5)
        self.redis_ports, self.sentinel_ports = ports[:2], ports[2:]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def start(self) -> SentinelRedis:
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_all(self) -> None:
        primary, replica = self.redis_ports
        self._redis(primary)
        self._redis(replica, "--replicaof", "127.0.0.1", str(primary))
        for port in self.sentinel_ports:
            config = self.directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self._start(port, ["redis-server", str(config), "--sentinel"])
        wait_until(self.settled, 30, "sentinels")

    def settled(self) -> bool:
        """Every sentinel knows the primary, its replica (in sync) and the other two."""
        for port in self.sentinel_ports:
            sentinel = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            with sentinel:
                state = sentinel.sentinel_master(SERVICE)
                replicas = sentinel.sentinel_slaves(SERVICE)
            if (
                state["num-other-sentinels"] < 2
                or not replicas
                or any(r["is_sdown"] or r["master-link-status"] != "ok" for r in replicas)
            ):
                return False
        return True

    def primary_port(self) -> int:
        sentinel = redis.Redis(port=self.sentinel_ports[0], socket_timeout=1)
        with sentinel:
            address = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1])

    def kill_primary(self) -> int:
        """SIGKILL the primary; its port."""
        port = self.primary_port()
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes.pop(port).wait(10)
        return port

    def wait_for_promotion(self, old_port: int, timeout: float = 30) -> float:
        """Seconds until the sentinels name a new primary that accepts writes."""
        started = time.monotonic()

        def promoted() -> bool:
            port = self.primary_port()
            if port == old_port:
                return False
            with redis.Redis(port=port, socket_timeout=1) as client:
                return bool(client.set("asgilook:test:promoted", "1"))

        wait_until(promoted, timeout, "a new primary")
        return time.monotonic() - started

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(10)
        self.processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _redis(self, port: int, *options: str) -> None:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        self._start(port, [*command, "--appendonly", "no", "--dir", str(self.directory), *options])

    def _start(self, port: int, command: list[str]) -> None:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes[port] = process
        wait_until(lambda: redis_answers(port, process), what="redis")
