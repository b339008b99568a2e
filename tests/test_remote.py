"""The label-only HTTP API: server, client, resumable verification, CLI entry points.

Everything runs on 127.0.0.1 with ephemeral ports; every server is shut down by its test, and
every network call has a timeout.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from conftest import half_matching_fingerprints
from remote_helpers import FakeApi, make_model, no_proxies  # noqa: F401 - a fixture
from torch import nn

from ipguard_fast.cli import main
from ipguard_fast.cli.common import shape_arg
from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.remote import (
    ProgressFileError,
    RemoteError,
    RemoteLabelModel,
    fingerprints_digest,
    protocol,
    serve,
    verify_remote,
)
from ipguard_fast.verdicts import matching_rate, verify

TIMEOUT = 10.0
SHAPE = (1, 8, 8)
NUM_CLASSES = 10


pytestmark = pytest.mark.usefixtures("no_proxies")


def make_fingerprints(model: nn.Module, n: int = 40, seed: int = 1) -> FingerprintSet:
    return half_matching_fingerprints(model, n, seed, SHAPE, NUM_CLASSES)


@pytest.fixture
def model():
    return make_model()


@pytest.fixture
def fingerprints(model):
    return make_fingerprints(model)


@pytest.fixture
def server(model):
    running = serve(model, input_shape=SHAPE)
    try:
        yield running
    finally:
        running.shutdown()


def fast_client(url: str, **kwargs) -> RemoteLabelModel:
    """A client with short timeouts whose sleeps are recorded instead of slept, without jitter."""
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("backoff", 0.01)
    client = RemoteLabelModel(url, **kwargs)
    client.delays = []
    client._sleep = client.delays.append
    client._random = lambda: 0.0  # the jitter's draw: its factor is then exactly 1
    return client


def raw_request(url: str, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict, object]:
    """One request with http.client; returns (status, headers, parsed JSON or raw bytes)."""
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data
        return response.status, response.headers, parsed  # header names are case-insensitive
    finally:
        conn.close()


def labels_body(images: torch.Tensor) -> bytes:
    return json.dumps(protocol.encode_images(images)).encode()


# ---------------------------------------------------------------------- the happy path


def test_matching_rate_over_http_equals_local(server, model, fingerprints):
    remote = RemoteLabelModel(server.url, timeout=TIMEOUT)
    local_rate = matching_rate(model, fingerprints, batch_size=16)
    assert local_rate == 0.5
    assert matching_rate(remote, fingerprints, batch_size=16) == local_rate

    verdict = verify_remote(server.url, fingerprints, batch_size=16, timeout=TIMEOUT)
    assert verdict == verify(model, fingerprints)
    assert verdict.to_dict()["matching_rate"] == local_rate

    labels = remote(fingerprints.images[:7])
    assert labels.dtype == torch.int64 and labels.tolist() == model(fingerprints.images[:7]).argmax(1).tolist()
    assert remote(fingerprints.images[:0]).shape == (0,)


def test_health_reports_shape_classes_and_limits(model):
    with serve(model, input_shape=SHAPE, max_batch=7, max_request_bytes=10_000) as running:
        health = RemoteLabelModel(running.url, timeout=TIMEOUT).health()
        status, headers, raw = raw_request(running.url, "GET", "/v1/health")
    assert health == {"status": "ok", "api_version": "v1", "num_classes": NUM_CLASSES, "input_shape": list(SHAPE),
                      "max_batch": 7, "max_request_bytes": 10_000}
    assert status == 200 and headers["Content-Type"] == "application/json" and raw == health


def test_client_splits_requests_to_the_advertised_limits(model, fingerprints):
    # 7 images per request at most, and about 3 KiB of JSON (each image is ~350 base64 bytes).
    with serve(model, input_shape=SHAPE, max_batch=7, max_request_bytes=3000) as running:
        verdict = verify_remote(running.url, fingerprints, batch_size=20, timeout=TIMEOUT)
        stats = running.stats()
    assert verdict == verify(model, fingerprints)
    assert stats["images"] == len(fingerprints) and stats["client_errors"] == 0
    assert stats["labels_ok"] >= len(fingerprints) / 7


def test_model_runs_in_eval_mode_without_grad():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(64, NUM_CLASSES)

        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return self.linear(x.flatten(1))

    probe = Probe().train()
    with serve(probe, input_shape=SHAPE) as running:
        RemoteLabelModel(running.url, timeout=TIMEOUT)(torch.rand(3, *SHAPE))
    assert seen and all(state == (False, False) for state in seen)


def test_serve_without_input_shape_accepts_any_and_reports_null(model):
    with serve(model) as running:
        health = RemoteLabelModel(running.url, timeout=TIMEOUT).health()
        assert health["input_shape"] is None and health["num_classes"] is None
        status, _, payload = raw_request(running.url, "POST", "/v1/labels", labels_body(torch.rand(2, 4, 4)))
        assert status == 400 and "could not process" in payload["message"]
        assert "mat1" not in payload["message"]  # no model internals leak
        assert RemoteLabelModel(running.url, timeout=TIMEOUT)(torch.rand(2, *SHAPE)).shape == (2,)


def test_serve_rejects_an_input_shape_the_model_cannot_take(model):
    with pytest.raises(ValueError, match="input_shape"):
        serve(model, input_shape=(3, 8, 8))


# ---------------------------------------------------------------------- auth


def test_bearer_token_is_enforced(model):
    with serve(model, input_shape=SHAPE, token="s3cret") as running:
        images = torch.rand(4, *SHAPE)
        for token in (None, "wrong"):
            with pytest.raises(RemoteError, match="401") as info:
                fast_client(running.url, token=token)(images)
            assert info.value.status == 401
        with pytest.raises(RemoteError, match="401"):
            fast_client(running.url).health()
        status, headers, payload = raw_request(running.url, "POST", "/v1/labels", labels_body(images),
                                               {"Authorization": "Basic czNjcmV0"})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert payload["error"] == "unauthorized"

        good = fast_client(running.url, token="s3cret")
        assert good(images).tolist() == make_model()(images).argmax(1).tolist()
        assert good.requests_sent == 1  # 401 was never retried: no extra attempts here
        assert running.stats()["client_errors"] == 4


def test_token_is_not_retried(model):
    with serve(model, input_shape=SHAPE, token="s3cret") as running:
        client = fast_client(running.url, token="nope", retries=4)
        with pytest.raises(RemoteError):
            client(torch.rand(1, *SHAPE))
        assert client.requests_sent == 1 and client.delays == []


# ---------------------------------------------------------------------- bad requests


def _bad_bodies():
    good = protocol.encode_images(torch.rand(2, *SHAPE))
    nan = torch.rand(2, *SHAPE)
    nan[0, 0, 0, 0] = float("nan")
    inf = torch.rand(2, *SHAPE)
    inf[1, 0, 3, 3] = float("inf")
    return {
        "not json": b"{this is not json",
        "not utf-8": b"\xff\xfe\x00",
        "json array": b"[1, 2, 3]",
        "missing data": json.dumps({"shape": [2, 1, 8, 8], "dtype": "float32"}).encode(),
        "wrong dtype": json.dumps({**good, "dtype": "float64"}).encode(),
        "wrong image shape": json.dumps({**good, "shape": [2, 1, 4, 16]}).encode(),
        "zero batch": json.dumps({**good, "shape": [0, 1, 8, 8], "data": ""}).encode(),
        "bool in shape": json.dumps({**good, "shape": [True, 1, 8, 8]}).encode(),
        "shape not a list": json.dumps({**good, "shape": "2,1,8,8"}).encode(),
        "huge shape": json.dumps({**good, "shape": [2, 10**12, 8, 8]}).encode(),
        "bad base64": json.dumps({**good, "data": "!" * len(good["data"])}).encode(),
        "data too short": json.dumps({**good, "data": good["data"][:-8]}).encode(),
        "data not a string": json.dumps({**good, "data": [1, 2]}).encode(),
        "nan pixels": labels_body(nan),
        "inf pixels": labels_body(inf),
    }


def test_bad_requests_get_400_and_the_server_keeps_serving(model):
    images = torch.rand(3, *SHAPE)
    expected = model(images).argmax(1).tolist()
    with serve(model, input_shape=SHAPE) as running:
        for name, body in _bad_bodies().items():
            status, headers, payload = raw_request(running.url, "POST", "/v1/labels", body,
                                                   {"Content-Type": "application/json"})
            assert status == 400, name
            assert isinstance(payload, dict) and payload["error"] == "bad_request" and payload["message"], name
            assert "Traceback" not in payload["message"], name
            # ... and the next good request is served.
            assert RemoteLabelModel(running.url, timeout=TIMEOUT)(images).tolist() == expected, name
        assert running.stats()["server_errors"] == 0


def test_oversized_and_odd_requests_get_4xx(model):
    images = torch.rand(3, *SHAPE)
    with serve(model, input_shape=SHAPE, max_request_bytes=4096, max_batch=5) as running:
        cases = [
            # a body over the byte limit (the server drains it so we can read the answer)
            ("POST", "/v1/labels", labels_body(torch.rand(12, *SHAPE)), {}, 413),
            # a batch over max_batch that fits the byte limit
            ("POST", "/v1/labels", labels_body(torch.rand(6, *SHAPE)), {}, 413),
            # a Content-Length claiming a terabyte, with no body behind it
            ("POST", "/v1/labels", None, {"Content-Length": str(10**12)}, 413),
            ("POST", "/v1/labels", None, {"Transfer-Encoding": "chunked"}, 411),
            ("GET", "/v1/labels", None, {}, 405),
            ("POST", "/v1/health", b"{}", {}, 405),
            ("GET", "/", None, {}, 404),
            ("GET", "/v2/labels", None, {}, 404),
            ("DELETE", "/v1/labels", None, {}, 405),
        ]
        for method, path, body, headers, expected_status in cases:
            status, _, payload = raw_request(running.url, method, path, body, headers)
            assert status == expected_status, (method, path, headers)
            assert isinstance(payload, dict) and payload["error"] == protocol.ERROR_CODES[expected_status]
        status, _, payload = raw_request(running.url, "BREW", "/v1/labels")
        assert status == 501 and isinstance(payload, dict)
        # Bad framing never reaches the API: uvicorn's own 400 (plain text), then it closes.
        assert raw_request(running.url, "POST", "/v1/labels", None, {"Content-Length": "-5"})[0] == 400
        with socket.create_connection((running.host, running.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"POST /v1/labels HTTP/1.0\r\n\r\n")  # no Content-Length at all
            assert re.match(rb"HTTP/1\.[01] 411", sock.recv(65536))

        assert RemoteLabelModel(running.url, timeout=TIMEOUT)(images).tolist() == model(images).argmax(1).tolist()
        assert running.stats()["server_errors"] == 0


def test_a_client_that_stops_sending_gets_408_and_others_are_served(model):
    with serve(model, input_shape=SHAPE, request_timeout=0.3) as running:
        with socket.create_connection((running.host, running.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"shape\"")
            answer = sock.recv(65536).decode()
        assert re.match(r"HTTP/1\.[01] 408", answer)
        assert RemoteLabelModel(running.url, timeout=TIMEOUT)(torch.rand(1, *SHAPE)).shape == (1,)


def test_a_failing_model_gets_500_without_details(model):
    def broken(images):
        raise RuntimeError("secret internal detail")

    with serve(broken) as running:
        status, _, payload = raw_request(running.url, "POST", "/v1/labels", labels_body(torch.rand(1, *SHAPE)))
        assert status == 400 and "secret" not in json.dumps(payload)
    with serve(model, input_shape=SHAPE) as running:
        running._service.label_fn = broken
        client = fast_client(running.url, retries=2)
        with pytest.raises(RemoteError, match="500") as info:
            client(torch.rand(1, *SHAPE))
        assert info.value.status == 500 and "secret" not in str(info.value)
        assert client.requests_sent == 3  # 5xx is retried
        assert len(client.delays) == 2


def test_busy_server_answers_503_with_retry_after(model):
    entered, release = threading.Event(), threading.Event()

    def slow(images):
        entered.set()
        release.wait(TIMEOUT)
        return model(images)

    with serve(slow, max_concurrent=1, queue_timeout=0) as running:  # no waiting for a turn
        result = {}
        worker = threading.Thread(target=lambda: result.update(
            labels=RemoteLabelModel(running.url, timeout=TIMEOUT)(torch.rand(2, *SHAPE))))
        worker.start()
        try:
            assert entered.wait(TIMEOUT)
            status, headers, payload = raw_request(running.url, "POST", "/v1/labels", labels_body(torch.rand(1, *SHAPE)))
            assert status == 503 and headers["Retry-After"] == "1" and payload["error"] == "unavailable"
        finally:
            release.set()
            worker.join(TIMEOUT)
        assert result["labels"].shape == (2,)


# ---------------------------------------------------------------------- a scripted (misbehaving) server


def test_flaky_server_is_retried_with_backoff_and_retry_after(model, fingerprints):
    script = [(503, {}, b'{"error":"unavailable","message":"warming up"}'),
              (429, {"Retry-After": "2"}, b'{"error":"too_many_requests","message":"slow down"}')]
    images = fingerprints.images[:5]
    with FakeApi(model, script) as flaky:
        client = fast_client(flaky.url, retries=5, backoff=0.25)
        labels = client(images)
        assert labels.tolist() == model(images).argmax(1).tolist()
        assert flaky.label_requests == 3
        assert client.delays == [0.25, 2.0]  # 0.25 * 2**0 after the 503, then Retry-After: 2


def test_retry_after_http_date_and_cap(model):
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))
    with FakeApi(model, [(429, {"Retry-After": when}, b"{}"), (502, {"Retry-After": "junk"}, b"")]) as flaky:
        client = fast_client(flaky.url, backoff=0.1, max_backoff=5.0)
        assert client(torch.rand(2, *SHAPE)).shape == (2,)
        assert client.delays == [5.0, 0.2]  # an hour capped at max_backoff; junk ignored: 0.1 * 2**1


def test_retries_run_out(model):
    with FakeApi(model, [(503, {}, b"{}")] * 10) as down:
        client = fast_client(down.url, retries=3, backoff=0.01)
        with pytest.raises(RemoteError, match="503") as info:
            client(torch.rand(2, *SHAPE))
        assert info.value.status == 503 and down.label_requests == 4
        assert client.delays == [0.01, 0.02, 0.04]


@pytest.mark.parametrize("status", [400, 403, 404, 413, 422])
def test_other_4xx_are_not_retried(model, status):
    body = json.dumps({"error": "x", "message": "nope, because reasons"}).encode()
    with FakeApi(model, [(status, {}, body)]) as api:
        client = fast_client(api.url, retries=5)
        with pytest.raises(RemoteError, match="because reasons") as info:
            client(torch.rand(2, *SHAPE))
        assert info.value.status == status and api.label_requests == 1 and client.delays == []


def test_connection_refused_is_retried_then_raises():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = fast_client(f"http://127.0.0.1:{port}", retries=2, backoff=0.01)
    with pytest.raises(RemoteError, match="cannot reach"):
        client(torch.rand(1, *SHAPE))
    assert client.requests_sent == 3 and client.delays == [0.01, 0.02]


@pytest.mark.parametrize("body, match", [
    (b"<html>oops</html>", "malformed JSON"),
    (b'{"labels": [1, 2]}', "2 labels for a batch of 3"),
    (b'{"labels": [1, 2, 10]}', r"labels must be \[0, 10\)"),
    (b'{"labels": [1, -1, 2]}', r"labels must be \[0, 10\)"),
    (b'{"labels": [1, 2.0, 3]}', "not an integer"),
    (b'{"labels": [1, true, 3]}', "not an integer"),
    (b'{"labels": "1,2,3"}', "must be a list"),
    (b'{"logits": [[0.1]]}', "'labels' list"),
    (b"[1, 2, 3]", "'labels' list"),
])
def test_malformed_answers_raise_remote_error(model, body, match):
    with FakeApi(model, [(200, {}, body)]) as api:
        client = fast_client(api.url, num_classes=NUM_CLASSES)
        with pytest.raises(RemoteError, match=match):
            client(torch.rand(3, *SHAPE))
        assert api.label_requests == 1  # a malformed answer is not retried


def test_redirects_are_not_followed(model):
    with FakeApi(model, [(307, {"Location": "http://127.0.0.1:1/elsewhere"}, b"")]) as api:
        with pytest.raises(RemoteError, match="redirect"):
            fast_client(api.url, token="t")(torch.rand(1, *SHAPE))


def test_client_rejects_bad_arguments():
    for url in ("ftp://host", "127.0.0.1:8080", "http://", "http://h/x?q=1"):
        with pytest.raises(ValueError):
            RemoteLabelModel(url)
    with pytest.raises(ValueError):
        RemoteLabelModel("http://127.0.0.1:1", retries=-1)
    with pytest.raises(ValueError):
        RemoteLabelModel("http://127.0.0.1:1", timeout=0)
    client = RemoteLabelModel("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="NaN"):
        client(torch.full((1, *SHAPE), float("nan")))
    with pytest.raises(ValueError):
        client(torch.zeros(2, 3, dtype=torch.int64))


def test_verify_remote_without_health_endpoint(model, fingerprints):
    with FakeApi(model) as api:  # answers 404 on GET /v1/health
        assert verify_remote(api.url, fingerprints, batch_size=16, timeout=TIMEOUT) == verify(model, fingerprints)


def test_verify_remote_refuses_a_server_for_other_inputs(fingerprints):
    other = nn.Sequential(nn.Flatten(), nn.Linear(48, NUM_CLASSES))
    with serve(other, input_shape=(3, 4, 4)) as running:
        with pytest.raises(RemoteError, match="shape"):
            verify_remote(running.url, fingerprints, timeout=TIMEOUT)
        assert running.stats()["labels_requests"] == 0
    with serve(nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), input_shape=SHAPE) as running:
        with pytest.raises(RemoteError, match="5 classes"):
            verify_remote(running.url, fingerprints, timeout=TIMEOUT)


# ---------------------------------------------------------------------- resumable verification


def test_interrupted_run_resumes_without_requerying(model, fingerprints, tmp_path):
    progress = tmp_path / "progress.json"
    expected = verify(model, fingerprints)
    first = serve(model, input_shape=SHAPE)
    try:
        def kill_after_two(index, done, total):
            assert total == 5
            if done == 2:
                first.shutdown()  # the server dies between batch 2 and batch 3

        with pytest.raises(RemoteError, match="2/5 batches are saved"):
            verify_remote(first.url, fingerprints, batch_size=8, progress_file=progress, retries=2, backoff=0.01,
                          timeout=TIMEOUT, on_batch=kill_after_two)
    finally:
        first.shutdown()
    assert first.stats()["labels_ok"] == 2
    state = json.loads(progress.read_text())
    assert state["fingerprints_sha256"] == fingerprints_digest(fingerprints)
    assert state["batch_size"] == 8 and sorted(state["batches"]) == ["0", "1"]
    assert state["batches"]["0"] == model(fingerprints.images[:8]).argmax(1).tolist()

    with serve(model, input_shape=SHAPE, port=first.port) as second:  # restarted at the same address
        verdict = verify_remote(second.url, fingerprints, batch_size=8, progress_file=progress, timeout=TIMEOUT)
        assert second.stats()["labels_ok"] == 3 and second.stats()["images"] == 40 - 16
    assert verdict == expected
    assert sorted(json.loads(progress.read_text())["batches"], key=int) == ["0", "1", "2", "3", "4"]
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]  # no temp files left behind

    # A complete progress file answers without any server at all...
    assert verify_remote(first.url, fingerprints, batch_size=8, progress_file=progress, retries=0) == expected
    # ... but only for the endpoint it was made against.
    with pytest.raises(ProgressFileError, match="not from"):
        verify_remote("http://127.0.0.1:9", fingerprints, batch_size=8, progress_file=progress, retries=0)


def test_progress_file_for_other_fingerprints_is_refused(server, model, fingerprints, tmp_path):
    progress = tmp_path / "progress.json"
    verify_remote(server.url, fingerprints, batch_size=8, progress_file=progress, timeout=TIMEOUT)
    before = server.stats()["labels_requests"]

    others = make_fingerprints(model, seed=7)
    with pytest.raises(ProgressFileError, match="other fingerprints"):
        verify_remote(server.url, others, batch_size=8, progress_file=progress, timeout=TIMEOUT)
    relabelled = FingerprintSet(images=fingerprints.images, labels=(fingerprints.labels + 1) % NUM_CLASSES,
                                source_labels=fingerprints.source_labels, margins=fingerprints.margins,
                                steps=fingerprints.steps, meta=fingerprints.meta)
    with pytest.raises(ProgressFileError, match="other fingerprints"):
        verify_remote(server.url, relabelled, batch_size=8, progress_file=progress, timeout=TIMEOUT)
    with pytest.raises(ProgressFileError, match="batch_size=8"):
        verify_remote(server.url, fingerprints, batch_size=16, progress_file=progress, timeout=TIMEOUT)
    assert server.stats()["labels_requests"] == before  # nothing was queried

    state = json.loads(progress.read_text())
    state["batches"]["2"] = [99] * 8
    progress.write_text(json.dumps(state))
    with pytest.raises(ProgressFileError, match="integrity check"):
        verify_remote(server.url, fingerprints, batch_size=8, progress_file=progress, timeout=TIMEOUT)
    progress.write_text('{"format": "ipguard_fast.remote.pro')
    with pytest.raises(ProgressFileError, match="cannot read"):
        verify_remote(server.url, fingerprints, batch_size=8, progress_file=progress, timeout=TIMEOUT)


def test_verify_remote_threshold_and_arguments(server, model, fingerprints):
    verdict = verify_remote(server.url, fingerprints, batch_size=64, threshold=0.6, timeout=TIMEOUT)
    assert verdict == verify(model, fingerprints, threshold=0.6) and not verdict.pirated
    before = server.stats()["labels_requests"]
    for kwargs in ({"threshold": 1.5}, {"batch_size": 0}, {"batch_size": True}):
        with pytest.raises(ValueError):
            verify_remote(server.url, fingerprints, timeout=TIMEOUT, **kwargs)
    bad = FingerprintSet(images=fingerprints.images, labels=fingerprints.labels,
                         source_labels=fingerprints.source_labels, margins=fingerprints.margins,
                         steps=fingerprints.steps, meta={**fingerprints.meta, "threshold_shown": "no"})
    with pytest.raises(ValueError, match="threshold_shown"):   # refused before any query
        verify_remote(server.url, bad, timeout=TIMEOUT)
    assert server.stats()["labels_requests"] == before
    # A file whose threshold can show no copy: the remote verdict is inconclusive too.
    weak = FingerprintSet(images=fingerprints.images, labels=fingerprints.labels,
                          source_labels=fingerprints.source_labels, margins=fingerprints.margins,
                          steps=fingerprints.steps, meta={**fingerprints.meta, "threshold": 0.95,
                                                          "threshold_shown": False})
    verdict = verify_remote(server.url, weak, batch_size=64, timeout=TIMEOUT)
    assert not verdict.conclusive and not verdict.pirated and verdict == verify(model, weak)


def test_verify_remote_accepts_a_configured_client(server, model, fingerprints):
    client = fast_client(server.url, retries=1)
    assert verify_remote(client, fingerprints, batch_size=12) == verify(model, fingerprints)
    assert client.max_batch == protocol.DEFAULT_MAX_BATCH  # adopted from /v1/health


# ---------------------------------------------------------------------- CLI entry points


def _verify(argv):
    return main(["verify", *argv])


def test_verify_cli_json_and_text(server, model, fingerprints, tmp_path, capsys, monkeypatch):
    path = tmp_path / "fp.safetensors"
    fingerprints.save(path)
    expected = verify(model, fingerprints).to_dict()

    assert _verify(["--fingerprints", str(path), "--endpoint", server.url, "--json",
                    "--progress", str(tmp_path / "p.json"), "--batch-size", "16"]) == 0
    assert json.loads(capsys.readouterr().out) == expected

    assert _verify(["--fingerprints", str(path), "--endpoint", server.url, "--threshold", "0.9"]) == 0
    assert "not pirated" in capsys.readouterr().out

    monkeypatch.delenv("IPGUARD_TEST_TOKEN", raising=False)
    assert _verify(["--fingerprints", str(path), "--endpoint", server.url, "--token-env",
                    "IPGUARD_TEST_TOKEN"]) == 2
    assert "IPGUARD_TEST_TOKEN" in capsys.readouterr().err

    assert _verify(["--fingerprints", str(tmp_path / "missing.safetensors"), "--endpoint", server.url]) == 2


def test_verify_cli_token_env_and_remote_failure(model, fingerprints, tmp_path, capsys, monkeypatch):
    path = tmp_path / "fp.safetensors"
    fingerprints.save(path)
    monkeypatch.setenv("IPGUARD_TEST_TOKEN", "tok")
    with serve(model, input_shape=SHAPE, token="tok") as running:
        assert _verify(["--fingerprints", str(path), "--endpoint", running.url,
                        "--token-env", "IPGUARD_TEST_TOKEN", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["matching_rate"] == 0.5
        assert _verify(["--fingerprints", str(path), "--endpoint", running.url]) == 1
        assert "401" in capsys.readouterr().err


def test_serve_cli_arguments_and_errors(capsys, monkeypatch):
    assert main(["serve", "--model", "no/such/model.pt", "--port", "0"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["serve", "--model", "m.pt", "--token", "a", "--token-env", "B"]) == 2
    monkeypatch.delenv("IPGUARD_TEST_TOKEN", raising=False)
    assert main(["serve", "--model", "torch.nn:Flatten", "--token-env", "IPGUARD_TEST_TOKEN"]) == 2


def test_serve_cli_serves_until_sigterm(tmp_path):
    """`ipguard serve` in a subprocess: prints its URL, answers, stops cleanly on SIGTERM."""
    script = ("import sys\n"
              "from ipguard_fast.cli import main\n"
              "sys.exit(main(['serve', *sys.argv[1:]]))\n")
    env = {**os.environ, "IPGUARD_TEST_TOKEN": "tok"}
    # torch.nn:Flatten as a factory: a "model" whose 64 logits are the pixels.
    proc = subprocess.Popen([sys.executable, "-c", script, "--model", "torch.nn:Flatten", "--port", "0",
                             "--input-shape", "1,8,8", "--token-env", "IPGUARD_TEST_TOKEN"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "serving labels on" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert "serving labels on" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split("serving labels on ")[1].split()[0]
        client = RemoteLabelModel(url, token="tok", timeout=TIMEOUT)
        assert client.health()["num_classes"] == 64
        images = torch.zeros(2, *SHAPE)
        images[0, 0, 2, 3] = 1.0
        images[1, 0, 7, 7] = 1.0
        assert client(images).tolist() == [2 * 8 + 3, 63]
        proc.terminate()
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()


# ---------------------------------------------------------------------- protocol units


def test_protocol_round_trip_and_limits():
    images = torch.rand(3, *SHAPE)
    payload = json.loads(protocol.dumps(protocol.encode_images(images)))
    assert torch.equal(protocol.decode_images(payload, input_shape=SHAPE), images)
    raw = base64.b64decode(payload["data"])
    assert raw[:4] == images.reshape(-1)[:1].numpy().astype("<f4").tobytes()  # little-endian float32
    assert len(protocol.dumps(payload)) <= protocol.encoded_request_bytes(3, 64)
    with pytest.raises(protocol.ProtocolError) as info:
        protocol.decode_images(payload, max_batch=2)
    assert info.value.status == 413
    assert protocol.decode_labels({"labels": [0, 9]}, 2, 10).tolist() == [0, 9]
    assert shape_arg("3,32,32") == (3, 32, 32) == shape_arg("3x32x32")
    for bad in ("", "a,b", "0,8,8", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            shape_arg(bad)


def test_ipguard_cli_verify_endpoint(server, model, fingerprints, tmp_path, capsys):
    """The `ipguard verify --endpoint` wiring, through the main CLI."""
    cli = pytest.importorskip("ipguard_fast.cli", reason="the ipguard CLI package is not present")
    path = tmp_path / "fp.safetensors"
    fingerprints.save(path)
    argv = ["verify", "--fingerprints", str(path), "--endpoint", server.url, "--json",
            "--progress", str(tmp_path / "p.json")]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == verify(model, fingerprints).to_dict()


def test_a_forged_progress_file_is_refused(server, model, fingerprints, tmp_path):
    """Changing saved answers to flip the verdict (0.5 -> 1.0 here) is refused, not warned about."""
    progress = tmp_path / "progress.json"
    honest = verify_remote(server.url, fingerprints, batch_size=8, progress_file=progress, timeout=TIMEOUT)
    assert honest.matching_rate == 0.5
    state = json.loads(progress.read_text())
    labels = fingerprints.labels.tolist()
    state["batches"] = {str(b): labels[8 * b: 8 * b + 8] for b in range(5)}  # the owner's labels everywhere
    progress.write_text(json.dumps(state))
    with pytest.raises(ProgressFileError, match="integrity check"):
        verify_remote(server.url, fingerprints, batch_size=8, progress_file=progress, timeout=TIMEOUT)
    state.pop("mac")  # and without any check at all
    progress.write_text(json.dumps(state))
    with pytest.raises(ProgressFileError, match="integrity check"):
        verify_remote(server.url, fingerprints, batch_size=8, progress_file=progress, timeout=TIMEOUT)
