"""The server's admission limits: connections (in all, per address), bytes of bodies in flight,
turns per address, and what holds the event loop (decoding off it, TCP_NODELAY, rate-limited logs)."""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from remote_helpers import make_model, no_proxies  # noqa: F401 - a fixture

from ipguard_fast.remote import RemoteLabelModel, protocol, serve
from ipguard_fast.remote.admission import ConnectionCount
from ipguard_fast.remote.connections import ConnectionGuards
from ipguard_fast.remote.logs import RateLimitedLog

SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("no_proxies")




def connect(running, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((running.host, running.port), timeout=10, source_address=(source, 0))
    return sock


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send a request, read until the server closes or the answer's Content-Length is complete."""
    try:
        sock.sendall(request)
    except OSError:
        pass
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length")]
        if length and len(body) >= length[0]:
            break
    return data


HEALTH = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"


def labels_request(images: torch.Tensor) -> bytes:
    body = json.dumps(protocol.encode_images(images)).encode()
    return b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body


# ---------------------------------------------------------------------- connections


def test_connections_over_the_per_address_limit_get_429_with_retry_after():
    with serve(make_model(), input_shape=SHAPE, max_connections_per_client=3) as running:
        held = [connect(running) for _ in range(3)]
        time.sleep(0.2)
        with connect(running) as extra:
            answer = exchange(extra, HEALTH)
        assert answer.startswith(b"HTTP/1.1 429") and b"retry-after: 1" in answer.lower()
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "too_many_requests"
        with connect(running, "127.0.0.2") as other:  # another address has its own quota
            assert exchange(other, HEALTH).startswith(b"HTTP/1.1 200")
        for sock in held:
            sock.close()
        time.sleep(0.2)
        with connect(running) as again:
            assert exchange(again, HEALTH).startswith(b"HTTP/1.1 200")
        assert running.stats()["connections_refused"] == 1


def test_connections_over_the_global_limit_get_503_and_the_client_retries():
    with serve(make_model(), input_shape=SHAPE, max_connections=4, max_connections_per_client=4) as running:
        held = [connect(running, f"127.0.0.{2 + k % 2}") for k in range(4)]
        time.sleep(0.2)
        with connect(running, "127.0.0.4") as extra:
            answer = exchange(extra, HEALTH)
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower()
        client = RemoteLabelModel(running.url, timeout=10, retries=0, local_address="127.0.0.5")
        threading.Timer(0.5, lambda: [sock.close() for sock in held]).start()
        start = time.monotonic()
        assert client.health(deadline=time.monotonic() + 20)["status"] == "ok"  # busy: retried until the deadline
        assert client.requests_sent >= 2 and time.monotonic() - start >= 0.5
        client.close()


def test_a_flood_of_connections_is_refused_in_a_few_log_lines(caplog):
    caplog.set_level(logging.INFO, logger="ipguard_fast.remote")
    with serve(make_model(), input_shape=SHAPE, max_connections=20) as running:
        flood = []
        for _ in range(300):
            try:
                flood.append(connect(running))
            except OSError:
                pass
        time.sleep(0.5)
        refused = running.stats()["connections_refused"]
        for sock in flood:
            sock.close()
        time.sleep(0.3)
        with connect(running) as sock:
            assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
    assert refused >= 250
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(lines) <= 2 and not any(r.exc_info for r in lines)


def test_max_connections_is_lowered_to_fit_the_file_limit():
    """Connections beyond the file table would make accept() fail (EMFILE) and stall the server;
    start_server fits max_connections under the process's limit, so a flood is refused instead."""
    code = """if True:
        import json, resource, sys, torch
        resource.setrlimit(resource.RLIMIT_NOFILE, (600, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        from ipguard_fast.remote import serve
        with serve(lambda x: torch.zeros(len(x), dtype=torch.int64), max_connections=1000) as running:
            print(running.port, flush=True)
            sys.stdin.readline()
            print(json.dumps({"max": running.limits.max_connections, **running.stats()}), flush=True)
    """
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(700)]
        time.sleep(1.0)
        for sock in flood:
            sock.close()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert exchange(sock, HEALTH).startswith(b"HTTP/1.1 200")
        out, err = child.communicate("done\n", timeout=60)
    finally:
        child.kill()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["max"] == 600 - 64 - 3 * 128 and result["connections_refused"] > 400
    assert "out of system resource" not in err and "Traceback" not in err, err[-2000:]


def test_the_event_loops_errors_are_one_line_per_interval(caplog):
    log = RateLimitedLog(logging.getLogger("ipguard_fast.remote"), interval=60.0)
    context = {"message": "socket.accept() out of system resource", "exception": OSError(errno.EMFILE, "Too many")}
    with caplog.at_level(logging.WARNING, logger="ipguard_fast.remote"):
        for _ in range(1000):
            log.loop_exception(None, context)
    assert len(caplog.records) == 1 and not caplog.records[0].exc_info
    assert "out of system resource" in caplog.records[0].getMessage()
    log.interval = 0.0
    with caplog.at_level(logging.WARNING, logger="ipguard_fast.remote"):
        log.loop_exception(None, context)
    assert "999 more since the last line" in caplog.records[-1].getMessage()


def test_uvicorns_warnings_are_rate_limited(caplog):
    caplog.set_level(logging.WARNING)
    with serve(make_model(), input_shape=SHAPE) as running:
        for _ in range(30):
            with connect(running) as sock:
                assert exchange(sock, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    invalid = [r for r in caplog.records if r.name == "uvicorn.error" and "Invalid HTTP" in r.getMessage()]
    assert len(invalid) == 1
    assert logging.getLogger("uvicorn.error").filters == []  # the filter goes with the server


def test_accepted_sockets_get_tcp_nodelay():
    class Transport:
        def __init__(self, sock):
            self.sock = sock

        def get_extra_info(self, name):
            return {"socket": self.sock, "peername": self.sock.getpeername()}.get(name)

        def is_closing(self):
            return False

    class Inner(asyncio.Protocol):
        def __init__(self, **kwargs):
            pass

    async def accept_one(sock):
        guards = ConnectionGuards(5.0, ConnectionCount(4, 4), RateLimitedLog(logging.getLogger("t"), 1.0), Inner)
        guard = guards.protocol()
        guard.connection_made(Transport(sock))
        guard._cancel()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
                asyncio.run(accept_one(accepted))
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


# ---------------------------------------------------------------------- bodies and turns


def test_bodies_in_flight_are_capped_before_they_are_read():
    limits = dict(max_request_bytes=1 << 20, max_body_bytes_in_flight=3 << 19, request_timeout=1.5)
    images = torch.rand(2, *SHAPE)
    with serve(make_model(), input_shape=SHAPE, **limits) as running:
        with connect(running) as unfinished:  # declares 1 MiB, sends 1 KiB, stalls
            unfinished.sendall(b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1 << 20)
                               + b"{" * 1024)
            time.sleep(0.2)
            with connect(running, "127.0.0.2") as big:  # another 1 MiB would pass 1.5 MiB: refused unread
                answer = exchange(big, b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                                  % (1 << 20))
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower()
            with connect(running, "127.0.0.3") as small:  # a small body still fits
                assert exchange(small, labels_request(images)).startswith(b"HTTP/1.1 200")
            assert exchange(unfinished, b"").startswith(b"HTTP/1.1 408")  # its deadline frees the budget
        body = b'{"shape":[1,1,8,8],"dtype":"float32","data":"' + b"A" * ((1 << 20) - 100) + b'"}'
        with connect(running, "127.0.0.2") as big:
            answer = exchange(big, b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                              % len(body) + body)
        assert answer.startswith(b"HTTP/1.1 400")  # read and decoded this time (a wrong data length)
        assert running.stats()["refused"] == 1


def slow_model(seconds: float):
    model = make_model()

    def slow(images):
        time.sleep(seconds)
        return model(images)

    return slow


def test_requests_from_one_address_wait_in_line_instead_of_429():
    images = torch.rand(3, *SHAPE)
    with serve(slow_model(0.05), input_shape=SHAPE, num_classes=10, max_concurrent=1, max_per_client=1) as running:
        def one(_):
            with connect(running) as sock:
                return exchange(sock, labels_request(images))

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one, range(12)))
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers), [a[:40] for a in answers]


def test_one_address_holds_at_most_max_per_client_turns():
    """Four slow requests from one address and one from another, two turns, one per address:
    the other address's request is served alongside the first, not after the second."""
    images = torch.rand(1, *SHAPE)
    # The other address sends once the first address's first request is inside the model,
    # and every turn lasts a second: on a busy machine thread start-up and decoding then
    # shift both sides alike instead of deciding the order (a 0.4 s turn after a fixed
    # 0.1 s wait once failed beside a benchmark).
    started = threading.Event()
    model = slow_model(1.0)

    def signalling(batch):
        started.set()
        return model(batch)

    with serve(signalling, input_shape=SHAPE, num_classes=10, max_concurrent=2, max_per_client=1) as running:
        def one(source):
            with connect(running, source) as sock:
                exchange(sock, labels_request(images))
            return time.monotonic()

        with ThreadPoolExecutor(5) as pool:
            first = [pool.submit(one, "127.0.0.1") for _ in range(4)]
            assert started.wait(30), "the first address's request never reached the model"
            other = pool.submit(one, "127.0.0.2").result()
            ends = sorted(f.result() for f in first)
    assert other < ends[1], "the second address waited behind the first one's queue"


def _health_latencies_while_two_bodies_decode(request: bytes) -> list[float]:
    """Seconds each health probe took while two clients sent ``request`` at once, sorted."""
    def labels(images):
        return torch.zeros(images.shape[0], dtype=torch.int64)

    with serve(labels, num_classes=10) as running:
        probe = connect(running, "127.0.0.9")
        exchange(probe, HEALTH)
        with ThreadPoolExecutor(2) as pool:
            senders = [pool.submit(lambda: exchange(connect(running, f"127.0.0.{2 + k}"), request)) for k in range(2)]
            latencies = []
            while not all(s.done() for s in senders):
                start = time.perf_counter()
                assert exchange(probe, HEALTH).startswith(b"HTTP/1.1 200")
                latencies.append(time.perf_counter() - start)
                time.sleep(0.01)
            answers = [s.result() for s in senders]
        probe.close()
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers)
    return sorted(latencies)


def test_health_answers_fast_while_two_60mb_bodies_decode():
    """Decoding runs in worker threads, in short steps: the event loop is never held for long.

    A loop that decodes a body itself is held for the whole decode (about 300 ms here) in
    every attempt, while a good loop's slowest answer is under 100 ms; a loaded CI machine
    can stall a good loop once. So the claim is that in one of three attempts no health
    answer took 150 ms.
    """
    numel = 11_000_000  # about 44 MB of pixels, 59 MB of base64
    body = json.dumps(protocol.encode_images(torch.rand(1, numel))).encode()
    request = b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    slowest = []
    for _ in range(3):
        latencies = _health_latencies_while_two_bodies_decode(request)
        assert len(latencies) >= 10, latencies
        if latencies[-1] < 0.15:
            return
        slowest.append(latencies[-5:])
    raise AssertionError(f"the slowest health answers of each attempt: {slowest}")


def test_a_batch_the_model_cannot_take_is_one_log_line(caplog):
    """Any client can send images of a shape the model cannot take (a server without a declared
    shape answers 400): the server's log says so in one line, never with a traceback."""
    caplog.set_level(logging.WARNING, logger="ipguard_fast.remote")
    with serve(make_model()) as running:
        with connect(running) as sock:
            assert exchange(sock, labels_request(torch.rand(2, 1, 5, 5))).startswith(b"HTTP/1.1 400")
    lines = [r for r in caplog.records if "the model failed on a batch" in r.getMessage()]
    assert len(lines) == 1 and not lines[0].exc_info and "[2, 1, 5, 5]" in lines[0].getMessage()
