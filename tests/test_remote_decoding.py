"""Request bodies over 1 MiB are decoded in short steps (decoding.py): the same images as
json.loads would give for every labels request, and a clear 400 for anything that is not one."""
from __future__ import annotations

import base64
import json

import pytest
import torch

from ipguard_fast.remote import protocol
from ipguard_fast.remote.decoding import MAX_STRUCTURE, SMALL_BODY, parse_labels_request
from ipguard_fast.remote.protocol import ProtocolError, decode_base64


@pytest.fixture(scope="module")
def images():
    return torch.rand(700, 1, 32, 32)  # 2.9 MB of pixels: a body past SMALL_BODY


def test_a_large_body_decodes_to_the_same_images(images):
    payload = protocol.encode_images(images)
    plain = json.dumps(payload).encode()
    assert len(plain) > SMALL_BODY
    assert torch.equal(parse_labels_request(plain), images)
    # Keys in another order, pretty-printed, an extra field, escaped slashes (as PHP writes them).
    variants = [
        json.dumps({"data": payload["data"], "dtype": "float32", "shape": payload["shape"], "id": "r1"}, indent=2),
        json.dumps(payload).replace("/", "\\/"),
        " \n" + json.dumps(payload) + "\n ",
    ]
    for text in variants:
        assert torch.equal(parse_labels_request(text.encode()), images)
    assert torch.equal(parse_labels_request(bytearray(plain)), images)  # as the server reads it


@pytest.mark.parametrize("count", [1, 20, 100, 200])  # bodies below, between and above WINDOW and SMALL_BODY
def test_a_body_joined_from_chunks_as_the_server_reads_it_decodes(count):
    from ipguard_fast.remote import buffers

    images = torch.rand(count, 1, 32, 32)
    body = json.dumps(protocol.encode_images(images)).encode()
    chunks = [body[at:at + 65536] for at in range(0, len(body), 65536)]
    assert torch.equal(parse_labels_request(buffers.joined(chunks)), images)


def test_escapes_across_window_edges(monkeypatch):
    from ipguard_fast.remote import buffers

    images = torch.rand(200, 1, 32, 32)  # just over SMALL_BODY
    text = json.dumps(protocol.encode_images(images)).replace("/", "\\/").encode()
    assert len(text) > SMALL_BODY
    monkeypatch.setattr(buffers, "let_others_run", lambda: None)  # thousands of tiny steps: no pauses
    for window in (7, 8, 4096):  # odd and even edges: some fall between a backslash and its slash
        monkeypatch.setattr(buffers, "WINDOW", window)
        assert torch.equal(parse_labels_request(text), images)


@pytest.mark.parametrize("numel", [1, 2, 3, 786_433])
def test_windowed_base64_matches_the_standard_decoder(numel):
    raw = torch.rand(numel).numpy().tobytes()
    text = base64.b64encode(raw).decode()
    assert bytes(decode_base64(text, len(raw), window=8 if numel < 1000 else 4096)) == raw
    assert bytes(decode_base64(memoryview(text.encode()), len(raw))) == raw
    with pytest.raises(ProtocolError, match="decodes to"):
        decode_base64(text, len(raw) + 1)


def test_padding_in_the_middle_is_refused():
    text = base64.b64encode(b"A").decode() + base64.b64encode(b"BCD").decode()  # "QQ==QkNE"
    with pytest.raises(ProtocolError, match="base64"):
        decode_base64(text, 4, window=4)
    with pytest.raises(ProtocolError, match="base64"):
        decode_base64(text, 4)


def _big(**fields) -> bytes:
    body = {"shape": [1, 1, 8, 8], "dtype": "float32", "data": "A" * (SMALL_BODY + 10)}
    body.update(fields)
    return json.dumps(body).encode()


@pytest.mark.parametrize("body, match", [
    (b"[" + b"0," * SMALL_BODY + b"0]", "at most"),                      # structure, not a string
    (b'{"a": {' + b'"k": 1, ' * (SMALL_BODY // 8) + b'"z": 0}}', "at most"),
    (_big(extra="B" * (SMALL_BODY + 10)), "at most"),                    # two long strings
    (_big(data="AAAA", note="C" * (SMALL_BODY + 10)), "long string is 'data'"),
    (_big(data="AAAA\\n" + "A" * (SMALL_BODY + 10)), "backslash"),        # an escape base64 never has
    (_big()[:-3], "never closed"),
    (_big()[:-1], "not valid JSON"),
    (_big(shape=[1, 1, 8, 9]), "characters"),                             # the length check, before decoding
    (_big(data="A" * (SMALL_BODY + 10) + "\\u0041"), "backslash"),
])
def test_a_large_body_that_is_not_a_labels_request_is_a_400(body, match):
    assert len(body) > SMALL_BODY
    with pytest.raises(ProtocolError, match=match) as info:
        parse_labels_request(body)
    assert info.value.status == 400


def test_structure_within_the_bound_is_accepted(images):
    payload = protocol.encode_images(images)
    padded = {"pad": "x" * (MAX_STRUCTURE - 200), **payload}
    assert torch.equal(parse_labels_request(json.dumps(padded).encode()), images)
    padded["pad"] = "x" * MAX_STRUCTURE
    with pytest.raises(ProtocolError, match="at most"):
        parse_labels_request(json.dumps(padded).encode())
