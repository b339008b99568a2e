"""The soak test's load (test_remote_soak.py): honest verifications and abusive connections, from 127.0.0.1.

Run as a process of its own at the lowest priority (SCHED_IDLE where the system has it, else
nice 19), as load from other machines would be: on a small CI machine, 400 client threads
in the server's process, or at its priority, would measure the machine's scheduler, not
the server. nice 10 is not enough: the scheduler weighs each thread, and 200 threads at
nice 10 outweigh the server's event loop by 20 to 1 (measured: its thread waited 0.5 s in
the run queue during one soak, against 15-45 ms at SCHED_IDLE).

    python tests/remote_load.py PORT FINGERPRINTS HONEST

prints "ready" once the abusive connections are at work, waits for a line on stdin, runs
HONEST verifications at once, and prints one JSON line: the verdicts and what each abusive
connection was answered.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

ABUSERS = ["slow-headers"] * 5 + ["unfinished"] * 5 + ["idle"] * 6 + ["giant", "giant", "giant-escaped", "giant-list"]
_SIZE = 60_000_000  # near the default max_request_bytes (64 MiB)


def abuse(port: int, kind: str, stop: threading.Event, go: threading.Event, body: bytes) -> str:
    """One abusive connection; returns the status line the server answered with ('' if none).
    The giant bodies are sent when the honest clients start (``go``), the rest at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            if kind == "slow-headers":  # a byte a second, never finishing the headers
                for byte in b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100:
                    sock.sendall(bytes([byte]))
                    if stop.wait(1.0):
                        break
            elif kind == "unfinished":  # declares 50 MB, sends 1 MB, stalls
                sock.sendall(b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
                sock.sendall(b"{" * (1 << 20))
                stop.wait(60)
            elif kind.startswith("giant"):  # a whole body near the size cap
                go.wait(60)
                sock.sendall(b"POST /v1/labels HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            else:  # opened and left idle
                stop.wait(60)
            sock.settimeout(0.5 if stop.is_set() else 30)
            return sock.recv(64).split(b"\r\n")[0].decode("latin-1")
        except OSError:
            return ""


def giant_bodies() -> dict[str, bytes]:
    """60 MB bodies: a labels request whose data string has the wrong length (plain, and with
    every slash escaped), and a JSON list."""
    data = b'{"shape":[1,1,8,8],"dtype":"float32","data":"' + b"A" * (_SIZE - 60) + b'"}'
    escaped = b'{"shape":[1,1,8,8],"dtype":"float32","data":"' + b"\\/" * (_SIZE // 2 - 30) + b'"}'
    return {"giant": data, "giant-escaped": escaped, "giant-list": b"[" + b"0," * (_SIZE // 2 - 1) + b"0]"}


def _lowest_priority() -> None:
    """This thread, and every thread it starts, at the lowest priority the system offers."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        os.nice(19 - os.nice(0))


def main(port: int, fingerprints_path: str, honest: int) -> None:
    _lowest_priority()
    from ipguard_fast.fingerprints import FingerprintSet
    from ipguard_fast.remote import verify_remote

    fingerprints = FingerprintSet.load(fingerprints_path)
    bodies, stop, go = giant_bodies(), threading.Event(), threading.Event()
    with ThreadPoolExecutor(len(ABUSERS)) as abuse_pool:
        answers = [abuse_pool.submit(abuse, port, kind, stop, go, bodies.get(kind, b"")) for kind in ABUSERS]
        print("ready", flush=True)
        sys.stdin.readline()
        barrier = threading.Barrier(honest, action=go.set)

        def one(_):
            barrier.wait(60)
            verdict = verify_remote(f"http://127.0.0.1:{port}", fingerprints, batch_size=20, timeout=20,
                                    retries=5, backoff=0.2, deadline=50)
            return verdict.to_dict()

        with ThreadPoolExecutor(honest) as pool:
            verdicts = list(pool.map(one, range(honest)))
        stop.set()
        print(json.dumps({"verdicts": verdicts, "abuse": [a.result(timeout=60) for a in answers]}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
