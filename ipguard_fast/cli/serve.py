"""ipguard serve: a model behind the label-only HTTP API, until SIGINT or SIGTERM."""
from __future__ import annotations

import ipaddress
import signal
import sys
import threading

from .common import add_model_arguments, add_token_arguments, resolve_token, shape_arg


def add_arguments(parser) -> None:
    from ..remote.protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_BYTES
    from ..remote.server import DEFAULT_MAX_CONCURRENT

    add_model_arguments(parser, onnx=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; use a token when exposing it)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--input-shape", type=shape_arg,
                        help="shape of one image, e.g. 3,32,32 (recommended: validates requests "
                             "and lets /v1/health report num_classes)")
    add_token_arguments(parser, "that every request must send ('Authorization: Bearer <token>')")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help=f"largest request body accepted (default {DEFAULT_MAX_REQUEST_BYTES})")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help=f"most images per request (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--max-concurrent", type=int, default=DEFAULT_MAX_CONCURRENT,
                        help=f"label requests processed at once; more get 503 (default {DEFAULT_MAX_CONCURRENT})")


def run(args) -> int:
    from ..io import load_suspect
    from ..remote import serve

    token = resolve_token(args)
    model = load_suspect(args.model, args.weights)
    server = serve(model, host=args.host, port=args.port, token=token, max_request_bytes=args.max_request_bytes,
                   max_batch=args.max_batch, input_shape=args.input_shape, max_concurrent=args.max_concurrent)
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
