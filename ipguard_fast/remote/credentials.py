"""An endpoint's secrets -- ``user:password@`` in its URL, the bearer token -- sent as the
``Authorization`` header and cut from everything the client shows.

The bearer token is the API's own credential; ``user:password@`` becomes HTTP basic auth
(for a reverse proxy in front of the API) when no token is given. One header carries one
of them, so the URL itself is requested without its user part.

Error messages are printed, logged and pasted into bug reports; a ``repr`` ends up in
tracebacks. So the client shows the URL without its user part, and every text that did
not come from the client itself (an httpx error, an error message from the server,
which may echo what it was sent) passes through :meth:`Endpoint.redact` first.
"""
from __future__ import annotations

import base64
import ipaddress
import re
from urllib.parse import unquote, urlsplit, urlunsplit

from .._validate import ArgumentError

__all__ = ["Endpoint"]

_SHOWN = "***"


class Endpoint:
    """A server's base URL without its user part (``url``) and the ``authorization`` header to send."""

    def __init__(self, url, token: str | None) -> None:
        parts = urlsplit(url) if isinstance(url, str) else None
        secrets = [token] if token else []
        self.authorization = f"Bearer {token}" if token else None
        if parts is not None and parts.netloc and "@" in parts.netloc:
            userinfo = parts.netloc.rpartition("@")[0]
            user, _, password = (unquote(p) for p in userinfo.partition(":"))
            basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            secrets += [userinfo, unquote(userinfo), password, parts.password or "", basic]
            self.authorization = self.authorization or f"Basic {basic}"
        # Longest first, so that a secret holding another is cut whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        shown = self.redact(url) if isinstance(url, str) else repr(url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ArgumentError("url", f"must be an http:// or https:// URL, got {shown!r}")
        if parts.query or parts.fragment:
            raise ArgumentError("url", f"must be the server's base URL without query or fragment, got {shown!r}")
        _check_host(parts, shown)
        netloc = parts.netloc.rpartition("@")[2]
        self.url = urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")

    def redact(self, text: str) -> str:
        """``text`` with every secret of this endpoint replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, _SHOWN)
        return text


def _check_host(parts, shown: str) -> None:
    """The URL's host and port: a dotted quad must be an IPv4 address, a port in range."""
    try:
        host, _ = parts.hostname, parts.port
    except ValueError as exc:  # a port out of range or not a number
        raise ArgumentError("url", f"{exc} in {shown!r}") from None
    if not host:
        raise ArgumentError("url", f"has no host: {shown!r}")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ArgumentError("url", f"{host!r} is not a valid IPv4 address (in {shown!r})") from None
