"""Every thread the HTTP client starts has an owner: closing the client (or collecting it) ends it."""
from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest
import torch
from remote_helpers import no_proxies  # noqa: F401 - a fixture
from torch import nn

from ipguard_fast.remote import RemoteLabelModel, serve, verify_remote

SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("no_proxies")


@pytest.fixture(scope="module")
def running():
    torch.manual_seed(0)
    with serve(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), input_shape=SHAPE) as server:
        server.url  # noqa: B018 - started
        yield server


def _new_threads(before: set) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_close_stops_and_joins_the_clients_thread(running):
    before = set(threading.enumerate())
    client = RemoteLabelModel(running.url)
    assert client._transport.thread is None  # nothing runs before the first request
    client.health()
    thread = client._transport.thread
    assert thread is not None and thread.is_alive() and _new_threads(before) == [thread]
    client.close()
    assert not thread.is_alive() and _new_threads(before) == []
    client.health()  # a later call starts a new one...
    with client:
        pass  # ...that `with` closes
    assert _new_threads(before) == []


def test_two_clients_own_separate_threads(running):
    before = set(threading.enumerate())
    with RemoteLabelModel(running.url) as first, RemoteLabelModel(running.url) as second:
        first.health()
        second.health()
        assert first._transport.thread is not second._transport.thread
        assert len(_new_threads(before)) == 2
        first.close()
        assert second.health()["status"] == "ok"
    assert _new_threads(before) == []


def test_verify_remote_leaves_no_thread(running):
    from conftest import half_matching_fingerprints

    torch.manual_seed(0)
    fps = half_matching_fingerprints(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), 16)
    verify_remote(running.url, fps, batch_size=8)  # warm the server's own worker threads
    before = set(threading.enumerate())
    verify_remote(running.url, fps, batch_size=8)
    assert _new_threads(before) == []


def _ends(thread: threading.Thread, seconds: float = 5.0) -> bool:
    thread.join(seconds)
    return not thread.is_alive()


def test_a_client_collected_without_close_stops_its_thread(running):
    client = RemoteLabelModel(running.url)
    client.health()
    thread = client._transport.thread
    del client
    gc.collect()
    assert _ends(thread)


def test_collection_on_the_loops_own_thread_does_not_deadlock(running):
    """The finaliser may run on the loop's thread (a collection triggered there): it must only
    schedule the stop, never wait for the thread it runs on."""
    client = RemoteLabelModel(running.url)
    client.health()
    transport = client._transport
    thread, loop = transport.thread, transport._session.loop
    holder = [client]
    del client, transport

    async def drop_last_reference() -> bool:
        holder.clear()
        gc.collect()  # the finaliser runs here, on the loop's thread
        return True

    assert asyncio.run_coroutine_threadsafe(drop_last_reference(), loop).result(5)
    assert _ends(thread)


def test_closing_while_another_thread_waits_ends_both_promptly(running):
    """close() from one thread while another waits on a silent server: the waiter gets a
    RemoteError at once (not after its timeout) and the thread ends."""
    import socket

    from ipguard_fast.remote import RemoteError

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    client = RemoteLabelModel(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=20.0, retries=0)
    errors = []
    waiter = threading.Thread(target=lambda: errors.append(pytest.raises(RemoteError, client.health)))
    waiter.start()
    time.sleep(0.3)
    thread = client._transport.thread
    start = time.monotonic()
    client.close()
    waiter.join(5)
    silent.close()
    assert not waiter.is_alive() and time.monotonic() - start < 5 and len(errors) == 1
    assert _ends(thread, 0)
