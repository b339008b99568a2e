"""ipguard serve: a model behind the label-only HTTP API, until SIGINT or SIGTERM."""
from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading

from .common import add_model_arguments, add_token_arguments, resolve_token, shape_arg


def port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}")
    return port


def add_arguments(parser) -> None:
    from ..remote.protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES
    from ..remote.server import (DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_PER_CLIENT, DEFAULT_QUEUE_TIMEOUT,
                                 DEFAULT_REQUEST_TIMEOUT)

    add_model_arguments(parser, onnx=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; use a token when exposing it)")
    parser.add_argument("--port", type=port_arg, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--input-shape", type=shape_arg,
                        help="shape of one image, e.g. 3,32,32 (recommended: validates requests "
                             "and lets /v1/health report num_classes)")
    add_token_arguments(parser, "that every request must send ('Authorization: Bearer <token>')")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help=f"largest request body accepted (default {DEFAULT_MAX_REQUEST_BYTES})")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"most images per request (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--max-concurrent", type=int, default=DEFAULT_MAX_CONCURRENT,
                        help=f"label requests decoded and run at once; others wait (default {DEFAULT_MAX_CONCURRENT})")
    parser.add_argument("--max-per-client", type=int, default=DEFAULT_MAX_PER_CLIENT,
                        help=f"requests one client address may have in flight; more get 429 "
                             f"(default {DEFAULT_MAX_PER_CLIENT})")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT,
                        help=f"seconds for a request's headers, then its body; slower ones get 408 "
                             f"(default {DEFAULT_REQUEST_TIMEOUT:g})")
    parser.add_argument("--queue-timeout", type=float, default=DEFAULT_QUEUE_TIMEOUT,
                        help=f"seconds a request waits for a turn before 503 (default {DEFAULT_QUEUE_TIMEOUT:g})")


def run(args) -> int:
    from ..io import load_suspect
    from ..remote import serve

    token = resolve_token(args)
    model = load_suspect(args.model, args.weights)
    server = serve(model, host=args.host, port=args.port, token=token, max_request_bytes=args.max_request_bytes,
                   max_batch=args.max_batch, input_shape=args.input_shape, max_concurrent=args.max_concurrent,
                   max_per_client=args.max_per_client, request_timeout=args.request_timeout,
                   queue_timeout=args.queue_timeout)
    if token is None and not _is_loopback(server.host):
        print(f"ipguard serve: warning: listening on {server.host} without a token; anyone who can reach it "
              "can query the model", file=sys.stderr)
    print(f"ipguard serve: serving labels on {server.url} (Ctrl-C to stop)", flush=True)

    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
