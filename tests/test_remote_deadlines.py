"""Deadlines and fairness over HTTP: a hostile server cannot hold the client, hostile clients
cannot hold the server, and 50 honest clients at once all get their verdicts (a soak test,
bounded in count and time)."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import half_matching_fingerprints
from remote_helpers import make_model, no_proxies  # noqa: F401 - a fixture

from ipguard_fast.cli import main
from ipguard_fast.remote import (
    RemoteError,
    RemoteLabelModel,
    protocol,
    serve,
    verify_remote,
)
from ipguard_fast.verdicts import verify

SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("no_proxies")


def read_answer(sock) -> bytes:
    """One whole HTTP answer: the head, then as many body bytes as its content-length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body




class HostileServer:
    """Accepts connections and then misbehaves: 'silent' never answers, 'drip' sends its answer
    one byte at a time."""

    def __init__(self, mode: str, interval: float = 0.2) -> None:
        self.mode, self.interval = mode, interval
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with conn:
            body = b'{"status":"ok"}'
            answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            for byte in answer:
                if self.stop.wait(self.interval if self.mode == "drip" else 3600):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


@pytest.mark.parametrize("mode", ["silent", "drip"])
def test_a_hostile_server_cannot_hold_the_client(mode):
    with HostileServer(mode) as hostile:
        client = RemoteLabelModel(hostile.url, timeout=1.0, retries=1, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(RemoteError, match="within"):
            client.health()
        elapsed = time.monotonic() - start
        client.close()
    assert elapsed < 4.0, f"two attempts of 1 s took {elapsed:.1f} s"


def test_the_run_deadline_bounds_retries_and_backoff():
    fps = half_matching_fingerprints(make_model(), 20)
    with HostileServer("silent") as hostile:
        start = time.monotonic()
        with pytest.raises(RemoteError):
            verify_remote(hostile.url, fps, timeout=10.0, retries=50, backoff=1.0, deadline=1.5)
        assert time.monotonic() - start < 4.0


def test_cli_timeout_retries_and_deadline(tmp_path, capsys):
    fps = half_matching_fingerprints(make_model(), 20)
    path = fps.save(tmp_path / "fp.safetensors")
    with HostileServer("drip") as hostile:
        start = time.monotonic()
        code = main(["verify", "--fingerprints", str(path), "--endpoint", hostile.url, "--timeout", "0.5",
                     "--retries", "1", "--deadline", "5"])
        assert code == 1 and time.monotonic() - start < 5.0
    assert "within" in capsys.readouterr().err


def _slow_sender(url: str, what: str, stop: threading.Event) -> bytes:
    """A client that sends a request one byte per 0.2 s: its headers ('headers') or its body ('body')."""
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    body = json.dumps(protocol.encode_images(torch.rand(2, *SHAPE))).encode()
    head = b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if what == "body":
            sock.sendall(head)
            payload = body
        else:
            payload = head + body
        for byte in payload:
            if stop.wait(0.2):
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
        try:
            return read_answer(sock)
        except OSError:
            return b""


@pytest.mark.parametrize("what", ["headers", "body"])
def test_slow_senders_get_408_and_hold_no_turn(what):
    model = make_model()
    images = torch.rand(5, *SHAPE)
    expected = model(images).argmax(1).tolist()
    with serve(model, input_shape=SHAPE, max_concurrent=4, request_timeout=1.5) as running:
        stop = threading.Event()
        with ThreadPoolExecutor(8) as pool:
            slow = [pool.submit(_slow_sender, running.url, what, stop) for _ in range(8)]
            time.sleep(0.3)  # every slow sender is connected and dripping
            # An honest client elsewhere (the slow ones fill their own address's quota).
            client = RemoteLabelModel(running.url, timeout=5.0, retries=0, local_address="127.0.0.2")
            start = time.monotonic()
            for _ in range(10):  # honest requests are served at once meanwhile
                assert client(images).tolist() == expected
            assert time.monotonic() - start < 1.5
            answers = [future.result(timeout=10) for future in slow]
            stop.set()
        client.close()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:1]


@pytest.mark.parametrize("headers, body", [
    ({"Content-Length": "1_0"}, b"0123456789"),
    ({"Content-Length": "+10"}, b"0123456789"),
    ({"Content-Length": ["10", "12"]}, b"0123456789"),
])
def test_malformed_framing_is_a_400_and_a_closed_connection(headers, body):
    """uvicorn refuses these itself, before the API sees them: its own (plain-text) 400, then it closes."""
    with serve(make_model(), input_shape=SHAPE) as running:
        lines = [b"POST /v1/labels HTTP/1.1", b"Host: x"]
        for name, value in headers.items():
            for v in (value if isinstance(value, list) else [value]):
                lines.append(f"{name}: {v}".encode())
        with socket.create_connection((running.host, running.port), timeout=10) as sock:
            sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            answer = b""
            while chunk := sock.recv(65536):  # the answer, then the end of the connection
                answer += chunk
        assert running.stats()["labels_requests"] == 0
    assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" in answer.lower()


def test_a_request_slower_than_the_header_deadline_is_still_answered(caplog):
    """The header deadline ends when the request reaches the API: a model that takes longer
    than request_timeout is waited for (the guard must see that its request started)."""
    model = make_model()

    def slow(images):
        time.sleep(1.5)
        return model(images)

    images = torch.rand(3, *SHAPE)
    with serve(slow, input_shape=SHAPE, num_classes=10, request_timeout=0.5) as running:
        with RemoteLabelModel(running.url, timeout=10.0, retries=0) as client:
            assert client(images).tolist() == model(images).argmax(1).tolist()
            assert client(images).tolist() == model(images).argmax(1).tolist()  # the same connection again
    # uvicorn ran each request in its connection's context: the header deadline stayed on.
    assert "have no deadline" not in caplog.text, "this uvicorn version defeats the header deadline (deadline.py)"


def test_deeply_nested_json_is_a_400_not_a_500():
    body = b"[" * 100_000 + b"]" * 100_000
    with serve(make_model(), input_shape=SHAPE, max_request_bytes=1 << 20) as running:
        with socket.create_connection((running.host, running.port), timeout=10) as sock:
            sock.sendall(b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 400") and b"nested" in answer
        assert running.stats()["server_errors"] == 0


def test_a_hostile_servers_nested_json_is_a_remote_error():
    nested = b"[" * 100_000 + b"]" * 100_000
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def answer():
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(nested) + nested)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        client = RemoteLabelModel(f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=5.0, retries=0)
        with pytest.raises(RemoteError, match="nested"):
            client.health()
        client.close()
    finally:
        thread.join(5)
        srv.close()


@pytest.mark.slow
def test_fifty_honest_clients_at_once_all_get_their_verdict():
    """The soak test: 50 clients (each from its own loopback address) verify 4 times each,
    concurrently, against one server with 4 turns; none may fail."""
    model = make_model()
    fps = half_matching_fingerprints(model, 40)
    expected = verify(model, fps)
    with serve(model, input_shape=SHAPE, max_concurrent=4) as running:
        def one_client(k: int) -> list:
            with RemoteLabelModel(running.url, timeout=30.0, retries=5, backoff=0.2,
                                  local_address=f"127.0.0.{k + 2}") as client:
                return [verify_remote(client, fps, batch_size=20) for _ in range(4)]

        start = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            results = [v for verdicts in pool.map(one_client, range(50)) for v in verdicts]
        elapsed = time.monotonic() - start
        stats = running.stats()
    assert len(results) == 200 and all(v == expected for v in results)
    assert stats["server_errors"] == 0 and stats["labels_ok"] == 400
    assert elapsed < 120
