"""Real nginx (deploy/nginx/nginx.conf, rendered for loopback by deploy/nginx/render.sh)
in front of two real ``index-builder serve`` processes.

Requests spread over both; one is killed (SIGKILL) in the middle of a stream of GETs
and no GET fails; started again on its port, it takes traffic again. Request ids and
the client address pass through: the client talks from its own loopback address
(127.0.0.2), nginx from 127.0.0.1, the only address the app trusts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_process import SOURCE

from redis_server import free_port
from templates import build_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "nginx.conf"
RENDER = ROOT / "deploy" / "nginx" / "render.sh"
CLIENT = "127.0.0.2"
"""The client's source address: loopback, but not nginx's (127.0.0.1)."""
READS = ("/indices", "/index-performance?index=ew100")
TEST_SECONDS = 60
SERVE = [sys.executable, "-m", "index_builder.cli.main", "serve"]


def nginx_binary() -> str:
    """The nginx binary; skipped when missing outside CI, a failure in CI."""
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is missing: 'make test' installs the Debian package nginx")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return binary


class Api:
    """``index-builder serve`` on 127.0.0.1:``port`` over its own DuckDB file (DuckDB
    has one writing process per file), JSON log lines in ``log``."""

    def __init__(self, database: Path, port: int, log: Path) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("INDEX_BUILDER_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (SOURCE, env.get("PYTHONPATH")) if p)
        env |= {
            "INDEX_BUILDER_DATABASE": str(database),
            "INDEX_BUILDER_TRUSTED_PROXIES": "127.0.0.1",  # nginx, and only nginx
            "INDEX_BUILDER_LOG_FORMAT": "json",
            "INDEX_BUILDER_DUCKDB_THREADS": "1",
            # the stream below is faster than a read budget: failures must be the proxy's
            "INDEX_BUILDER_RATE_LIMIT_ENABLED": "false",
        }
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [*SERVE, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, deadline: float) -> None:
        """Until GET /health/live answers 200 (fails with the log at ``deadline``)."""
        while True:
            try:
                url = f"http://{self.address}/health/live"
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, connections reset."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._out.close()

    def stop(self) -> None:
        """Ctrl-C (the access lines waiting in the batch are written), else kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


class Nginx:
    """nginx in the foreground with its own prefix; access lines (JSON) in ``log``."""

    def __init__(self, prefix: Path, servers: list[str], port: int) -> None:
        binary = nginx_binary()
        prefix.mkdir()
        config = prefix / "nginx.conf"
        env = {**os.environ, "API_SERVERS": " ".join(servers), "NGINX_LISTEN": f"127.0.0.1:{port}"}
        subprocess.run(["sh", str(RENDER), str(TEMPLATE), str(config)], env=env, check=True)
        self.config = config.read_text()
        self.base = f"http://127.0.0.1:{port}"
        self.log = prefix / "access.log"
        self.errors = prefix / "error.log"
        self._out, self._err = self.log.open("wb"), self.errors.open("wb")
        foreground = f"daemon off; pid {prefix / 'nginx.pid'};"
        self.proc = subprocess.Popen(
            [binary, "-e", "stderr", "-p", str(prefix), "-c", str(config), "-g", foreground],
            stdout=self._out,
            stderr=self._err,
        )

    def wait_ready(self, deadline: float) -> None:
        while True:
            try:
                if httpx.get(f"{self.base}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start:\n{self.errors.read_text()}")
            time.sleep(0.1)

    def lines(self) -> list[dict[str, Any]]:
        """Its access lines so far."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()


def served_by(line: dict[str, Any]) -> str:
    """The peer that answered a request (the last one nginx tried)."""
    return str(line["upstream"]).split(",")[-1].strip()


@dataclass
class Stream:
    """Clients sending GETs through nginx until stopped, from :data:`CLIENT`."""

    base: str
    clients: int = 3
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(self.clients):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, n: int) -> None:
        transport = httpx.HTTPTransport(local_address=CLIENT)
        with httpx.Client(base_url=self.base, transport=transport, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                request_id = f"stream-{n}-{i}"
                try:
                    response = client.get(READS[i % 2], headers={"X-Request-ID": request_id})
                    ok = response.status_code == 200
                    outcome = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, outcome = False, repr(exc)
                with self._lock:
                    self.sent += 1
                    if not ok:
                        self.failures.append(f"{request_id}: {outcome}")
                i += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=35)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small built database (ew100 over 120 securities x 30 days)."""
    path = tmp_path_factory.mktemp("nginx-template") / "template.duckdb"
    return build_template(path, symbols=120, days=30, indices=["ew100"])


@pytest.fixture
def fleet(template: Path, tmp_path: Path) -> Iterator[tuple[Nginx, Api, Api, float]]:
    """Two APIs and nginx in front of them, ready; the test's deadline."""
    deadline = time.monotonic() + TEST_SECONDS
    apis: list[Api] = []
    proxy: Nginx | None = None
    try:
        for name in ("a", "b"):
            database = tmp_path / f"{name}.duckdb"
            shutil.copy(template, database)
            apis.append(Api(database, free_port(), tmp_path / f"api-{name}.log"))
        for api in apis:
            api.wait_ready(deadline)
        proxy = Nginx(tmp_path / "nginx", [api.address for api in apis], free_port())
        proxy.wait_ready(deadline)
        yield proxy, apis[0], apis[1], deadline
    finally:
        if proxy is not None:
            proxy.stop()
        for api in apis:
            api.stop()


def wait_for(condition: Any, deadline: float, what: str) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)
    print(f"{what}: {time.monotonic() - started:.1f} s, {deadline - time.monotonic():.1f} s left")


def test_a_killed_api_costs_no_get_and_takes_traffic_again(
    fleet: tuple[Nginx, Api, Api, float], tmp_path: Path
) -> None:
    proxy, a, b, deadline = fleet
    direct = httpx.Client(transport=httpx.HTTPTransport(local_address=CLIENT), timeout=10)

    # request ids: the client's passes through; without one nginx makes one; a spoofed
    # X-Forwarded-For from the client is not believed
    spoofed = direct.get(
        f"{proxy.base}/indices",
        headers={"X-Request-ID": "edge-check-1", "X-Forwarded-For": "203.0.113.7"},
    )
    assert spoofed.status_code == 200 and spoofed.headers["x-request-id"] == "edge-check-1"
    generated = direct.get(f"{proxy.base}/indices", headers={"X-Request-ID": "bad id!"})
    nginx_id = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", nginx_id), nginx_id
    # the body limit is nginx's: a 2 MiB body never reaches an API
    too_large = direct.post(f"{proxy.base}/build-index", content=b"{" + b" " * (2 << 20))
    assert too_large.status_code == 413

    stream = Stream(proxy.base)
    stream.start()
    try:
        # both peers serve
        wait_for(
            lambda: {served_by(line) for line in proxy.lines()} >= {a.address, b.address},
            deadline,
            "both APIs served requests",
        )
        a.kill()
        time.sleep(0.2)  # a's last answers logged; every later line was served elsewhere
        after_kill = len(proxy.lines())
        # started again at once, on its port: until it listens nginx finds the port
        # closed and retries on b; once a answers, after fail_timeout (10 s), it is back
        a_again = Api(tmp_path / "a.duckdb", a.port, tmp_path / "api-a-again.log")
        try:
            a_again.wait_ready(deadline)
            back_at = len(proxy.lines())
            wait_for(
                lambda: sum(served_by(line) == a.address for line in proxy.lines()[back_at:]) >= 5,
                deadline,
                "the restarted API took traffic again",
            )
        finally:
            stream.stop()
            a_again.stop()
    finally:
        stream.stop()

    assert stream.failures == [], f"{len(stream.failures)} of {stream.sent}: {stream.failures[:5]}"
    lines = proxy.lines()
    while_down = lines[after_kill:back_at]
    assert len(while_down) >= 20 and {served_by(line) for line in while_down} == {b.address}
    assert all(line["status"] == 200 for line in lines if line["method"] == "GET")
    retried = sum("," in line["upstream"] for line in while_down)
    print(
        f"{stream.sent} GETs, 0 failed; while a was down {len(while_down)} on b "
        f"({retried} after trying a); {sum(served_by(x) == a.address for x in lines[back_at:])} "
        "on a again"
    )

    # the APIs logged the ids nginx sent and the client's own address
    b.stop()
    logs = (a.log, b.log, tmp_path / "api-a-again.log")
    entries = [json.loads(x) for log in logs for x in log.read_text().splitlines() if x[:1] == "{"]
    access = [entry for entry in entries if entry.get("event") == "request"]
    by_id = {entry["request_id"]: entry for entry in access}
    assert by_id["edge-check-1"]["client"] == CLIENT  # not 203.0.113.7, not nginx's
    assert nginx_id in by_id and "bad id!" not in json.dumps(access)
    streamed = [entry for entry in access if entry["request_id"].startswith("stream-")]
    assert len(streamed) > 100 and {entry["client"] for entry in streamed} == {CLIENT}
    logged = {line["request_id"]: line for line in lines}
    assert logged[nginx_id]["client"] == CLIENT
    assert {entry["request_id"] for entry in streamed} <= set(logged)
