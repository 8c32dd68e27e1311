"""A serve app running on a real uvicorn in a thread, and a small HTTP client for the tests."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import uvicorn

from transformer_cli.service.app import AppSettings, create_app
from transformer_cli.service.metrics import ServiceMetrics
from transformer_cli.service.server import address, bind
from transformer_cli.service.worker import BatchLimits, ModelWorker


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


class LiveServer:
    """with LiveServer(lambda: translator, ...) as s: s.post("/v1/translate", {...})"""

    def __init__(self, load, batch: BatchLimits = BatchLimits(), settings: AppSettings = AppSettings()) -> None:
        self.metrics = ServiceMetrics()
        self.worker = ModelWorker(load, batch, self.metrics)
        sock = bind("127.0.0.1", 0)
        self.url, self.sock = address(sock), sock
        config = uvicorn.Config(create_app(self.worker, settings, self.metrics), log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        assert self.worker.ready.wait(120), self.worker.error
        deadline = time.monotonic() + 120  # the worker may be ready before uvicorn listens
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def request(self, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 120) -> Reply:
        return request(self.url, method, path, body, headers, timeout)

    def post(self, path: str, body, **kw) -> Reply:
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)


def request(url: str, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 120) -> Reply:
    """One HTTP request on a new connection; a dict body is sent as JSON."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    if isinstance(body, (dict, list)):
        body = json.dumps(body, ensure_ascii=False).encode()
    try:
        conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/json"})
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()
