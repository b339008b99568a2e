"""Soak test: 200 honest verifications from one address while 20 abusive connections hold on.

Three processes besides this one, all on 127.0.0.1: the server (as `ipguard serve` would
run, at normal priority), a health prober, and the load (tests/remote_load.py, at the lowest
priority, as clients on other machines would be):

- 200 honest clients at once (threads, each its own `verify_remote` with retries and a
  run deadline), more than the address's connection limit (128 here), so part of them are
  told 429 with Retry-After and must come back;
- 20 abusive connections from the same address: headers trickling a byte a second, bodies
  that declared 50 MB and stalled after 1 MB, connections opened and left idle, and, as
  the honest clients start, bodies of 60 MB near the size cap (labels requests with a
  wrong-length data string, one with every slash escaped, and a 60 MB JSON list). The
  server's budget for bodies in flight is raised to 512 MiB so that all of them are read
  and decoded (tests/test_remote_limits.py checks the refusal beyond the budget).

Every honest verification must give the verdict the local model gives, and health must
answer within 100 ms at the 99th percentile while the abuse lasts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import half_matching_fingerprints
from torch import nn

from ipguard_fast.verdicts import verify

HONEST = 200
PER_ADDRESS = 128
ROOT = Path(__file__).resolve().parents[1]

SERVER = """if True:
    import json, sys, torch
    from torch import nn
    from ipguard_fast.remote import serve
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    model.load_state_dict(torch.load(sys.argv[1]))
    with serve(model, input_shape=(1, 8, 8), max_connections_per_client=int(sys.argv[2]),
               max_body_bytes_in_flight=512 << 20) as running:
        print(running.port, flush=True)
        sys.stdin.readline()
        print(json.dumps(running.stats()), flush=True)
"""

PROBER = """if True:
    import http.client, json, select, sys, time
    conn, latencies = None, []
    while not select.select([sys.stdin], [], [], 0.02)[0]:
        start = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10,
                                                  source_address=("127.0.0.2", 0))
            conn.request("GET", "/v1/health")
            ok = conn.getresponse().read().startswith(b'{"status":"ok"')
        except OSError:
            conn, ok = None, False
        latencies.append(time.perf_counter() - start if ok else 99.0)
    print(json.dumps(latencies), flush=True)
"""


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)


@pytest.mark.slow
def test_two_hundred_honest_verifications_hold_under_abuse(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    fingerprints = half_matching_fingerprints(model, 40)
    fingerprints.save(tmp_path / "fp.safetensors")
    expected = verify(model, fingerprints).to_dict()

    start = time.monotonic()
    processes = [_start("-c", SERVER, str(tmp_path / "model.pt"), str(PER_ADDRESS))]
    try:
        port = processes[0].stdout.readline().strip()
        load = _start(str(ROOT / "tests" / "remote_load.py"), port, str(tmp_path / "fp.safetensors"), str(HONEST))
        processes.append(load)
        assert load.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # every abusive connection is open and at work
        prober = _start("-c", PROBER, port)
        processes.append(prober)
        load.stdin.write("go\n")
        load.stdin.flush()
        result = json.loads(load.stdout.readline())
        latencies = json.loads(prober.communicate("stop\n", timeout=30)[0])
        stats = json.loads(processes[0].communicate("stop\n", timeout=30)[0])
    finally:
        for process in processes:
            process.kill()
    elapsed = time.monotonic() - start

    assert len(result["verdicts"]) == HONEST and all(v == expected for v in result["verdicts"])
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    assert len(latencies) >= 20 and p99 < 0.1, f"health p99 {p99 * 1000:.0f} ms; slowest {latencies[-3:]}"
    assert not any(answer.startswith("HTTP/1.1 200") for answer in result["abuse"]), result["abuse"]
    assert stats["server_errors"] == 0 and stats["labels_ok"] == 2 * HONEST
    assert stats["connections_refused"] > 0  # the address's limit was reached, and retried past
    assert elapsed < 90, f"the soak took {elapsed:.0f} s"
