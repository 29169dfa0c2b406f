"""A real S3 endpoint for tests: moto's server (``ThreadedMotoServer``) on a free
loopback port, in this process. ``stop()`` closes the listening socket and every open
connection (an outage: clients get "connection refused", not a hung keep-alive
socket); ``start()`` again listens on the same port, and the buckets are still there
(moto's backend lives in the process, not in the server)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid
from typing import Any

import boto3
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from redis_server import free_port

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


def quiet_logging() -> None:
    """No line per request (werkzeug logs each at INFO) and no botocore chatter."""
    for name in ("werkzeug", "moto"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _TrackedMotoServer(ThreadedMotoServer):
    """moto's threaded server remembering its open connections, so that ``stop()``
    can cut them (werkzeug serves HTTP/1.1 keep-alive connections in threads that
    outlive ``shutdown()``)."""

    def __init__(self, ip_address: str, port: int) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        tracked = self

        process = server.process_request
        shutdown_request = server.shutdown_request

        def process_request(request: Any, client_address: Any) -> None:
            with tracked._guard:
                tracked._connections.add(request)
            process(request, client_address)

        def close_request(request: Any) -> None:
            with tracked._guard:
                tracked._connections.discard(request)
            shutdown_request(request)

        def handle_error(request: Any, client_address: Any) -> None:
            pass  # a connection cut by stop(): nothing to print

        server.process_request = process_request  # type: ignore[method-assign]
        server.shutdown_request = close_request  # type: ignore[method-assign]
        server.handle_error = handle_error  # type: ignore[method-assign]
        self._server = server
        self._server_ready_event.set()
        server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        """Stop serving, stop listening (new connections are refused) and cut the open
        connections."""
        super().stop()
        if self._server is not None:
            self._server.server_close()
        with self._guard:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class S3Server:
    """moto's S3 (and every other moto service) on ``127.0.0.1:<free port>``."""

    def __init__(self) -> None:
        quiet_logging()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: _TrackedMotoServer | None = None
        self._hung: socket.socket | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (on the same port as before, after a ``stop()``)."""
        if self._server is not None:
            return
        self._end_hang()
        server = _TrackedMotoServer("127.0.0.1", self.port)
        server.start()
        self._server = server

    def stop(self) -> None:
        """Stop listening and cut every open connection (clients are refused at
        once); the buckets are kept."""
        self._end_hang()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def hang(self) -> None:
        """Stop answering but keep listening: connections are accepted (by the kernel)
        and never answered, so clients wait for their timeouts. ``start()`` or
        ``stop()`` ends it."""
        self.stop()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)  # never accepted: connections wait in the backlog
        self._hung = listener

    def _end_hang(self) -> None:
        if self._hung is not None:
            self._hung.close()  # the connections waiting in its backlog are reset
            self._hung = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def env(self) -> dict[str, str]:
        """The AWS variables that point a client (boto3, s3fs, pyarrow, pyiceberg
        through the store's settings) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server (short timeouts, no retries)."""
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket (a unique name unless given); its name."""
        bucket = name or f"test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
