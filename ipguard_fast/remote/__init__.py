"""Label-only HTTP API: serve a model's labels, and verify a suspect that is only reachable over HTTP.

IPGuard needs nothing but the suspect's predicted labels on the fingerprints, so a suspect
behind an API can be checked. ``serve`` (server side) exposes a model as

* ``POST /v1/labels``: ``{"shape": [B, ...], "dtype": "float32", "data": "<base64>"}`` -> ``{"labels": [...]}``
* ``GET /v1/health``: ``{"status": "ok", "num_classes": C, "input_shape": [...], ...}``

and ``RemoteLabelModel`` / ``verify_remote`` (client side) query it, with retries and a
resumable progress file. Their settings are checked dataclasses (config.py): ``ServeConfig``
and ``ServerLimits`` for ``start_server``, ``RemoteVerifyConfig`` for
``run_remote_verification``. See docs/http_api.md and :mod:`ipguard_fast.remote.protocol`.
Functions and classes only: the command line is in ipguard_fast.cli (serve, verify --endpoint).
"""

from .client import RemoteError, RemoteLabelModel
from .config import RemoteVerifyConfig, RetryPolicy, ServeConfig, ServerLimits
from .progress import ProgressFileError, fingerprints_digest
from .protocol import ProtocolError
from .server import RunningServer, serve, start_server
from .verification import run_remote_verification, verify_remote

__all__ = [
    "ProgressFileError",
    "ProtocolError",
    "RemoteError",
    "RemoteLabelModel",
    "RemoteVerifyConfig",
    "RetryPolicy",
    "RunningServer",
    "ServeConfig",
    "ServerLimits",
    "fingerprints_digest",
    "run_remote_verification",
    "serve",
    "start_server",
    "verify_remote",
]
