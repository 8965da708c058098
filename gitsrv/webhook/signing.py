"""HMAC-SHA256 signatures of webhook bodies (`X-Gitsrv-Signature-256`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def sign(secret: str, body: bytes) -> str:
    """Return the header value `sha256=<hex digest>` for `body`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, body: bytes, header: str) -> bool:
    """Check a signature header in constant time, as a receiver should."""
    return hmac.compare_digest(sign(secret, body), header.strip())


def generate_secret() -> str:
    return secrets.token_urlsafe(32)
