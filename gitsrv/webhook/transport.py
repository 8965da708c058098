"""POST one webhook request to already-checked addresses, without redirects or proxies."""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from gitsrv.webhook.addresses import ResolvedTarget

# Enough of the response to store an excerpt and read a JSON `url` field.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str


def _connect(target: ResolvedTarget, timeout: float) -> socket.socket:
    last_error: OSError | None = None
    for address in target.addresses:
        try:
            return socket.create_connection((address, target.port), timeout=timeout)
        except OSError as error:
            last_error = error
    raise last_error or OSError(f"no address for {target.host}")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: ResolvedTarget, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.target = target

    def connect(self) -> None:
        self.sock = _connect(self.target, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: ResolvedTarget, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self.target = target

    def connect(self) -> None:
        sock = _connect(self.target, self.timeout)
        # The certificate is checked against the host name, not the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.target.host)


def post(target: ResolvedTarget, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
    """Send the request and read up to MAX_RESPONSE_BYTES of the response.

    Raises OSError (including timeouts) and http.client.HTTPException on
    transport failures; any HTTP status is returned, redirects included.
    """
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read(MAX_RESPONSE_BYTES)
        return Reply(response.status, data, response.getheader("Content-Type") or "")
    finally:
        connection.close()
