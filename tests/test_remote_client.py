"""The HTTP client against servers that compress, push back, echo secrets, or sit behind odd paths:
Retry-After and jittered backoff, gzip/deflate, credentials never shown, special files refused."""
from __future__ import annotations

import gzip
import os
import threading
import time

import pytest
import torch
from conftest import half_matching_fingerprints
from remote_helpers import FakeApi, make_model, no_proxies  # noqa: F401 - a fixture

from ipguard_fast._validate import ArgumentError
from ipguard_fast.cli import main
from ipguard_fast.remote import (
    RemoteError,
    RemoteLabelModel,
    RetryPolicy,
    ServeConfig,
    verify_remote,
)
from ipguard_fast.remote.answers import retry_after

SHAPE = (1, 8, 8)
SECRET = "s3cr3t-passw0rd"
TOKEN = "t0ken-never-shown"


pytestmark = pytest.mark.usefixtures("no_proxies")




# ---------------------------------------------------------------------- encodings


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_a_server_that_compresses_anyway_is_understood(encoding):
    model = make_model()
    images = torch.rand(6, *SHAPE)
    with FakeApi(model, health=True, encoding=encoding) as api, RemoteLabelModel(api.url, timeout=10) as client:
        assert client(images).tolist() == model(images).argmax(1).tolist()
        assert client.health()["status"] == "ok"
    assert all(seen.get("Accept-Encoding") == "identity" for seen in api.seen)


def test_a_compression_bomb_and_an_unknown_encoding_are_refused():
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in about 64 KiB
    with FakeApi(make_model(), script=[(200, {"Content-Encoding": "gzip"}, bomb)]) as api:
        api.compress = lambda raw: (raw, {})
        with RemoteLabelModel(api.url, timeout=10) as client:
            with pytest.raises(RemoteError, match="larger than"):
                client(torch.rand(2, *SHAPE))
    with FakeApi(make_model(), encoding="br") as api, RemoteLabelModel(api.url, timeout=10) as client:
        with pytest.raises(RemoteError, match="Content-Encoding 'br'"):
            client(torch.rand(2, *SHAPE))


def test_a_retry_after_date_past_any_calendar_is_no_advice():
    # A year no datetime holds made parsedate_to_datetime raise OverflowError, which escaped the
    # client as a raw exception (not RemoteError) and lost the progress file's resume advice.
    far = "Mon, 01 Jan 99999999999 00:00:00 GMT"
    assert retry_after({"Retry-After": far}) is None
    busy = (503, {"Retry-After": far}, b'{"error":"unavailable","message":"busy"}')
    with FakeApi(make_model(), script=[busy] * 3) as api:
        with RemoteLabelModel(api.url, timeout=10, retries=1, backoff=0.01) as client:
            client._sleep = lambda seconds: None
            with pytest.raises(RemoteError, match="HTTP 503") as info:
                client(torch.rand(2, *SHAPE))
    assert info.value.status == 503 and api.label_requests == 2


# ---------------------------------------------------------------------- retries


def test_retry_after_is_honoured_with_jitter_above_it():
    busy = [(429, {"Retry-After": "2"}, "{}"), (503, {"Retry-After": "1"}, "{}")]
    with FakeApi(make_model(), script=busy) as api, RemoteLabelModel(api.url, timeout=10, backoff=0.1) as client:
        delays, draws = [], iter([0.5, 0.99])
        client._sleep, client._random = delays.append, lambda: next(draws)
        assert client(torch.rand(2, *SHAPE)).shape == (2,)
    assert delays == [pytest.approx(2 * 1.25), pytest.approx(1 * 1.495)]  # never before Retry-After


def test_jittered_backoff_spreads_and_grows():
    policy = RetryPolicy(retries=5, backoff=0.5, max_backoff=30.0)
    assert [policy.delay(k, None, 0.0) for k in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.delay(0, None, 0.999) == pytest.approx(0.74975)
    assert policy.delay(0, 3.0, 0.0) == 3.0 and policy.delay(3, 1.0, 0.0) == 4.0  # Retry-After, then growth
    assert policy.delay(20, None, 0.5) == 30.0


def test_busy_answers_are_retried_until_the_deadline_not_the_retry_count():
    model = make_model()
    images = torch.rand(2, *SHAPE)
    busy = [(429, {"Retry-After": "0"}, "{}")] * 8
    settings = dict(timeout=10, retries=2, backoff=0.0)
    with FakeApi(model, script=list(busy)) as api, RemoteLabelModel(api.url, **settings) as client:
        labels = client.labels(images, deadline=time.monotonic() + 30)
        assert labels.tolist() == model(images).argmax(1).tolist() and client.requests_sent == 9
    with FakeApi(model, script=list(busy)) as api, RemoteLabelModel(api.url, **settings) as client:
        with pytest.raises(RemoteError, match="429"):
            client(images)  # no deadline: a busy answer counts as a failure
        assert client.requests_sent == 3
    failing = [(503, {}, "{}")] * 8  # a 503 without Retry-After is a failure, deadline or not
    with FakeApi(model, script=failing) as api, RemoteLabelModel(api.url, **settings) as client:
        with pytest.raises(RemoteError, match="503"):
            client.labels(images, deadline=time.monotonic() + 30)
        assert client.requests_sent == 3


def test_the_deadline_ends_busy_retries_and_names_the_last_answer():
    busy = [(429, {"Retry-After": "1"}, "{}")] * 50
    with FakeApi(make_model(), script=busy) as api, RemoteLabelModel(api.url, timeout=10, backoff=0.0) as client:
        start = time.monotonic()
        with pytest.raises(RemoteError, match=r"deadline passed .*the last: HTTP 429"):
            client.labels(torch.rand(2, *SHAPE), deadline=time.monotonic() + 2.5)
        assert time.monotonic() - start < 4


def test_a_wait_past_the_deadline_ends_the_call_at_the_deadline_naming_the_answer():
    # The server asks for 5 s, 1 s is left: no doomed attempt with a sliver of time (its
    # timeout would be named instead of the 429); the wait is cut at the deadline.
    busy = [(429, {"Retry-After": "5"}, "{}")] * 5
    with FakeApi(make_model(), script=busy) as api, RemoteLabelModel(api.url, timeout=10, backoff=0.0) as client:
        delays = []
        client._sleep = delays.append
        with pytest.raises(RemoteError, match=r"deadline passed .*after 1 attempt; the last: HTTP 429"):
            client.labels(torch.rand(2, *SHAPE), deadline=time.monotonic() + 1.0)
        assert client.requests_sent == 1 and len(delays) == 1 and 0.0 <= delays[0] <= 1.0


# ---------------------------------------------------------------------- credentials


def test_credentials_never_appear_in_messages_or_repr(tmp_path):
    with FakeApi(make_model(), echo=True) as api:
        url = api.url.replace("http://", f"http://user:{SECRET}@")
        client = RemoteLabelModel(url, token=TOKEN, timeout=10)
        assert SECRET not in repr(client) and TOKEN not in repr(client) and SECRET not in client.url
        with pytest.raises(RemoteError) as info:  # the server echoes the Authorization header back
            client(torch.rand(2, *SHAPE))
        client.close()
        assert info.value.status == 403 and "***" in str(info.value)
        assert SECRET not in str(info.value) and TOKEN not in str(info.value) and SECRET not in info.value.url
        sent = api.seen[-1]["Authorization"]
    assert sent == f"Bearer {TOKEN}"  # the token itself was sent (the API's credential wins over basic auth)
    with FakeApi(make_model(), echo=True) as api:
        client = RemoteLabelModel(api.url.replace("http://", f"http://user:{SECRET}@"), timeout=10)
        with pytest.raises(RemoteError) as info:  # no token: user:password as basic auth, echoed back
            client(torch.rand(2, *SHAPE))
        client.close()
        assert api.seen[-1]["Authorization"].startswith("Basic ") and "Basic ***" in str(info.value)

    dead = RemoteLabelModel(f"http://user:{SECRET}@127.0.0.1:9", token=TOKEN, timeout=2, retries=0)
    with pytest.raises(RemoteError) as info:
        dead.health()
    dead.close()
    assert SECRET not in str(info.value) and "cannot reach http://127.0.0.1:9/v1/health" in str(info.value)
    with pytest.raises(ArgumentError) as bad:
        RemoteLabelModel(f"ftp://user:{SECRET}@host")
    assert SECRET not in str(bad.value)


def test_a_redirect_that_echoes_a_credential_never_shows_it():
    # The server's Location header went into the message unredacted: a 302 to
    # "...?h=Bearer <token>" printed the token (and the basic-auth string) in the error.
    for token, url_secret in ((TOKEN, False), (None, True)):
        with FakeApi(make_model()) as api:
            url = api.url.replace("http://", f"http://user:{SECRET}@") if url_secret else api.url
            with RemoteLabelModel(url, token=token, timeout=10) as client:
                sent = f"Bearer {TOKEN}" if token else client._endpoint.authorization
                api.script = [(302, {"Location": f"http://elsewhere.example/login?h={sent.replace(' ', '+')}"}, b"")]
                with pytest.raises(RemoteError) as info:
                    client(torch.rand(2, *SHAPE))
        text = str(info.value)
        assert info.value.status == 302 and "not followed" in text and "***" in text
        assert TOKEN not in text and SECRET not in text and sent.split()[1] not in text


def test_the_cli_never_prints_the_endpoints_password(tmp_path, capsys):
    fps = half_matching_fingerprints(make_model(), 20)
    path = fps.save(tmp_path / "fp.safetensors")
    code = main(["verify", "--fingerprints", str(path), "--endpoint", f"http://me:{SECRET}@127.0.0.1:9",
                 "--retries", "0", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 1 and SECRET not in err and "127.0.0.1:9" in err


@pytest.mark.parametrize("token", ["t\u00f6ken-secret", "sec\nret-token", "secret\ttoken"])
def test_a_token_no_http_header_can_carry_is_bad_input_naming_the_option(token, tmp_path, capsys, monkeypatch):
    # Before: a non-ASCII token failed inside httpx with a UnicodeEncodeError naming no option,
    # and a multi-line one was sent, refused by h11, and quoted back (exit 1, token shown).
    with pytest.raises(ArgumentError, match="^token") as info:
        RemoteLabelModel("http://127.0.0.1:9", token=token)
    assert "secret" not in str(info.value)
    with pytest.raises(ArgumentError, match="^token"):
        ServeConfig(token=token)
    path = half_matching_fingerprints(make_model(), 20).save(tmp_path / "fp.safetensors")
    monkeypatch.setenv("IPGUARD_TEST_TOKEN", token)
    code = main(["verify", "--fingerprints", str(path), "--endpoint", "http://127.0.0.1:9", "--token-env",
                 "IPGUARD_TEST_TOKEN", "--retries", "0", "--timeout", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--token-env" in err and "secret" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("endpoint", ["http://256.1.1.1", "http://1.2.3", "http://host:99999"])
def test_an_impossible_endpoint_is_bad_input_naming_the_option(endpoint, tmp_path, capsys):
    path = half_matching_fingerprints(make_model(), 20).save(tmp_path / "fp.safetensors")
    assert main(["verify", "--fingerprints", str(path), "--endpoint", endpoint]) == 2
    assert "--endpoint" in capsys.readouterr().err


def test_an_impossible_host_to_serve_on_is_bad_input(tmp_path, capsys):
    model = torch.jit.script(make_model())
    model.save(str(tmp_path / "m.pt"))
    assert main(["serve", "--model", str(tmp_path / "m.pt"), "--host", "999.1.1.1", "--port", "0"]) == 2
    assert "--host" in capsys.readouterr().err


# ---------------------------------------------------------------------- special files


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_as_progress_file_is_refused_without_blocking(kind, tmp_path, capsys):
    if kind == "fifo":
        progress = tmp_path / "progress"
        os.mkfifo(progress)
    else:
        progress = "/dev/zero"
    path = half_matching_fingerprints(make_model(), 20).save(tmp_path / "fp.safetensors")
    result = {}
    args = ["verify", "--fingerprints", str(path), "--endpoint", "http://127.0.0.1:9", "--progress", str(progress),
            "--progress-key", str(tmp_path / "key")]
    worker = threading.Thread(target=lambda: result.update(code=main(args)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "the progress file blocked the run"
    assert result["code"] == 2 and "not a regular file" in capsys.readouterr().err


def test_verify_remote_refuses_a_fifo_before_any_request(tmp_path):
    fifo = tmp_path / "progress"
    os.mkfifo(fifo)
    fps = half_matching_fingerprints(make_model(), 20)
    with FakeApi(make_model()) as api:
        with pytest.raises(ValueError, match="not a regular file"):
            verify_remote(api.url, fps, progress_file=fifo, key_file=tmp_path / "key")
        assert api.seen == []


@pytest.mark.parametrize("progress", ["", "   ", "missing-folder/run.json", "/proc/run.json"])
def test_a_progress_path_that_cannot_be_written_is_refused_before_any_query(progress, tmp_path, capsys,
                                                                            monkeypatch):
    # A progress file in a folder that does not exist failed only after the first batch was
    # answered (an OSError naming a temp file, not --progress); an empty one was ignored. A
    # folder that takes no file (/proc) passed a permission check as root and failed so too.
    if progress.startswith("/proc") and not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    monkeypatch.chdir(tmp_path)
    fps = half_matching_fingerprints(make_model(), 20)
    path = fps.save(tmp_path / "fp.safetensors")
    with FakeApi(make_model()) as api:
        with pytest.raises(ArgumentError, match="^progress_file: "):
            verify_remote(api.url, fps, progress_file=progress, key_file=tmp_path / "key")
        code = main(["verify", "--fingerprints", str(path), "--endpoint", api.url, "--progress", progress,
                     "--progress-key", str(tmp_path / "key")])
        assert api.label_requests == 0
    assert code == 2 and "--progress: " in capsys.readouterr().err


def test_a_file_that_is_no_progress_file_is_never_called_ours_to_delete(tmp_path):
    # The fingerprint file given as --progress by mistake was refused with "delete it to start over".
    fps = half_matching_fingerprints(make_model(), 20)
    path = fps.save(tmp_path / "fp.safetensors")
    with FakeApi(make_model()) as api:
        with pytest.raises(ValueError, match="if it is this run's progress file, delete it") as info:
            verify_remote(api.url, fps, progress_file=path, key_file=tmp_path / "key")
        assert api.label_requests == 0
    assert "else give another path" in str(info.value)
