"""API token format: `gsv_`, a random body and a checksum, stored as a hash.

The prefix lets secret scanners find leaked tokens. The checksum (CRC32 of
the prefix and body, in base62) lets a mistyped or truncated token be
rejected before any database lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

PREFIX = "gsv_"
# OAuth2 client secrets use the same format with their own prefix.
CLIENT_SECRET_PREFIX = "gsc_"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_BYTES = 32
# 32 random bytes are below 62**43, so the body is always 43 characters.
BODY_LENGTH = 43
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH


def encode_base62(value: int, width: int) -> str:
    """Encode a non-negative integer in base62, left-padded with zeros to `width`."""
    digits = []
    while value:
        value, remainder = divmod(value, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits)).rjust(width, BASE62[0])


def _checksum(text: str) -> str:
    return encode_base62(zlib.crc32(text.encode("ascii")), CHECKSUM_LENGTH)


def generate_token(prefix: str = PREFIX) -> str:
    """Generate a new random API token (or client secret, with its prefix)."""
    body = encode_base62(int.from_bytes(secrets.token_bytes(BODY_BYTES), "big"), BODY_LENGTH)
    return f"{prefix}{body}{_checksum(prefix + body)}"


def is_well_formed(token: str, prefix: str = PREFIX) -> bool:
    """Check that `token` has the gitsrv format and a matching checksum."""
    if len(token) != len(prefix) + BODY_LENGTH + CHECKSUM_LENGTH or not token.startswith(prefix):
        return False
    if any(char not in BASE62 for char in token[len(prefix) :]):
        return False
    return secrets.compare_digest(_checksum(token[:-CHECKSUM_LENGTH]), token[-CHECKSUM_LENGTH:])


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
