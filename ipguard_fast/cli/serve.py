"""ipguard serve: a model behind the label-only HTTP API, until SIGINT or SIGTERM.

The model file is run by a confined worker process (io/sandbox) unless --no-isolate: a served
model answers anyone who can reach the port, and its file may come from anyone. Each request's
batch goes to the worker and only labels come back; a batch the model cannot take is that
request's error (the worker goes on), while a model that loops, allocates without bound or
crashes stops the worker, and serving ends with one line and exit 1.
"""
from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading

from .common import (add_isolation_arguments, add_model_arguments, add_token_arguments, isolation_from_args,
                     named_as_options, resolve_token, shape_arg)


def port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}")
    return port


_LIMITS = (  # ServerLimits' fields as options: (field, type, help)
    ("max_request_bytes", int, "largest request body accepted"),
    ("max_batch", int, "most images per request"),
    ("max_concurrent", int, "label requests decoded and run at once; others wait"),
    ("max_per_client", int, "of those, how many one client address may hold; its others wait"),
    ("request_timeout", float, "seconds for a request's headers, then its body; slower ones get 408"),
    ("queue_timeout", float, "seconds a request waits for a turn before 503"),
    ("max_connections", int, "open connections in all; more get 503 at accept"),
    ("max_connections_per_client", int, "open connections from one address; more get 429 at accept"),
    ("max_body_bytes_in_flight", int, "bytes of request bodies read or decoded at once; a body that would "
                                      "pass it gets 503"),
)
_OPTIONS = {"host": "--host", "port": "--port", "token": "--token", "input_shape": "--input-shape",
            **{name: "--" + name.replace("_", "-") for name, _, _ in _LIMITS}}


def add_arguments(parser) -> None:
    from ..remote.config import ServerLimits

    defaults = ServerLimits()
    add_model_arguments(parser, onnx=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; use a token when exposing it)")
    parser.add_argument("--port", type=port_arg, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--input-shape", type=shape_arg,
                        help="shape of one image, e.g. 3,32,32 (recommended: validates requests "
                             "and lets /v1/health report num_classes)")
    add_token_arguments(parser, "that every request must send ('Authorization: Bearer <token>')")
    add_isolation_arguments(parser, "seconds the worker may take to load the model, then for each request's batch "
                                    "(default 60); a model that takes longer is stopped and serving ends (exit 1)")
    for name, kind, text in _LIMITS:
        default = getattr(defaults, name)
        shown = f"{default:g}" if kind is float else str(default)
        parser.add_argument(_OPTIONS[name], type=kind, default=default, help=f"{text} (default {shown})")


def run(args) -> int:
    import contextlib

    token = resolve_token(args)
    isolation = isolation_from_args(args)
    with contextlib.ExitStack() as stack:
        model, server = _start(args, token, isolation, stack)
        if token is None and not _is_loopback(server.host):
            print(f"ipguard serve: warning: listening on {server.host} without a token; anyone who can reach it "
                  "can query the model", file=sys.stderr)
        print(f"ipguard serve: serving labels on {server.url} (Ctrl-C to stop)", flush=True)
        failure = (lambda: model.failure) if isolation is not None else (lambda: None)
        try:
            _wait_for_stop(lambda: failure() is not None)
        finally:
            server.shutdown()
        if failure() is not None:   # the model's worker failed: every later answer would fail too
            raise failure()
    return 0


def _start(args, token, isolation, stack):
    """The model (in a confined worker unless ``isolation`` is None, stopped with ``stack``) and its server."""
    from ..io import IsolatedSuspect, load_suspect
    from ..remote import ServeConfig, ServerLimits, start_server

    with named_as_options(_OPTIONS):
        limits = ServerLimits(**{name: getattr(args, name) for name, _, _ in _LIMITS})
        config = ServeConfig(host=args.host, port=args.port, token=token, input_shape=args.input_shape,
                             limits=limits)
        if isolation is None:
            model = load_suspect(args.model, args.weights)
        else:
            model = stack.enter_context(IsolatedSuspect(args.model, weights=args.weights, isolation=isolation))
        return model, start_server(model, config)


def _wait_for_stop(failed) -> None:
    """Until SIGINT, SIGTERM or ``failed()``."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5) and not failed():
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
