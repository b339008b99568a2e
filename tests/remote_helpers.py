"""What the HTTP API's tests share: no proxies for loopback traffic, the small model, and a
fake API server that answers as a test script says (misbehaving, compressing, echoing)."""
from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from torch import nn

from ipguard_fast.remote import protocol

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture
def no_proxies(monkeypatch):
    """Loopback traffic must never be routed through a proxy from the environment."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def make_model(seed: int = 0) -> nn.Module:
    """The tests' model: 1x8x8 images, 10 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


class FakeApi:
    """A label API in a thread (http.server) that answers /v1/labels from ``script`` -- a list
    of (status, headers, body) -- then correctly with ``model``.

    ``health``: answer GET /v1/health (else 404, as an API without it). ``encoding``: compress
    every answer (gzip, deflate, raw-deflate; br only says so). ``echo``: answer every POST
    403 with the request's Authorization header in the message. ``requests`` lists
    "METHOD path" of each request, ``seen`` its headers.
    """

    def __init__(self, model: nn.Module, script=(), *, health: bool = False, encoding: str = "identity",
                 echo: bool = False) -> None:
        self.model, self.script, self.encoding, self.echo = model, list(script), encoding, echo
        self.requests: list[str] = []
        self.seen: list[dict] = []
        handler = type("Handler", (_Handler,), {"api": self, "health": health})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def label_requests(self) -> int:
        return sum(r.startswith("POST") for r in self.requests)

    def compress(self, raw: bytes) -> tuple[bytes, dict]:
        if self.encoding == "gzip":
            return gzip.compress(raw), {"Content-Encoding": "gzip"}
        if self.encoding == "deflate":
            return zlib.compress(raw), {"Content-Encoding": "deflate"}
        if self.encoding == "raw-deflate":
            packer = zlib.compressobj(wbits=-15)
            return packer.compress(raw) + packer.flush(), {"Content-Encoding": "deflate"}
        if self.encoding == "br":
            return raw, {"Content-Encoding": "br"}
        return raw, {}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class _Handler(BaseHTTPRequestHandler):
    api: FakeApi
    health: bool

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._note()
        if self.health:
            self._send(200, {}, json.dumps({"status": "ok", "input_shape": [1, 8, 8], "num_classes": 10}))
        else:
            self._send(404, {}, b'{"error":"not_found","message":"no health here"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._note()
        api = self.api
        if api.echo:
            message = f"refused {self.headers.get('Authorization')} for {self.path}"
            self._send(403, {}, json.dumps({"error": "forbidden", "message": message}))
        elif api.script:
            self._send(*api.script.pop(0))
        else:
            with torch.no_grad():
                labels = api.model(protocol.decode_images(json.loads(body))).argmax(1)
            self._send(200, {}, json.dumps(protocol.encode_labels(labels)))

    def _note(self):
        self.api.requests.append(f"{self.command} {self.path}")
        self.api.seen.append(dict(self.headers))

    def _send(self, status, headers, body):
        raw, coding = self.api.compress(body.encode() if isinstance(body, str) else body)
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **coding, **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
